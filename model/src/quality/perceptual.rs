//! LPIPS (VGG16) between a reconstruction and its input, for `eval`: the same distance the
//! stage-1 loss trains with (`losses::lpips`), on the reconstruction clamped to [-1, 1] like
//! the other metrics. Volumes take the mean over every slice along the three axes, as 3D
//! finetuning and its validation do.

use super::VALUE_RANGE;
use crate::layer::move_params;
use crate::losses::lpips3d::slices_forward;
use crate::losses::{Lpips, Need};
use medvae_runtime::layout::to_channels_last;
use medvae_runtime::{Device, Result, Tensor};

/// The smallest side LPIPS takes: VGG16's four poolings must leave a pixel.
pub const MIN_LPIPS_SIZE: usize = 16;

/// A loaded LPIPS network on the device the distances are computed on.
#[derive(Debug)]
pub struct Perceptual {
    lpips: Lpips,
    device: Device,
}

impl Perceptual {
    pub fn new(mut lpips: Lpips, device: Device) -> Result<Perceptual> {
        move_params(&mut lpips, device)?;
        Ok(Perceptual { lpips, device })
    }

    /// LPIPS between `reconstruction` (clamped) and `image`, both channels-first
    /// (`channels × Π spatial`, 1 or 3 channels, 2 or 3 spatial axes); `None` when a spatial
    /// side is below [`MIN_LPIPS_SIZE`].
    pub fn distance(
        &self,
        reconstruction: &[f32],
        image: &[f32],
        channels: usize,
        spatial: &[usize],
    ) -> Result<Option<f64>> {
        if spatial.iter().any(|&s| s < MIN_LPIPS_SIZE) {
            return Ok(None);
        }
        let (lo, hi) = (VALUE_RANGE.0 as f32, VALUE_RANGE.1 as f32);
        let clamped: Vec<f32> = reconstruction.iter().map(|v| v.clamp(lo, hi)).collect();
        let mut shape = vec![1, channels];
        shape.extend_from_slice(spatial);
        let tensor = |values: &[f32]| -> Result<Tensor> {
            let (data, last) = to_channels_last(values, &shape)?;
            Tensor::from_vec(&last, data)?.into_device(self.device)
        };
        let (x, rec) = (tensor(image)?, tensor(&clamped)?);
        let d = if spatial.len() == 3 {
            slices_forward(&self.lpips, &x, &rec, Need::NONE)?.0 as f64
        } else {
            let (p, _) = self.lpips.distance(&x, &rec, Need::NONE)?;
            p.to_f32_vec()[0] as f64
        };
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Init;

    fn narrow() -> Lpips {
        Lpips::new([4, 4, 8, 8, 8], &mut Init::random(3)).unwrap()
    }

    #[test]
    fn equals_the_loss_distance_on_the_clamped_reconstruction() {
        let (h, w) = (20, 18);
        let image: Vec<f32> = (0..h * w)
            .map(|i| ((i * 13 % 41) as f32 / 20.0) - 1.0)
            .collect();
        // Overshoots clamp to the image's own values where the image sits at ±1.
        let rec: Vec<f32> = image.iter().map(|v| v * 1.5 + 0.05).collect();
        let p = Perceptual::new(narrow(), Device::Cpu).unwrap();
        let got = p.distance(&rec, &image, 1, &[h, w]).unwrap().unwrap();
        let clamped: Vec<f32> = rec.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let t = |v: &[f32]| Tensor::from_vec(&[1, h, w, 1], v.to_vec()).unwrap();
        let (want, _) = narrow()
            .distance(&t(&image), &t(&clamped), Need::NONE)
            .unwrap();
        assert_eq!(got, want.to_f32_vec()[0] as f64);
        assert!(got > 0.0);
        assert_eq!(p.distance(&image, &image, 1, &[h, w]).unwrap(), Some(0.0));
    }

    #[test]
    fn small_samples_have_none_and_volumes_average_their_slices() {
        let p = Perceptual::new(narrow(), Device::Cpu).unwrap();
        let small = vec![0.0f32; 15 * 40];
        assert_eq!(p.distance(&small, &small, 1, &[15, 40]).unwrap(), None);
        let n = 16 * 16 * 17;
        let vol: Vec<f32> = (0..n).map(|i| ((i * 7 % 23) as f32 / 11.0) - 1.0).collect();
        let rec: Vec<f32> = vol.iter().map(|v| -v).collect();
        let got = p.distance(&rec, &vol, 1, &[16, 16, 17]).unwrap().unwrap();
        let t = |v: &[f32]| Tensor::from_vec(&[1, 16, 16, 17, 1], v.to_vec()).unwrap();
        let want = slices_forward(&narrow(), &t(&vol), &t(&rec), Need::NONE)
            .unwrap()
            .0;
        assert_eq!(got, want as f64);
    }
}
