//! Sliding-window inference with importance-weighted blending, as MONAI's
//! `sliding_window_inference` (monai 1.6) computes it for the reference's 3D models
//! (`sw_batch_size = 1`, `mode = "gaussian"`, default `overlap = 0.25`, `sigma_scale = 0.125`,
//! constant padding with 0):
//!
//! 1. axes shorter than the window are padded symmetrically (`before = diff // 2`);
//! 2. per axis the scan interval is `int(roi · (1 − overlap))` (at least 1; the whole axis when
//!    `roi == size`), and windows start at `i · interval`, the last one moved back to end at
//!    the border; windows are visited in C order (last axis fastest);
//! 3. the importance map is a separable gaussian `exp(−x² / 2σ²)`, `x` centred on the window,
//!    `σ = sigma_scale · roi`, clamped below at `max(min, 1e-3)`;
//! 4. a predictor output of another spatial size (a latent) is placed at `int(start · s)`
//!    with `s = out / roi` per axis, its weights resized from the map by `nearest-exact`; the
//!    stitched output has `int(size · s)` voxels per axis;
//! 5. every output is the weighted sum of the windows divided by the summed weights (so the
//!    weights normalise: an identity predictor gives back its input), then the padding is cut
//!    off (`round(pad · s)` .. `round((pad + size) · s)`, Python's rounding).
//!
//! Tensors are channels-last `[1, D, H, W, C]` or `[1, H, W, C]`; a 2D input is handled as 3D
//! with a leading axis of size 1, which changes no value (its gaussian factor is exactly 1).

use super::error::InferError;
use medvae_runtime::Tensor;
use std::borrow::Cow;

/// MONAI's default overlap between neighbouring windows.
pub const DEFAULT_OVERLAP: f64 = 0.25;
/// MONAI's default gaussian width relative to the window.
pub const DEFAULT_SIGMA_SCALE: f64 = 0.125;

/// How overlapping windows are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blend {
    /// Every voxel of a window weighs 1.
    Constant,
    /// Less weight towards the window's edges.
    Gaussian,
}

fn window_err(msg: impl Into<String>) -> InferError {
    InferError::Window(msg.into())
}

/// The reference's `roi_size_calc`: an axis longer than `target` gets the window `size / 2^p`
/// for the smallest `p ≥ 1` that makes it shorter than `target`; other axes are used whole.
/// (The reference stops at `p = 7` and then fails; this keeps halving.)
pub fn roi_size_calc(shape: &[usize], target: usize) -> Result<Vec<usize>, InferError> {
    if target == 0 {
        return Err(window_err(
            "the window size limit (--roi-size) must be positive",
        ));
    }
    Ok(shape
        .iter()
        .map(|&dim| {
            if dim <= target {
                return dim;
            }
            let mut power = 2;
            while dim / power >= target {
                power *= 2;
            }
            dim / power
        })
        .collect())
}

/// MONAI `_get_scan_interval`: the step between window starts along each axis.
pub fn scan_interval(image: &[usize], roi: &[usize], overlap: f64) -> Vec<usize> {
    image
        .iter()
        .zip(roi)
        .map(|(&size, &r)| {
            if r == size {
                r
            } else {
                ((r as f64 * (1.0 - overlap)) as usize).max(1)
            }
        })
        .collect()
}

/// MONAI `dense_patch_slices` along one axis: the window starts (the last one ends at the
/// border). `patch` larger than `size` is cut to `size`.
pub fn window_starts(size: usize, patch: usize, interval: usize) -> Vec<usize> {
    let patch = patch.min(size);
    if interval == 0 || size == 0 {
        return vec![0];
    }
    let num = size.div_ceil(interval);
    let count = (0..num)
        .find(|d| d * interval + patch >= size)
        .map_or(1, |d| d + 1);
    (0..count)
        .map(|i| {
            let start = i * interval;
            start - (start + patch).saturating_sub(size)
        })
        .collect()
}

