//! BatchNorm2d (the PatchGAN discriminator's norm): batch statistics and a running-statistics
//! update in training mode, running statistics in eval mode. PyTorch defaults: eps 1e-5,
//! momentum 0.1; `num_batches_tracked` counts training-mode calls.

use crate::layer::{
    no_saved_state, norm_affine, visit_one, Ctx, Layer, Param, ParamKind, ParamVisitor, Parameters,
};
use crate::layers::init::Init;
use medvae_runtime::ops::norm::{
    batch_norm_backward, batch_norm_forward, NormParams, NormSaved, Running,
};
use medvae_runtime::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub eps: f64,
    pub momentum: f64,
    pub weight: Param,
    pub bias: Param,
    pub running_mean: Param,
    pub running_var: Param,
    /// Scalar buffer (an integer in PyTorch, stored as f32 here).
    pub num_batches_tracked: Param,
    saved: Option<(Tensor, NormSaved, bool)>,
}

impl BatchNorm {
    pub fn new(channels: usize, init: &mut Init) -> Result<BatchNorm> {
        Ok(BatchNorm {
            eps: 1e-5,
            momentum: 0.1,
            weight: Param::plain("weight", init.constant(&[channels], 1.0)?),
            bias: Param::plain("bias", init.constant(&[channels], 0.0)?),
            running_mean: Param::buffer("running_mean", Tensor::zeros(&[channels])),
            running_var: Param::buffer("running_var", init.constant(&[channels], 1.0)?),
            num_batches_tracked: Param {
                kind: ParamKind::IntBuffer,
                ..Param::buffer("num_batches_tracked", Tensor::zeros(&[]))
            },
            saved: None,
        })
    }
}

impl Parameters for BatchNorm {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, &mut self.weight, f);
        visit_one(prefix, &mut self.bias, f);
        visit_one(prefix, &mut self.running_mean, f);
        visit_one(prefix, &mut self.running_var, f);
        visit_one(prefix, &mut self.num_batches_tracked, f);
    }
}

impl Layer for BatchNorm {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let params = NormParams {
            gamma: &self.weight.value,
            beta: &self.bias.value,
        };
        let running = Running {
            mean: &mut self.running_mean.value,
            var: &mut self.running_var.value,
        };
        let (y, stats) =
            batch_norm_forward(x, &params, running, ctx.train, self.eps, self.momentum)?;
        if ctx.train {
            for v in self.num_batches_tracked.value.f32s_mut("BatchNorm")? {
                *v += 1.0;
            }
        }
        self.saved = if ctx.grad {
            Some((x.clone(), stats, ctx.train))
        } else {
            None
        };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let (x, stats, train) = self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("BatchNorm"))?;
        let mut scratch = (None, None);
        let (params, grads) = norm_affine(&mut self.weight, &mut self.bias, &mut scratch)?;
        batch_norm_backward(&x, &params, train, self.eps, &stats, dy, grads)
    }
}
