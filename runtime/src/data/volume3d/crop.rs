//! Cropping and padding of RAS volumes, with the reference's exact placement rules.
//!
//! * Inference, MONAI `CropForeground(k_divisible=16)` with its defaults: the bounding box of
//!   voxels `> 0` over the whole image (margin 0), each extent rounded up to a multiple of k and
//!   grown about the box: `start -= (size - len) // 2`, so the extra voxel of an odd growth goes
//!   to the end. Where the grown box leaves the image the output is padded with **0** (the
//!   padder's constant mode with its default value — not -1; the golden files confirm it).
//! * Finetuning, the reference's `MonaiPad(64, value=-1)` + `RandSpatialCrop(64)`: each axis is
//!   padded to at least 64 with -1, `before = total // 2` (the extra voxel goes to the end), then
//!   a window starting uniformly in `[0, padded - 64]` is taken. [`crop_origin`] gives that
//!   window's start in the unpadded volume's coordinates (negative where padding is used), so the
//!   loader can read it straight from a memory-mapped volume with [`crop_into`].

use super::error::VolumeError;
use super::Volume;
use rand::Rng;
use std::path::Path;

/// Pad value of the finetuning pad (the [-1, 1] minimum).
pub const FINETUNE_PAD_VALUE: f32 = -1.0;
/// Pad value where `CropForeground`'s box leaves the image.
pub const FOREGROUND_PAD_VALUE: f32 = 0.0;

/// The `CropForeground` box: start (may be negative) and size per axis.
pub fn foreground_box(
    vol: &Volume,
    k: usize,
    path: &Path,
) -> Result<([isize; 3], [usize; 3]), VolumeError> {
    let [n0, n1, n2] = vol.shape;
    if n0.checked_mul(n1).and_then(|v| v.checked_mul(n2)) != Some(vol.data.len()) {
        return Err(VolumeError::Layout {
            path: path.to_path_buf(),
            msg: format!("{} values for shape {:?}", vol.data.len(), vol.shape),
        });
    }
    // per axis: does any voxel with this coordinate pass `x > 0`?
    let mut hit = [vec![false; n0], vec![false; n1], vec![false; n2]];
    for (i0, plane) in vol.data.chunks_exact((n1 * n2).max(1)).enumerate() {
        for (i1, row) in plane.chunks_exact(n2.max(1)).enumerate() {
            for (i2, &v) in row.iter().enumerate() {
                if v > 0.0 {
                    hit[0][i0] = true;
                    hit[1][i1] = true;
                    hit[2][i2] = true;
                }
            }
        }
    }
    let mut start = [0isize; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        let first = hit[a].iter().position(|&h| h);
        let last = hit[a].iter().rposition(|&h| h);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(VolumeError::NoForeground {
                path: path.to_path_buf(),
            });
        };
        let len = last + 1 - first;
        let k = k.max(1);
        let grown = len.div_ceil(k) * k;
        start[a] = first as isize - ((grown - len) / 2) as isize;
        size[a] = grown;
    }
    Ok((start, size))
}

/// `CropForeground(k_divisible = k)`: the grown foreground box, zero-padded outside the image.
pub fn crop_foreground(vol: &Volume, k: usize, path: &Path) -> Result<Volume, VolumeError> {
    Ok(crop_foreground_at(vol, k, path)?.0)
}

