//! open_clip's image transform for the tower, on tensors and differentiable (stage 2
//! back-propagates through it): torchvision `Resize(size, BICUBIC, antialias=True)` (the
//! shorter side to `size`), `CenterCrop(size)`, `Normalize(CLIP mean, CLIP std)`.
//!
//! A 1-channel input stands for its expansion to 3 equal channels (`expand(-1, 3, -1, -1)`,
//! as the stage-2 loss feeds grey images). Resize and crop act per channel, so they run on the
//! single channel and the expansion happens at the normalisation: a third of the work, and the
//! backward sums the three normalised channel gradients into one.

use medvae_runtime::ops::resample::{resize_bicubic_aa_backward, resize_bicubic_aa_forward};
use medvae_runtime::{Result, RuntimeError, Tensor};
use rayon::prelude::*;

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

    /// `[N, H, W, 1 or 3]` → normalised `[N, size, size, 3]`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, TransformPlan)> {
        const OP: &str = "clip transform";
        let plan = self.plan(x.shape())?;
        let [n, h, w, c] = plan.in_shape[..] else {
            unreachable!("plan checked the rank")
        };
        let resized;
        let src = if plan.resized == [h, w] {
            x
        } else {
            resized = resize_bicubic_aa_forward(x, plan.resized)?;
            &resized
        };
        let (s, rw, [top, left]) = (self.size, plan.resized[1], plan.offset);
        let data = src.f32s(OP)?;
        let mut y = Tensor::uninit(&[n, s, s, 3]);
        y.f32s_mut(OP)?
            .par_chunks_mut(s * 3)
            .enumerate()
            .for_each(|(r, row)| {
                let (b, i) = (r / s, r % s);
                let line = &data[((b * plan.resized[0] + top + i) * rw + left) * c..][..s * c];
                for (j, px) in row.chunks_mut(3).enumerate() {
                    for (ch, v) in px.iter_mut().enumerate() {
                        let x = line[j * c + if c == 1 { 0 } else { ch }];
                        *v = (x - self.mean[ch]) / self.std[ch];
                    }
                }
            });
        Ok((y, plan))
    }

    /// The input gradient `[N, H, W, C]` from `dy` `[N, size, size, 3]`.
    pub fn backward(&self, plan: &TransformPlan, dy: &Tensor) -> Result<Tensor> {
        const OP: &str = "clip transform backward";
        let [n, h, w, c] = plan.in_shape[..] else {
            return Err(RuntimeError::shape(OP, "bad plan"));
        };
        let (s, [rh, rw], [top, left]) = (self.size, plan.resized, plan.offset);
        dy.expect_shape(OP, "dy", &[n, s, s, 3])?;
        let g = dy.f32s(OP)?;
        // Normalisation and crop: zero outside the crop, `dy/std` summed over the expanded
        // channels for a grey input.
        let mut dres = Tensor::zeros(&[n, rh, rw, c]);
        dres.f32s_mut(OP)?
            .par_chunks_mut(rw * c)
            .enumerate()
            .for_each(|(r, line)| {
                let (b, y) = (r / rh, r % rh);
                if y < top || y >= top + s {
                    return;
                }
                let src = &g[((b * s + y - top) * s) * 3..][..s * 3];
                for (j, px) in src.chunks(3).enumerate() {
                    let at = (left + j) * c;
                    if c == 1 {
                        line[at] = (0..3).map(|ch| px[ch] / self.std[ch]).sum();
                    } else {
                        for ch in 0..3 {
                            line[at + ch] = px[ch] / self.std[ch];
                        }
                    }
                }
            });
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
