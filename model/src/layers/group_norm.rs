//! GroupNorm (the reference's `Normalize`: 32 groups, eps 1e-6, affine), optionally fused with
//! the SiLU that follows it everywhere in the MedVAE networks except the attention block.

use crate::layer::{
    no_saved_state, norm_affine, visit_one, Ctx, Layer, Param, ParamVisitor, Parameters,
};
use crate::layers::init::Init;
use medvae_runtime::ops::norm::{group_norm_backward, group_norm_forward, NormParams, NormSaved};
use medvae_runtime::{Result, Tensor};
use std::borrow::Cow;

pub const GROUPS: usize = 32;
pub const EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    /// Output `silu(gn(x))` instead of `gn(x)`.
    pub silu: bool,
    pub weight: Param,
    pub bias: Param,
    saved: Option<(Tensor, NormSaved)>,
}

impl GroupNorm {
    /// The reference's `Normalize(channels)`, fused with a following SiLU when `silu`.
    pub fn new(channels: usize, silu: bool, init: &mut Init) -> Result<GroupNorm> {
        Ok(GroupNorm {
            groups: GROUPS,
            eps: EPS,
            silu,
            weight: Param::plain("weight", init.constant(&[channels], 1.0)?),
            bias: Param::plain("bias", init.constant(&[channels], 0.0)?),
            saved: None,
        })
    }

    fn params(&self) -> NormParams<'_> {
        NormParams {
            gamma: &self.weight.value,
            beta: &self.bias.value,
        }
    }

    /// Forward without saving: the output and the statistics its backward needs.
    pub fn apply(&self, x: &Tensor) -> Result<(Tensor, NormSaved)> {
        group_norm_forward(x, &self.params(), self.groups, self.eps, self.silu)
    }

    /// Backward from the forward input and statistics; accumulates weight/bias gradients
    /// when trainable. An owned `dy` is overwritten with `dx` (no second buffer).
    pub fn grad(&mut self, x: &Tensor, saved: &NormSaved, dy: Cow<'_, Tensor>) -> Result<Tensor> {
        let mut scratch = (None, None);
        let (params, grads) = norm_affine(&mut self.weight, &mut self.bias, &mut scratch)?;
        group_norm_backward(
            x,
            &params,
            self.groups,
            self.eps,
            self.silu,
            saved,
            dy,
            grads,
        )
    }
}

impl Parameters for GroupNorm {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, &mut self.weight, f);
        visit_one(prefix, &mut self.bias, f);
    }
}

impl Layer for GroupNorm {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (y, stats) = self.apply(x)?;
        self.saved = if ctx.grad {
            Some((x.clone(), stats))
        } else {
            None
        };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let (x, stats) = self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("GroupNorm"))?;
        self.grad(&x, &stats, Cow::Borrowed(dy))
    }
}
