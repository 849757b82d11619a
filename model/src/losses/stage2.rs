//! The stage-2 BiomedCLIP latent loss (the reference's `BiomedClipLoss.compute_lat_loss`):
//! the latent, seen as a grey image, must look like the input image to a frozen BiomedCLIP
//! image tower.
//!
//! * image: `clamp((x + 1) / 2, 0, 1)`, a grey image expanded to 3 channels (an RGB one as is);
//! * latent: `mean_c(latent / 4.6)`, expanded to 3 channels;
//! * both: `Resize(size, bicubic, antialias)` → `CenterCrop(size)` → CLIP `Normalize` → tower;
//! * `per_sample[b] = ‖f(image_b) − f(latent_b)‖²`, `loss = Σ_b per_sample[b] / B`.
//!
//! Only the latent branch needs a gradient (the image does not depend on trained weights), so
//! the image goes through the tower without saving anything. In stage 2 the autoencoder is
//! frozen except for its latent head (`channel_ds`, `channel_proj`): [`stage2_step`] encodes
//! without gradient state and back-propagates into the head only.

use crate::autoencoder::{AutoencoderKL, Sampling};
use crate::layer::{Ctx, Layer};
use crate::vit::{ClipTransform, VisionTower};
use medvae_runtime::ops::elementwise::{affine_clamp, scale};
use medvae_runtime::ops::strided::{gather, sum_last_axis, view};
use medvae_runtime::{Result, RuntimeError, Tensor};

/// The reference divides the latent by 4.6 before averaging its channels.
pub const LATENT_SCALE: f32 = 4.6;

#[derive(Debug, Clone)]
pub struct BiomedClipLatentLoss {
    /// The frozen image tower.
    pub tower: VisionTower,
    pub transform: ClipTransform,
}

/// The loss value and its per-sample terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage2Value {
    pub loss: f32,
    pub per_sample: Vec<f32>,
}

/// What [`stage2_step`] returns: the loss and the latent it was computed on.
#[derive(Debug, Clone)]
pub struct Stage2Output {
    pub value: Stage2Value,
    pub latent: Tensor,
}

/// `clamp((x + 1) / 2, 0, 1)`.
fn image_in_unit_range(x: &Tensor) -> Result<Tensor> {
    affine_clamp(x, 0.5, 0.5, 0.0, 1.0)
}

/// `(pixels, C)` of a `[N, h, w, C]` latent.
fn latent_dims(op: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match *shape {
        [n, h, w, c] if c > 0 => Ok((n * h * w, c)),
        _ => Err(RuntimeError::shape(
            op,
            format!("expected a 2D latent [N, h, w, C], got {shape:?}"),
        )),
    }
}

/// `[N, h, w, C]` latent → `[N, h, w, 1]` grey image `mean_c(latent / 4.6)`.
fn latent_image(latent: &Tensor) -> Result<Tensor> {
    const OP: &str = "stage-2 latent image";
    let (_, c) = latent_dims(OP, latent.shape())?;
    scale(&sum_last_axis(latent)?, 1.0 / (LATENT_SCALE * c as f32))
}

/// Backward of [`latent_image`]: every channel gets `d / (4.6·C)` (a stride-0 broadcast).
fn latent_image_backward(latent_shape: &[usize], d: &Tensor) -> Result<Tensor> {
    const OP: &str = "stage-2 latent image backward";
    let (pixels, c) = latent_dims(OP, latent_shape)?;
    let scaled = scale(d, 1.0 / (LATENT_SCALE * c as f32))?;
    gather(&scaled, &view(OP, 0, &[pixels, c], &[1, 0])?)?.reshape(latent_shape)
}

impl BiomedClipLatentLoss {
    /// The loss with `tower` (frozen here) and the transform to `image_size` (the tower's).
    pub fn new(mut tower: VisionTower) -> BiomedClipLatentLoss {
        tower.freeze();
        let transform = ClipTransform::new(tower.config.image_size);
        BiomedClipLatentLoss { tower, transform }
    }

