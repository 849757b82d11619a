//! LPIPS' own ops, forward and backward side by side: the scaling layer and the per-layer
//! normalised feature distance (the VGG16 in between is convolutions, ReLUs and max pools).
//!
//! LPIPS runs its two images either as one batch (input ‖ target, when both need a gradient or
//! neither does) or as two: so a distance operand is [`Samples`] (a tensor and the sample it
//! starts at), and the backward writes into chosen samples of one gradient tensor
//! ([`GradSides`]). Nothing is copied to split a batch.

use super::{common_device, cpu_only, join_nsc, split_nsc};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::lpips as k;
pub use medvae_kernels::cpu::lpips::{LpipsDims, LpipsScaling, NORMALIZE_EPS};
use std::ops::Range;

/// `n` consecutive samples (the `n` comes with the op) of a channels-last feature tensor,
/// starting at sample `first`.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    pub tensor: &'a Tensor,
    pub first: usize,
}

impl<'a> Samples<'a> {
    pub fn new(tensor: &'a Tensor, first: usize) -> Self {
        Samples { tensor, first }
    }

    /// Element range of samples `[first, first + n)` when a sample holds `per_sample` values.
    fn range(&self, n: usize, per_sample: usize) -> Range<usize> {
        self.first * per_sample..(self.first + n) * per_sample
    }
}

/// Where a distance backward adds its gradients: the sample of the gradient tensor at which
/// side a's (b's) gradient starts; `None` skips that side. Both may point into one tensor
/// (a joint batch), at non-overlapping samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GradSides {
    pub a: Option<usize>,
    pub b: Option<usize>,
}

/// Samples of a channels-last tensor and the shape of one sample.
fn per_sample<'a>(op: &str, t: &'a Tensor) -> Result<(usize, &'a [usize])> {
    split_nsc(op, t.shape())?;
    Ok((t.shape()[0], &t.shape()[1..]))
}

