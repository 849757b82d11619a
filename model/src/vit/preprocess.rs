//! open_clip's image transform for the tower, on tensors and differentiable (stage 2
//! back-propagates through it): torchvision `Resize(size, BICUBIC, antialias=True)` (the
//! shorter side to `size`), `CenterCrop(size)`, `Normalize(CLIP mean, CLIP std)`.
//!
//! A 1-channel input stands for its expansion to 3 equal channels (`expand(-1, 3, -1, -1)`,
//! as the stage-2 loss feeds grey images). Resize and crop act per channel, so they run on the
//! single channel and the expansion happens at the crop (a stride-0 channel axis): a third of
//! the work, and the backward sums the three normalised channel gradients into one.
//!
//! Crop and expansion are strided views and the normalisation elementwise ops, so the
//! transform runs on the image's device.

use medvae_runtime::ops::elementwise::{mul, scaled_add_assign};
use medvae_runtime::ops::resample::{resize_bicubic_aa_backward, resize_bicubic_aa_forward};
use medvae_runtime::ops::strided::{gather, scatter_into_zeros, sum_last_axis, view, StridedView};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// OpenAI CLIP's normalisation (open_clip `OPENAI_DATASET_MEAN` / `_STD`), which BiomedCLIP's
/// preprocessing uses.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// (The f32 nearest to `[0.26862954, 0.26130258, 0.27577711]`.)
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

#[derive(Debug, Clone, PartialEq)]
pub struct ClipTransform {
    /// `Resize` target of the shorter side and the square `CenterCrop` size.
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// What the backward needs to know about one forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformPlan {
    pub in_shape: Vec<usize>,
    /// The resized `[h, w]`; equal to the input's when torchvision skips the resize.
    pub resized: [usize; 2],
    /// Top-left corner of the crop in the resized image.
    pub offset: [usize; 2],
}

/// Python's `round()` of `d / 2` (halves to even), as torchvision's `center_crop` computes it.
fn half_round_even(d: usize) -> usize {
    let k = d / 2;
    if d % 2 == 1 && k % 2 == 1 {
        k + 1
    } else {
        k
    }
}