    /// Tower features of a transformed `[N, H, W, 1 or 3]` image; with `grad` the tower keeps
    /// its state and the transform's plan is returned for the backward.
    fn features(
        &mut self,
        img: &Tensor,
        grad: bool,
    ) -> Result<(Tensor, crate::vit::preprocess::TransformPlan)> {
        let (t, plan) = self.transform.forward(img)?;
        let mut ctx = if grad {
            Ctx::eval_with_grad()
        } else {
            Ctx::eval()
        };
        Ok((self.tower.forward_owned(t, &mut ctx)?, plan))
    }

    /// `f(image)` `[N, embed]` of images `x` in [-1, 1] (no gradient state kept).
    pub fn image_features(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(self.features(&image_in_unit_range(x)?, false)?.0)
    }

    /// `f(latent)` `[N, embed]` of latents `[N, h, w, C]` (no gradient state kept).
    pub fn latent_features(&mut self, latent: &Tensor) -> Result<Tensor> {
        Ok(self.features(&latent_image(latent)?, false)?.0)
    }

    /// The loss of image `x` (`[N, H, W, 1 or 3]`, values in [-1, 1]) against `latent`
    /// (`[N, h, w, C]`), and with `need_grad` its gradient w.r.t. the latent.
    pub fn forward_backward(
        &mut self,
        x: &Tensor,
        latent: &Tensor,
        need_grad: bool,
    ) -> Result<(Stage2Value, Option<Tensor>)> {
        const OP: &str = "stage-2 loss";
        let (n_x, n_l) = (x.shape().first(), latent.shape().first());
        if n_x != n_l || matches!(n_x, None | Some(0)) {
            return Err(RuntimeError::shape(
                OP,
                format!(
                    "image {:?} and latent {:?} need the same non-empty batch",
                    x.shape(),
                    latent.shape()
                ),
            ));
        }
        let fi = self.image_features(x)?;
        let (fl, plan) = self.features(&latent_image(latent)?, need_grad)?;
        // The features are `[N, embed]`: a few kilobytes, compared on the host.
        let (a, b) = (&fi.to_f32_vec(), &fl.to_f32_vec());
        let n = fi.shape()[0];
        let e = a.len() / n;
        let per_sample: Vec<f64> = a
            .chunks(e)
            .zip(b.chunks(e))
            .map(|(p, q)| p.iter().zip(q).map(|(u, v)| ((u - v) as f64).powi(2)).sum())
            .collect();
        let value = Stage2Value {
            loss: (per_sample.iter().sum::<f64>() / n as f64) as f32,
            per_sample: per_sample.iter().map(|&v| v as f32).collect(),
        };
        if !need_grad {
            return Ok((value, None));
        }
        // d loss / d f(latent) = −2·(f(image) − f(latent)) / B.
        let k = -2.0 / n as f32;
        let dfl: Vec<f32> = a.iter().zip(b).map(|(u, v)| k * (u - v)).collect();
        let dfl = Tensor::from_vec(fl.shape(), dfl)?.into_device(fl.device())?;
        let dt = self.tower.backward(&dfl)?;
        let dimg = self.transform.backward(&plan, &dt)?;
        Ok((value, Some(latent_image_backward(latent.shape(), &dimg)?)))
    }
}

/// One stage-2 loss evaluation with a frozen autoencoder: `x` (`[N, H, W, C]` in [-1, 1]) is
/// encoded without gradient state, `z` drawn by `sampling`, the latent head run with gradient,
/// the loss computed, and its gradient accumulated into the head's trainable parameters.
pub fn stage2_step(
    ae: &mut AutoencoderKL,
    loss: &mut BiomedClipLatentLoss,
    x: &Tensor,
    sampling: Sampling,
    ctx: &mut Ctx,
) -> Result<Stage2Output> {
    let mut frozen = Ctx {
        grad: false,
        ..ctx.clone()
    };
    let moments = ae.encode(x, &mut frozen)?;
    let (z, _) = ae.sample(&moments, sampling, &mut frozen)?;
    ctx.rng = frozen.rng;
    drop(moments);
    let mut head_ctx = Ctx {
        grad: true,
        ..ctx.clone()
    };
    let latent = ae.latent(&z, &mut head_ctx)?;
    let (value, dlatent) = loss.forward_backward(x, &latent, true)?;
    let dlatent =
        dlatent.ok_or_else(|| RuntimeError::Other("stage-2 loss gave no gradient".into()))?;
    ae.latent_backward(&dlatent)?;
    Ok(Stage2Output { value, latent })
}