/// `n` samples from `first` must exist in `t`, with the sample shape `sample`.
fn check_samples(
    op: &str,
    what: &str,
    t: &Tensor,
    first: usize,
    n: usize,
    sample: &[usize],
) -> Result<()> {
    let (m, s) = per_sample(op, t)?;
    if s != sample || first + n > m {
        return Err(RuntimeError::shape(
            op,
            format!(
                "{what}: samples [{first}, {}) of {:?} with sample shape {sample:?} do not exist",
                first + n,
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// The geometry of a distance between `n` samples of `a` and `b` with weights `w`.
fn distance_dims(op: &str, a: &Samples, b: &Samples, n: usize, w: &Tensor) -> Result<LpipsDims> {
    let (_, sample) = per_sample(op, a.tensor)?;
    check_samples(op, "a", a.tensor, a.first, n, sample)?;
    check_samples(op, "b", b.tensor, b.first, n, sample)?;
    let channels = *sample.last().unwrap_or(&0);
    if w.numel() != channels {
        return Err(RuntimeError::shape(
            op,
            format!(
                "{channels} channels but {} weights ({:?})",
                w.numel(),
                w.shape()
            ),
        ));
    }
    Ok(LpipsDims {
        n,
        pixels: sample.iter().product::<usize>() / channels.max(1),
        channels,
    })
}

/// `acc[s] += mean over pixels of Σ_c w_c (n̂a_c − n̂b_c)²` for the `n` samples of `a` and `b`
/// (`n̂ = f / (‖f‖ + eps)` over channels), `acc` being `[n]` on their device. Summing the five
/// layers into one accumulator keeps the result on the device until the caller reads it.
pub fn lpips_distance_forward(
    a: Samples,
    b: Samples,
    n: usize,
    w: &Tensor,
    acc: &mut Tensor,
) -> Result<()> {
    const OP: &str = "lpips_distance_forward";
    let dev = common_device(OP, &[a.tensor, b.tensor, w, acc])?;
    let d = distance_dims(OP, &a, &b, n, w)?;
    acc.expect_shape(OP, "acc", &[n])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::perceptual::distance_forward(OP, &d, a, b, w, acc);
    }
    let _timer = cpu_only(OP, dev)?;
    let per = d.pixels * d.channels;
    let fa = &a.tensor.f32s(OP)?[a.range(n, per)];
    let fb = &b.tensor.f32s(OP)?[b.range(n, per)];
    k::lpips_distance_forward(&d, fa, fb, w.f32s(OP)?, acc.f32s_mut(OP)?)?;
    Ok(())
}

/// Adds `∂(Σ_s dp[s]·d_s)/∂a` and `∂/∂b` of [`lpips_distance_forward`]'s distances into the
/// samples of `grad` that `at` names (`dp` is `[n]`; `grad` has the features' sample shape).
pub fn lpips_distance_backward(
    a: Samples,
    b: Samples,
    n: usize,
    w: &Tensor,
    dp: &Tensor,
    grad: &mut Tensor,
    at: GradSides,
) -> Result<()> {
    const OP: &str = "lpips_distance_backward";
    let dev = common_device(OP, &[a.tensor, b.tensor, w, dp, grad])?;
    let d = distance_dims(OP, &a, &b, n, w)?;
    dp.expect_shape(OP, "dp", &[n])?;
    let (_, sample) = per_sample(OP, a.tensor)?;
    for (what, first) in [("gradient of a", at.a), ("gradient of b", at.b)] {
        if let Some(first) = first {
            check_samples(OP, what, grad, first, n, sample)?;
        }
    }
    if let (Some(x), Some(y)) = (at.a, at.b) {
        if x < y + n && y < x + n {
            return Err(RuntimeError::shape(
                OP,
                format!("the gradients of a (from sample {x}) and b (from {y}) overlap (n = {n})"),
            ));
        }
    }
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::perceptual::distance_backward(OP, &d, a, b, w, dp, grad, at);
    }
    let _timer = cpu_only(OP, dev)?;
    let per = d.pixels * d.channels;
    let fa = &a.tensor.f32s(OP)?[a.range(n, per)];
    let fb = &b.tensor.f32s(OP)?[b.range(n, per)];
    let g = grad.f32s_mut(OP)?;
    let range = |first: usize| first * per..(first + n) * per;
    let (ga, gb) = match (at.a, at.b) {
        (Some(x), Some(y)) => {
            let (ga, gb) = disjoint_mut(g, range(x), range(y));
            (Some(ga), Some(gb))
        }
        (Some(x), None) => (Some(&mut g[range(x)]), None),
        (None, Some(y)) => (None, Some(&mut g[range(y)])),
        (None, None) => (None, None),
    };
    let (w, dp) = (w.f32s(OP)?, dp.f32s(OP)?);
    k::lpips_distance_backward(&d, fa, fb, w, dp, ga, gb)?;
    Ok(())
}

/// Two non-overlapping ranges of one slice, mutably (checked by the caller).
fn disjoint_mut(s: &mut [f32], x: Range<usize>, y: Range<usize>) -> (&mut [f32], &mut [f32]) {
    if x.start < y.start {
        let (lo, hi) = s.split_at_mut(y.start);
        (&mut lo[x], &mut hi[..y.len()])
    } else {
        let (lo, hi) = s.split_at_mut(x.start);
        (&mut hi[..x.len()], &mut lo[y])
    }
}

/// LPIPS takes grey or RGB images.
fn check_image_channels(op: &str, shape: &[usize], cin: usize) -> Result<()> {
    if cin == 1 || cin == 3 {
        Ok(())
    } else {
        Err(RuntimeError::shape(
            op,
            format!("images need 1 or 3 channels, got {cin} (shape {shape:?})"),
        ))
    }
}

/// The scaling layer over the batch concatenation of `xs` (channels-last, 1 or 3 channels, one
/// sample shape, one device): `(x_c − shift_c) / scale_c` into 3 channels, a 1-channel image
/// broadcast. LPIPS' joint batch is `[input, target]`, scaled straight into one tensor.
pub fn lpips_scaling_forward(s: &LpipsScaling, xs: &[&Tensor]) -> Result<Tensor> {
    const OP: &str = "lpips_scaling_forward";
    let first = xs
        .first()
        .ok_or_else(|| RuntimeError::shape(OP, "no images to scale"))?;
    let dev = common_device(OP, xs)?;
    let (_, sp, cin) = split_nsc(OP, first.shape())?;
    check_image_channels(OP, first.shape(), cin)?;
    let mut total = 0;
    for x in xs {
        // Any batch size, the first image's sample shape (a rank-0 tensor fails the check).
        let n = x.shape().first().copied().unwrap_or(0);
        x.expect_shape(OP, "image", &[&[n], &first.shape()[1..]].concat())?;
        total += n;
    }
    let y_shape = join_nsc(first.rank(), total, sp, 3);
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::perceptual::scaling_forward(OP, s, xs, cin, &y_shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&y_shape);
    let mut rest = y.f32s_mut(OP)?;
    for x in xs {
        let pixels = x.numel() / cin.max(1);
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(pixels * 3);
        k::lpips_scaling_forward(s, pixels, cin, x.f32s(OP)?, head)?;
        rest = tail;
    }
    Ok(y)
}

/// The scaling layer's backward for the image of shape `x_shape` whose scaled samples start at
/// sample `first` of `dy` (`[M, .., 3]`): a new gradient of `x_shape`.
pub fn lpips_scaling_backward(
    s: &LpipsScaling,
    dy: &Tensor,
    first: usize,
    x_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "lpips_scaling_backward";
    let dev = common_device(OP, &[dy])?;
    let (n, sp, cin) = split_nsc(OP, x_shape)?;
    check_image_channels(OP, x_shape, cin)?;
    check_samples(
        OP,
        "dy",
        dy,
        first,
        n,
        &join_nsc(x_shape.len(), 1, sp, 3)[1..],
    )?;
    let pixels = n * sp.iter().product::<usize>();
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::perceptual::scaling_backward(
            OP, s, dy, first, pixels, cin, x_shape,
        );
    }
    let _timer = cpu_only(OP, dev)?;
    let per = 3 * pixels / n.max(1);
    let g = &dy.f32s(OP)?[first * per..first * per + 3 * pixels];
    let mut dx = Tensor::uninit(x_shape);
    k::lpips_scaling_backward(s, pixels, cin, g, dx.f32s_mut(OP)?)?;
    Ok(dx)
}
