//! A pointwise activation as a layer (ReLU, LeakyReLU, SiLU, GELU); it keeps its input.

use crate::layer::{no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use medvae_runtime::ops::activation::{activation_backward, activation_forward, Activation};
use medvae_runtime::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct Act {
    pub kind: Activation,
    saved_x: Option<Tensor>,
}

impl Act {
    pub fn new(kind: Activation) -> Act {
        Act {
            kind,
            saved_x: None,
        }
    }
}

impl Parameters for Act {
    fn visit_params(&mut self, _prefix: &str, _f: &mut ParamVisitor) {}
}

impl Layer for Act {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = activation_forward(self.kind, &x)?;
        self.saved_x = if ctx.grad { Some(x) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let x = self
            .saved_x
            .take()
            .ok_or_else(|| no_saved_state("activation"))?;
        activation_backward(self.kind, &x, dy)
    }
}
