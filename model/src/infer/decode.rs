//! `z` latents back to images: what `medvae-fast decode` runs on the files `infer --latent z`
//! (2D) or `infer` (3D) wrote.
//!
//! * A latent file holds `z` channels-first with the size-1 axes squeezed, as the reference
//!   writes it: `[C, spatial..]`, or `[spatial..]` for a 1-channel model.
//! * 2D: `decoder(z)` on the whole plane, as `infer --decode` does.
//! * 3D: a gaussian sliding window over the latent, windows of `roi_size_calc(z, roi / f)`
//!   latent voxels (`f` the downsampling factor), each decoded to `f` times its size and
//!   blended in image space. For a volume that fits one window this is exactly
//!   `infer --decode`'s reconstruction; with several windows it differs slightly, because
//!   `infer --decode` decodes each window's own `z` before blending, and the stitched `z`
//!   blends first.

use super::error::InferError;
use super::run::{reference_array, Array};
use super::window::{roi_size_calc, SlidingWindow};
use crate::autoencoder::AutoencoderKL;
use crate::layer::{move_params, Ctx};
use medvae_runtime::layout::to_channels_last;
use medvae_runtime::{Device, Tensor};
use std::path::Path;

/// The decoder's input `[1, spatial.., C]` from a latent file's array (`shape`, C order) for a
/// `dims`-D model with `channels` latent channels.
pub fn z_tensor(
    shape: &[usize],
    data: &[f32],
    dims: usize,
    channels: usize,
    source: &Path,
) -> Result<Tensor, InferError> {
    let mut full = shape.to_vec();
    if channels == 1 && shape.len() == dims {
        full.insert(0, 1);
    }
    if full.len() != dims + 1 || full[0] != channels {
        let expected = if channels == 1 {
            format!("[{}] (1 channel, squeezed)", vec!["n"; dims].join(", "))
        } else {
            format!("[{channels}, {}]", vec!["n"; dims].join(", "))
        };
        return Err(InferError::Input {
            path: source.to_path_buf(),
            msg: format!(
                "a latent of shape {shape:?} is not {expected}, the z of this {dims}D model \
                 with {channels} latent channel(s)"
            ),
        });
    }
    // channels-first [C, s..] read as [1, C, s..] → channels-last [1, s.., C]
    let mut batched = vec![1];
    batched.extend(&full);
    let (last, last_shape) = to_channels_last(data, &batched)?;
    Ok(Tensor::from_vec(&last_shape, last)?)
}

/// A model that decodes `z` latents.
#[derive(Debug)]
pub struct LatentDecoder {
    model: AutoencoderKL,
    device: Device,
    /// Largest 3D window edge, in image voxels.
    pub roi_size: usize,
    pub overlap: f64,
}

impl LatentDecoder {
    pub fn new(
        mut model: AutoencoderKL,
        device: Device,
        roi_size: usize,
        overlap: f64,
    ) -> Result<LatentDecoder, InferError> {
        if roi_size == 0 {
            return Err(InferError::Setup("--roi-size must be positive".into()));
        }
        move_params(&mut model, device)?;
        Ok(LatentDecoder {
            model,
            device,
            roi_size,
            overlap,
        })
    }

    pub fn dims(&self) -> usize {
        self.model.config.dims
    }

    /// The downsampling factor: one latent voxel per `factor` image voxels along each axis.
    pub fn factor(&self) -> usize {
        self.model.config.downsample_factor()
    }

    /// Latent channels (`embed_dim`).
    pub fn channels(&self) -> usize {
        self.model.config.embed_dim
    }

    /// The reconstruction of the latent array `shape`/`data` (`source` names it in errors),
    /// and the number of windows decoded.
    pub fn decode_array(
        &mut self,
        shape: &[usize],
        data: &[f32],
        source: &Path,
    ) -> Result<(Array, usize), InferError> {
        let z = z_tensor(shape, data, self.dims(), self.channels(), source)?;
        if self.dims() == 2 {
            let mut ctx = Ctx::eval();
            let out = self.model.decode(&z.into_device(self.device)?, &mut ctx)?;
            return Ok((reference_array(&out)?, 1));
        }
        let factor = self.factor();
        let spatial = &z.shape()[1..4];
        let roi = roi_size_calc(spatial, (self.roi_size / factor).max(1))?;
        let mut sw = SlidingWindow::gaussian(roi);
        sw.overlap = self.overlap;
        let (model, device) = (&mut self.model, self.device);
        let mut windows = 0;
        let outs = sw.run(&z, |win| {
            windows += 1;
            let mut ctx = Ctx::eval();
            let win = win.on_device(device)?;
            let dec = model.decode(&win, &mut ctx)?;
            Ok(vec![dec.into_device(Device::Cpu)?])
        })?;
        let out = outs
            .into_iter()
            .next()
            .ok_or_else(|| InferError::Window("no output".into()))?;
        Ok((reference_array(&out)?, windows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Squeezed and unsqueezed channel axes are read; a shape that is neither names the file
    /// and what was expected.
    #[test]
    fn latent_shapes_map_to_the_decoder_input() {
        let p = Path::new("z.nii.gz");
        // [C=2, 2, 3] channels-first → [1, 2, 3, 2] channels-last
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let t = z_tensor(&[2, 2, 3], &data, 2, 2, p).unwrap();
        assert_eq!(t.shape(), &[1, 2, 3, 2]);
        // channel 1 of pixel (0, 1) is element [1, 0, 1] = 7
        assert_eq!(t.f32s("t").unwrap()[3], 7.0);
        let t = z_tensor(&[2, 2, 3], &data, 3, 1, p).unwrap();
        assert_eq!(t.shape(), &[1, 2, 2, 3, 1]);
        assert_eq!(t.f32s("t").unwrap(), &data[..]);
        let e = z_tensor(&[2, 2, 3], &data, 2, 4, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("z.nii.gz") && e.contains("[4, n, n]"), "{e}");
        let e = z_tensor(&[12], &data, 2, 1, p).unwrap_err().to_string();
        assert!(e.contains("[n, n] (1 channel, squeezed)"), "{e}");
    }
}
