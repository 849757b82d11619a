//! The encoder's `Downsample` (zero pad (0, 1) after every spatial axis, then a 3×3 stride-2
//! convolution) and the decoder's `Upsample` (nearest ×2, then a 3×3 convolution), both with
//! `resamp_with_conv = True` as in every MedVAE model.

use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::{conv_spec, Conv};
use crate::layers::init::Init;
use medvae_runtime::ops::resample::{upsample_nearest2_backward, upsample_nearest2_forward};
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

#[derive(Debug, Clone)]
pub struct Downsample {
    pub conv: Conv,
    saved_x: Option<Tensor>,
}

impl Downsample {
    pub fn new(rank: usize, channels: usize, init: &mut Init) -> Result<Downsample> {
        // The reference pads (0, 1) on each axis with F.pad, then convolves with padding 0:
        // the same as asymmetric padding lo 0 / hi 1 in the convolution itself.
        let spec = conv_spec(rank, channels, channels, 3, 2, 0, 1)?;
        Ok(Downsample {
            conv: Conv::new(spec, rank, true, init)?,
            saved_x: None,
        })
    }
}

impl Parameters for Downsample {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.conv.visit_params(&join_key(prefix, "conv"), f);
    }
}

impl Layer for Downsample {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.conv.apply(&x)?;
        self.saved_x = if ctx.grad { Some(x) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let x = self
            .saved_x
            .take()
            .ok_or_else(|| no_saved_state("Downsample"))?;
        self.conv
            .grad(Cow::Owned(x), dy, true)?
            .ok_or_else(|| RuntimeError::Other("Downsample: no dx".into()))
    }
}

#[derive(Debug, Clone)]
pub struct Upsample {
    pub conv: Conv,
    /// The block input: the upsampled tensor (2^rank times larger) is recomputed instead.
    saved_x: Option<Tensor>,
}

impl Upsample {
    pub fn new(rank: usize, channels: usize, init: &mut Init) -> Result<Upsample> {
        Ok(Upsample {
            conv: Conv::square(rank, channels, channels, 3, 1, 1, init)?,
            saved_x: None,
        })
    }
}

impl Parameters for Upsample {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.conv.visit_params(&join_key(prefix, "conv"), f);
    }
}

impl Layer for Upsample {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.conv.apply(&upsample_nearest2_forward(&x)?)?;
        self.saved_x = if ctx.grad { Some(x) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let x = self
            .saved_x
            .take()
            .ok_or_else(|| no_saved_state("Upsample"))?;
        let up = upsample_nearest2_forward(&x)?;
        let x_shape = x.shape().to_vec();
        drop(x);
        let dup = self
            .conv
            .grad(Cow::Owned(up), dy, true)?
            .ok_or_else(|| RuntimeError::Other("Upsample: no dx".into()))?;
        upsample_nearest2_backward(&x_shape, &dup)
    }
}
