//! Intensity normalisation, in f32 with the reference's operation order so that values (and the
//! `x > 0` foreground test that follows) match it to the last bit where possible:
//! * MRI: MONAI `ScaleIntensity(minv=0, maxv=1)`: `(x - min) / (max - min)`;
//! * CT: MONAI `ScaleIntensityRange(-1000, 1000, 0, 1, clip=True)`: `(x + 1000) / 2000`, clipped;
//! * then torchvision `Normalize(0.5, 0.5)`: `(v - 0.5) / 0.5`, giving [-1, 1].

use super::error::VolumeError;
use std::path::Path;

/// Which intensity rule a volume gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Min-max to [0, 1], then [-1, 1].
    Mri,
    /// Hounsfield window [-1000, 1000] to [0, 1] (clipped), then [-1, 1].
    Ct,
}

/// The CT window of the reference (`a_min`, `a_max`).
pub const CT_WINDOW: (f32, f32) = (-1000.0, 1000.0);

/// Normalise in place to [-1, 1] by the modality's rule.
///
/// A constant MRI volume is an error: min-max is undefined there (MONAI returns `x · minv`, all
/// zeros, which becomes an all -1 image: a silently blank training sample).
pub fn normalise(data: &mut [f32], modality: Modality, path: &Path) -> Result<(), VolumeError> {
    match modality {
        Modality::Mri => {
            let (mn, mx) = data
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            if mn == mx || data.is_empty() {
                return Err(VolumeError::Constant {
                    path: path.to_path_buf(),
                    value: mn,
                });
            }
            let range = mx - mn;
            for v in data.iter_mut() {
                *v = to_signed_unit((*v - mn) / range);
            }
        }
        Modality::Ct => {
            let (a_min, a_max) = CT_WINDOW;
            let width = a_max - a_min;
            for v in data.iter_mut() {
                *v = to_signed_unit(((*v - a_min) / width).clamp(0.0, 1.0));
            }
        }
    }
    Ok(())
}

/// torchvision `Normalize(mean=0.5, std=0.5)`.
#[inline]
fn to_signed_unit(v: f32) -> f32 {
    (v - 0.5) / 0.5
}