impl ClipTransform {
    pub fn new(size: usize) -> ClipTransform {
        ClipTransform {
            size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// torchvision's `Resize(int)` output size: the shorter side becomes `size`, the longer
    /// `int(size · long / short)`.
    pub fn resized_hw(&self, h: usize, w: usize) -> [usize; 2] {
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        let new_long = ((self.size * long) as f64 / short.max(1) as f64) as usize;
        if w <= h {
            [new_long, self.size]
        } else {
            [self.size, new_long]
        }
    }

    /// The geometry of a forward on `[N, H, W, C]`.
    pub fn plan(&self, in_shape: &[usize]) -> Result<TransformPlan> {
        let [_, h, w, c] = in_shape[..] else {
            return Err(RuntimeError::shape(
                "clip transform",
                format!("expected a channels-last [N, H, W, C] image, got {in_shape:?}"),
            ));
        };
        if c != 1 && c != 3 {
            return Err(RuntimeError::shape(
                "clip transform",
                format!("the CLIP tower takes 1 (grey, expanded) or 3 channels, got {c}"),
            ));
        }
        if self.size == 0 || h == 0 || w == 0 {
            return Err(RuntimeError::shape(
                "clip transform",
                format!("cannot resize {h}x{w} to {}", self.size),
            ));
        }
        let resized = self.resized_hw(h, w);
        // The shorter side is `size` and the longer not less, so the crop never pads.
        let offset = [
            half_round_even(resized[0] - self.size),
            half_round_even(resized[1] - self.size),
        ];
        Ok(TransformPlan {
            in_shape: in_shape.to_vec(),
            resized,
            offset,
        })
    }

    /// The crop of the resized image as a `[N, size, size, channels]` view of its
    /// `[N, rh, rw, c]` elements; `channels = 3` of a grey image repeats its channel
    /// (stride 0).
    fn crop_view(&self, plan: &TransformPlan, channels: usize) -> Result<StridedView> {
        let (n, c) = (plan.in_shape[0], plan.in_shape[3]);
        let (s, [rh, rw], [top, left]) = (self.size, plan.resized, plan.offset);
        let channel_stride = if c == 1 { 0 } else { 1 };
        view(
            "clip transform crop",
            (top * rw + left) * c,
            &[n, s, s, channels],
            &[rh * rw * c, rw * c, c, channel_stride],
        )
    }

    /// `values` (one per channel) repeated over the `pixels` of `[N, size, size, 3]`.
    fn per_channel(values: [f32; 3], pixels: usize, device: Device) -> Result<Tensor> {
        let v = Tensor::from_vec(&[3], values.to_vec())?.into_device(device)?;
        gather(&v, &view("clip transform", 0, &[pixels, 3], &[0, 1])?)
    }

    /// `1 / std` per channel over the pixels of `[N, size, size, 3]`.
    fn inverse_std(&self, n: usize, device: Device) -> Result<Tensor> {
        let inv = self.std.map(|s| 1.0 / s);
        Self::per_channel(inv, n * self.size * self.size, device)?
            .reshape(&[n, self.size, self.size, 3])
    }

    /// `[N, H, W, 1 or 3]` → normalised `[N, size, size, 3]`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, TransformPlan)> {
        let plan = self.plan(x.shape())?;
        let [n, h, w, _] = plan.in_shape[..] else {
            unreachable!("plan checked the rank")
        };
        let resized;
        let src = if plan.resized == [h, w] {
            x
        } else {
            resized = resize_bicubic_aa_forward(x, plan.resized)?;
            &resized
        };
        let mut centred = gather(src, &self.crop_view(&plan, 3)?)?;
        let pixels = n * self.size * self.size;
        let mean = Self::per_channel(self.mean, pixels, x.device())?.reshape(centred.shape())?;
        scaled_add_assign(&mut centred, &mean, -1.0)?;
        let y = mul(&centred, &self.inverse_std(n, x.device())?)?;
        Ok((y, plan))
    }

    /// The input gradient `[N, H, W, C]` from `dy` `[N, size, size, 3]`.
    pub fn backward(&self, plan: &TransformPlan, dy: &Tensor) -> Result<Tensor> {
        const OP: &str = "clip transform backward";
        let [n, h, w, c] = plan.in_shape[..] else {
            return Err(RuntimeError::shape(OP, "bad plan"));
        };
        let (s, [rh, rw]) = (self.size, plan.resized);
        dy.expect_shape(OP, "dy", &[n, s, s, 3])?;
        let dcentred = mul(dy, &self.inverse_std(n, dy.device())?)?;
        // A grey input was read three times: its gradient sums the three channels'.
        let dcrop = if c == 1 {
            sum_last_axis(&dcentred)?
        } else {
            dcentred
        };
        // Zero outside the crop.
        let dres = scatter_into_zeros(&[n, rh, rw, c], &self.crop_view(plan, c)?, &dcrop)?;
        if [rh, rw] == [h, w] {
            Ok(dres)
        } else {
            resize_bicubic_aa_backward(&plan.in_shape, &dres)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_sizes_and_crop_offsets() {
        let t = ClipTransform::new(32);
        assert_eq!(t.resized_hw(48, 56), [32, 37]);
        assert_eq!(t.resized_hw(56, 48), [37, 32]);
        assert_eq!(t.resized_hw(16, 16), [32, 32]);
        // (37 - 32) / 2 = 2.5 rounds to 2 (Python rounds halves to even); 1.5 rounds to 2.
        assert_eq!(t.plan(&[1, 48, 56, 1]).unwrap().offset, [0, 2]);
        assert_eq!(half_round_even(3), 2);
        assert_eq!(half_round_even(5), 2);
        assert_eq!(half_round_even(7), 4);
        assert_eq!(half_round_even(4), 2);
        assert!(t.plan(&[1, 48, 56, 2]).is_err());
        assert!(t.plan(&[48, 56, 1]).is_err());
    }
}