/// [`crop_foreground`], and where the box starts in `vol` (negative where it was grown past
/// the image).
pub fn crop_foreground_at(
    vol: &Volume,
    k: usize,
    path: &Path,
) -> Result<(Volume, [isize; 3]), VolumeError> {
    let (start, size) = foreground_box(vol, k, path)?;
    let cropped =
        crop_padded(vol, start, size, FOREGROUND_PAD_VALUE).map_err(|e| VolumeError::Layout {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok((cropped, start))
}

/// A `size` window of `vol` starting at `start` (may lie partly outside; outside reads `pad`).
pub fn crop_padded(
    vol: &Volume,
    start: [isize; 3],
    size: [usize; 3],
    pad: f32,
) -> Result<Volume, CropError> {
    let mut data = vec![0.0f32; size[0] * size[1] * size[2]];
    crop_into(vol.shape, &vol.data, start, size, pad, &mut data)?;
    Ok(Volume { shape: size, data })
}

/// Element types a crop can read from: f32, and f16 (converted row by row with the CPU's
/// conversion instructions where present), so the loader reads f16 shards without a copy.
pub trait CropSource: Copy {
    /// Convert `src` into `dst` (equal lengths).
    fn copy_row(src: &[Self], dst: &mut [f32]);
}

impl CropSource for f32 {
    fn copy_row(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl CropSource for half::f16 {
    fn copy_row(src: &[half::f16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}

/// `crop_into` was given buffers that do not match the shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("crop: {src_len} source values for shape {shape:?}, {dst_len} destination values for window {size:?}")]
pub struct CropError {
    pub shape: [usize; 3],
    pub src_len: usize,
    pub size: [usize; 3],
    pub dst_len: usize,
}

/// Copy a window of a C-order volume (`shape`, values `src`) into `dst` (C-order, `size`),
/// reading `pad` outside the volume.
pub fn crop_into<T: CropSource>(
    shape: [usize; 3],
    src: &[T],
    start: [isize; 3],
    size: [usize; 3],
    pad: f32,
    dst: &mut [f32],
) -> Result<(), CropError> {
    let numel = |s: [usize; 3]| s[0].checked_mul(s[1]).and_then(|v| v.checked_mul(s[2]));
    if numel(shape) != Some(src.len()) || numel(size) != Some(dst.len()) {
        return Err(CropError {
            shape,
            src_len: src.len(),
            size,
            dst_len: dst.len(),
        });
    }
    let [_, n1, n2] = shape;
    // the window's columns inside the volume along the fastest axis
    let (lo2, hi2) = inside(start[2], size[2], n2);
    for o0 in 0..size[0] {
        let i0 = start[0] + o0 as isize;
        for o1 in 0..size[1] {
            let i1 = start[1] + o1 as isize;
            let row = &mut dst[(o0 * size[1] + o1) * size[2]..][..size[2]];
            let in_plane = i0 >= 0 && (i0 as usize) < shape[0] && i1 >= 0 && (i1 as usize) < n1;
            if !in_plane || lo2 >= hi2 {
                row.fill(pad);
                continue;
            }
            row[..lo2].fill(pad);
            row[hi2..].fill(pad);
            let base = (i0 as usize * n1 + i1 as usize) * n2;
            let first = (start[2] + lo2 as isize) as usize;
            T::copy_row(
                &src[base + first..base + first + (hi2 - lo2)],
                &mut row[lo2..hi2],
            );
        }
    }
    Ok(())
}

/// The output positions `[lo, hi)` of a window (start, len) that fall inside `0..n`.
fn inside(start: isize, len: usize, n: usize) -> (usize, usize) {
    let lo = (-start).clamp(0, len as isize) as usize;
    let hi = (n as isize - start).clamp(0, len as isize) as usize;
    (lo, hi.max(lo))
}

/// Start of a finetuning crop of `crop` voxels per axis, in the unpadded volume's coordinates:
/// pad to at least `crop` (`before = total // 2`), then a uniform start in `[0, padded - crop]`.
pub fn crop_origin<R: Rng>(shape: [usize; 3], crop: [usize; 3], rng: &mut R) -> [isize; 3] {
    let mut origin = [0isize; 3];
    for a in 0..3 {
        let total_pad = crop[a].saturating_sub(shape[a]);
        let padded = shape[a] + total_pad;
        let offset = if padded > crop[a] {
            rng.gen_range(0..=padded - crop[a])
        } else {
            0
        };
        origin[a] = offset as isize - (total_pad / 2) as isize;
    }
    origin
}

/// The reference finetuning transform on a whole volume: pad to ≥ `crop` with -1, random crop.
pub fn finetune_crop<R: Rng>(
    vol: &Volume,
    crop: [usize; 3],
    rng: &mut R,
) -> Result<Volume, CropError> {
    let origin = crop_origin(vol.shape, crop, rng);
    crop_padded(vol, origin, crop, FINETUNE_PAD_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive reference: element-by-element with explicit bounds checks.
    fn naive(vol: &Volume, start: [isize; 3], size: [usize; 3], pad: f32) -> Vec<f32> {
        let mut out = Vec::new();
        for a in 0..size[0] as isize {
            for b in 0..size[1] as isize {
                for c in 0..size[2] as isize {
                    let (i, j, k) = (start[0] + a, start[1] + b, start[2] + c);
                    let s = vol.shape.map(|v| v as isize);
                    out.push(
                        if i < 0 || j < 0 || k < 0 || i >= s[0] || j >= s[1] || k >= s[2] {
                            pad
                        } else {
                            vol.data[((i * s[1] + j) * s[2] + k) as usize]
                        },
                    );
                }
            }
        }
        out
    }

    #[test]
    fn crop_matches_naive_everywhere() {
        let vol = Volume {
            shape: [3, 4, 5],
            data: (0..60).map(|v| v as f32).collect(),
        };
        for start in [[-2, -1, -3], [0, 0, 0], [1, 2, 3], [2, -5, 4], [-4, 5, -9]] {
            for size in [[1, 1, 1], [4, 6, 7], [3, 4, 5], [2, 9, 2]] {
                let got = crop_padded(&vol, start, size, -1.0).unwrap();
                assert_eq!(
                    got.data,
                    naive(&vol, start, size, -1.0),
                    "start {start:?} size {size:?}"
                );
            }
        }
    }

    #[test]
    fn origin_stays_in_padded_range() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let o = crop_origin([10, 64, 100], [64, 64, 64], &mut rng);
            assert_eq!(o[0], -27);
            assert_eq!(o[1], 0);
            assert!((0..=36).contains(&o[2]));
        }
        // odd padding: 63 -> before 0, after 1
        assert_eq!(crop_origin([63, 1, 2], [64; 3], &mut rng), [0, -31, -31]);
    }
}