/// MONAI `compute_importance_map` over `roi` (C order), in f32 like the reference.
pub fn importance_map(roi: &[usize], blend: Blend, sigma_scale: f64) -> Vec<f32> {
    let numel: usize = roi.iter().product();
    let mut map = match blend {
        Blend::Constant => vec![1.0f32; numel],
        Blend::Gaussian => {
            let mut map = vec![1.0f32];
            for (axis, &n) in roi.iter().enumerate() {
                let sigma = n as f64 * sigma_scale;
                let denom = (-2.0 * sigma * sigma) as f32;
                let start = -((n as f32 - 1.0) / 2.0);
                let g: Vec<f32> = (0..n)
                    .map(|t| {
                        let x = start + t as f32;
                        (x * x / denom).exp()
                    })
                    .collect();
                map = if axis == 0 {
                    g
                } else {
                    map.iter()
                        .flat_map(|&m| g.iter().map(move |&v| m * v))
                        .collect()
                };
            }
            map
        }
    };
    // "handle non-positive weights": clamp below at max(min, 1e-3).
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    let floor = min.max(1e-3);
    for v in &mut map {
        *v = v.max(floor);
    }
    map
}

/// PyTorch `interpolate(mode="nearest-exact")` of a C-order map from `from` to `to`.
pub fn resize_nearest_exact(map: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    let index = |axis: usize| -> Vec<usize> {
        let scale = from[axis] as f32 / to[axis] as f32;
        (0..to[axis])
            .map(|d| {
                let src = ((d as f64 + 0.5) * scale as f64) as f32;
                (src.floor() as usize).min(from[axis] - 1)
            })
            .collect()
    };
    let idx: Vec<Vec<usize>> = (0..from.len()).map(index).collect();
    let mut strides = vec![1usize; from.len()];
    for a in (0..from.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * from[a + 1];
    }
    let numel: usize = to.iter().product();
    let mut out = Vec::with_capacity(numel);
    let mut pos = vec![0usize; to.len()];
    for _ in 0..numel {
        let off: usize = pos
            .iter()
            .enumerate()
            .map(|(a, &p)| idx[a][p] * strides[a])
            .sum();
        out.push(map[off]);
        for a in (0..to.len()).rev() {
            pos[a] += 1;
            if pos[a] < to[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    out
}

/// A sliding-window run: window size, overlap and blending.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Window extent per spatial axis (2 or 3 axes).
    pub roi: Vec<usize>,
    pub overlap: f64,
    pub blend: Blend,
    pub sigma_scale: f64,
    /// Fill value where the input is padded up to the window.
    pub pad_value: f32,
}

type S3 = [usize; 3];

fn lift(v: &[usize]) -> S3 {
    match *v {
        [h, w] => [1, h, w],
        [d, h, w] => [d, h, w],
        _ => [0, 0, 0],
    }
}

fn unlift(rank: usize, s: S3, c: usize) -> Vec<usize> {
    if rank == 2 {
        vec![1, s[1], s[2], c]
    } else {
        vec![1, s[0], s[1], s[2], c]
    }
}

impl SlidingWindow {
    /// MONAI's defaults with gaussian blending (what the reference uses).
    pub fn gaussian(roi: Vec<usize>) -> SlidingWindow {
        SlidingWindow {
            roi,
            overlap: DEFAULT_OVERLAP,
            blend: Blend::Gaussian,
            sigma_scale: DEFAULT_SIGMA_SCALE,
            pad_value: 0.0,
        }
    }

    /// Run `predictor` over every window of `input` (`[1, spatial.., C]`) and stitch each of
    /// its outputs (`[1, spatial'.., C']`, the same number and shapes for every window).
    pub fn run<F>(&self, input: &Tensor, mut predictor: F) -> Result<Vec<Tensor>, InferError>
    where
        F: FnMut(&Tensor) -> Result<Vec<Tensor>, InferError>,
    {
        let rank = self.roi.len();
        let shape = input.shape();
        if !(rank == 2 || rank == 3) || shape.len() != rank + 2 || shape[0] != 1 {
            return Err(window_err(format!(
                "input {shape:?} is not [1, spatial.., C] for a {rank}-axis window"
            )));
        }
        if self.roi.contains(&0) || shape[1..].contains(&0) {
            return Err(window_err(format!(
                "empty window {:?} or input {shape:?}",
                self.roi
            )));
        }
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(window_err(format!(
                "overlap must be in [0, 1), got {}",
                self.overlap
            )));
        }
        let c = shape[rank + 1];
        let size = lift(&shape[1..=rank]);
        let roi = lift(&self.roi);
        let image: S3 = std::array::from_fn(|a| size[a].max(roi[a]));
        let pad_lo: S3 = std::array::from_fn(|a| (image[a] - size[a]) / 2);
        let data = input.f32s("sliding_window")?;
        let padded: Cow<[f32]> = if image == size {
            Cow::Borrowed(data)
        } else {
            Cow::Owned(pad(data, size, image, pad_lo, c, self.pad_value))
        };
        let interval = scan_interval(&image, &roi, self.overlap);
        let starts: [Vec<usize>; 3] =
            std::array::from_fn(|a| window_starts(image[a], roi[a], interval[a]));
        let mut windows: Vec<S3> = Vec::new();
        for &a in &starts[0] {
            for &b in &starts[1] {
                windows.extend(starts[2].iter().map(|&k| [a, b, k]));
            }
        }
        let map = importance_map(&roi, self.blend, self.sigma_scale);

        let mut outs: Vec<Stitch> = Vec::new();
        for &start in &windows {
            let window = extract(&padded, image, c, start, roi);
            let preds = predictor(&Tensor::from_vec(&unlift(rank, roi, c), window)?)?;
            if outs.is_empty() {
                outs = preds
                    .iter()
                    .map(|p| Stitch::new(p.shape(), rank, roi, image, &windows, &map))
                    .collect::<Result<_, _>>()?;
            } else if preds.len() != outs.len() {
                return Err(window_err(format!(
                    "the predictor returned {} outputs, earlier {}",
                    preds.len(),
                    outs.len()
                )));
            }
            for (s, p) in outs.iter_mut().zip(&preds) {
                s.add(p, start)?;
            }
        }
        outs.into_iter()
            .map(|s| s.finish(rank, size, pad_lo, image != size))
            .collect()
    }
}

/// `data` (`size`, C channels) placed at `lo` in a `image`-sized buffer filled with `value`.
fn pad(data: &[f32], size: S3, image: S3, lo: S3, c: usize, value: f32) -> Vec<f32> {
    let mut out = vec![value; image.iter().product::<usize>() * c];
    let row = size[2] * c;
    for a in 0..size[0] {
        for b in 0..size[1] {
            let src = (a * size[1] + b) * row;
            let dst = (((a + lo[0]) * image[1] + b + lo[1]) * image[2] + lo[2]) * c;
            out[dst..dst + row].copy_from_slice(&data[src..src + row]);
        }
    }
    out
}

/// The `roi` window at `start` of an `image`-sized, C-channel buffer.
fn extract(data: &[f32], image: S3, c: usize, start: S3, roi: S3) -> Vec<f32> {
    let row = roi[2] * c;
    let mut out = Vec::with_capacity(roi.iter().product::<usize>() * c);
    for a in 0..roi[0] {
        for b in 0..roi[1] {
            let src = (((start[0] + a) * image[1] + start[1] + b) * image[2] + start[2]) * c;
            out.extend_from_slice(&data[src..src + row]);
        }
    }
    out
}

/// One stitched output: weighted sum, summed weights, and where windows land in it.
struct Stitch {
    pred_shape: Vec<usize>,
    roi: S3,
    /// Spatial size of one window's prediction, and its channels.
    patch: S3,
    c: usize,
    /// Output voxels per input voxel, per axis; `None` when the prediction has the window's size.
    scale: Option<[f64; 3]>,
    weights: Vec<f32>,
    out: S3,
    sum: Vec<f32>,
    count: Vec<f32>,
}

impl Stitch {
    fn new(
        pred_shape: &[usize],
        rank: usize,
        roi: S3,
        image: S3,
        windows: &[S3],
        map: &[f32],
    ) -> Result<Stitch, InferError> {
        if pred_shape.len() != rank + 2 || pred_shape[0] != 1 || pred_shape.contains(&0) {
            return Err(window_err(format!(
                "a window prediction {pred_shape:?} is not [1, spatial.., C] of rank {}",
                rank + 2
            )));
        }
        let patch = lift(&pred_shape[1..=rank]);
        let c = pred_shape[rank + 1];
        let (scale, weights, out) = if patch == roi {
            (None, map.to_vec(), image)
        } else {
            let s: [f64; 3] = std::array::from_fn(|a| patch[a] as f64 / roi[a] as f64);
            let out = std::array::from_fn(|a| (image[a] as f64 * s[a]) as usize);
            (Some(s), resize_nearest_exact(map, &roi, &patch), out)
        };
        let mut st = Stitch {
            pred_shape: pred_shape.to_vec(),
            roi,
            patch,
            c,
            scale,
            weights,
            out,
            sum: vec![0.0; out.iter().product::<usize>() * c],
            count: vec![0.0; out.iter().product()],
        };
        for &w in windows {
            let lo = st.region(w)?;
            st.for_each_voxel(lo, |o, p, s| s.count[o] += s.weights[p]);
        }
        Ok(st)
    }

    /// Where the window starting at `start` lands in the output (its first voxel).
    fn region(&self, start: S3) -> Result<S3, InferError> {
        let roi = self.roi;
        let mut lo = start;
        if let Some(s) = self.scale {
            for a in 0..3 {
                let l = (start[a] as f64 * s[a]) as usize;
                let h = ((start[a] + roi[a]) as f64 * s[a]) as usize;
                if h - l != self.patch[a] {
                    return Err(window_err(format!(
                        "a {}-voxel window at {} maps to [{l}, {h}) at scale {:.4}, not the \
                         prediction's {} voxels; choose a window size (--roi-size) that the \
                         model's downsampling factor divides",
                        roi[a], start[a], s[a], self.patch[a]
                    )));
                }
                lo[a] = l;
            }
        }
        for a in 0..3 {
            if lo[a] + self.patch[a] > self.out[a] {
                return Err(window_err(format!(
                    "window prediction at {lo:?} of size {:?} leaves the output {:?}",
                    self.patch, self.out
                )));
            }
        }
        Ok(lo)
    }

    /// `f(output voxel, patch voxel, self)` over the patch placed at `lo`.
    fn for_each_voxel(&mut self, lo: S3, mut f: impl FnMut(usize, usize, &mut Stitch)) {
        let (p, o) = (self.patch, self.out);
        for a in 0..p[0] {
            for b in 0..p[1] {
                let orow = ((lo[0] + a) * o[1] + lo[1] + b) * o[2] + lo[2];
                let prow = (a * p[1] + b) * p[2];
                for k in 0..p[2] {
                    f(orow + k, prow + k, self);
                }
            }
        }
    }

    fn add(&mut self, pred: &Tensor, start: S3) -> Result<(), InferError> {
        if pred.shape() != self.pred_shape.as_slice() {
            return Err(window_err(format!(
                "window predictions changed shape: {:?} after {:?}",
                pred.shape(),
                self.pred_shape
            )));
        }
        let lo = self.region(start)?;
        let values = pred.f32s("sliding_window")?;
        let c = self.c;
        self.for_each_voxel(lo, |o, p, s| {
            let w = s.weights[p];
            for ch in 0..c {
                // (prediction · weight) then accumulate, the reference's order.
                s.sum[o * c + ch] += values[p * c + ch] * w;
            }
        });
        Ok(())
    }

    fn finish(
        mut self,
        rank: usize,
        size: S3,
        pad_lo: S3,
        padded: bool,
    ) -> Result<Tensor, InferError> {
        let (c, roi) = (self.c, self.roi);
        for (v, &w) in self.count.iter().enumerate() {
            for ch in 0..c {
                self.sum[v * c + ch] /= w;
            }
        }
        if !padded {
            return Ok(Tensor::from_vec(&unlift(rank, self.out, c), self.sum)?);
        }
        // MONAI's crop of the padding: round(pad · zoom) .. round((pad + size) · zoom), with
        // zoom = output / window per axis, clipped to the output as Python slicing does.
        let o = self.out;
        let mut lo = [0usize; 3];
        let mut hi = o;
        for a in 0..3 {
            let zoom = o[a] as f64 / roi[a] as f64;
            lo[a] = ((pad_lo[a] as f64 * zoom).round_ties_even() as usize).min(o[a]);
            hi[a] = (((pad_lo[a] + size[a]) as f64 * zoom).round_ties_even() as usize).min(o[a]);
            hi[a] = hi[a].max(lo[a]);
        }
        let ext: S3 = std::array::from_fn(|a| hi[a] - lo[a]);
        let mut data = Vec::with_capacity(ext.iter().product::<usize>() * c);
        for a in lo[0]..hi[0] {
            for b in lo[1]..hi[1] {
                let row = ((a * o[1] + b) * o[2] + lo[2]) * c;
                data.extend_from_slice(&self.sum[row..row + ext[2] * c]);
            }
        }
        Ok(Tensor::from_vec(&unlift(rank, ext, c), data)?)
    }
}
