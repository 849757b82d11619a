//! Elementwise ops the networks need between their kernels: sums (residuals, gradient
//! accumulation), products (dropout masks), splitting/joining the channel axis (moments =
//! mean ‖ log-variance), the reparameterised Gaussian sample, and counter-based random
//! numbers (dropout masks, standard normals).
//!
//! Random numbers are a pure function of `(seed, element index)` (SplitMix64 finaliser), not a
//! sequential stream: a mask can be regenerated exactly for activation recomputation, filled in
//! parallel, and produced bit-identically by a GPU kernel from the same seed.

use super::{common_device, cpu_only};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Below this many elements a loop is cheaper than a rayon split.
const PAR_MIN: usize = 1 << 15;
/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    b.expect_shape(op, "second operand", a.shape())
}

/// `out[i] = f(a[i], b[i])`, in parallel for large tensors.
fn zip_map(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    if out.len() < PAR_MIN {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((o, x), y)| {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    *o = f(x, y);
                }
            });
    }
}

/// `acc[i] = f(acc[i], b[i])` in place.
fn zip_update(acc: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    if acc.len() < PAR_MIN {
        for (a, &y) in acc.iter_mut().zip(b) {
            *a = f(*a, y);
        }
    } else {
        acc.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, y)| {
                for (a, &y) in a.iter_mut().zip(y) {
                    *a = f(*a, y);
                }
            });
    }
}

/// `a + b` (same shapes).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "add";
    let dev = common_device(OP, &[a, b])?;
    same_shape(OP, a, b)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::add_scaled(OP, a, b, 1.0, 1.0);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(a.shape());
    zip_map(a.f32s(OP)?, b.f32s(OP)?, y.f32s_mut(OP)?, |x, y| x + y);
    Ok(y)
}

/// `acc += b` (same shapes): residual sums and gradient accumulation without a new buffer.
pub fn add_assign(acc: &mut Tensor, b: &Tensor) -> Result<()> {
    scaled_add_assign(acc, b, 1.0)
}

/// `acc += s · b` (same shapes).
pub fn scaled_add_assign(acc: &mut Tensor, b: &Tensor, s: f32) -> Result<()> {
    const OP: &str = "scaled_add_assign";
    let dev = common_device(OP, &[acc, b])?;
    same_shape(OP, acc, b)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::scaled_add_assign(OP, acc, b, s);
    }
    let _timer = cpu_only(OP, dev)?;
    if s == 1.0 {
        zip_update(acc.f32s_mut(OP)?, b.f32s(OP)?, |a, y| a + y);
    } else {
        zip_update(acc.f32s_mut(OP)?, b.f32s(OP)?, |a, y| a + s * y);
    }
    Ok(())
}

/// `a ⊙ b` (same shapes), e.g. an activation times a dropout mask.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "mul";
    let dev = common_device(OP, &[a, b])?;
    same_shape(OP, a, b)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::mul(OP, a, b);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(a.shape());
    zip_map(a.f32s(OP)?, b.f32s(OP)?, y.f32s_mut(OP)?, |x, y| x * y);
    Ok(y)
}

/// `s · a`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    const OP: &str = "scale";
    let dev = common_device(OP, &[a])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::scale(OP, a, s);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(a.shape());
    let src = a.f32s(OP)?;
    zip_map(src, src, y.f32s_mut(OP)?, |x, _| s * x);
    Ok(y)
}

/// `clamp(a · x + b, lo, hi)` (an image mapped into a range, e.g. [-1, 1] into [0, 1]).
pub fn affine_clamp(x: &Tensor, a: f32, b: f32, lo: f32, hi: f32) -> Result<Tensor> {
    const OP: &str = "affine_clamp";
    let dev = common_device(OP, &[x])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::affine_clamp(OP, x, [a, b, lo, hi]);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(x.shape());
    let src = x.f32s(OP)?;
    zip_map(src, src, y.f32s_mut(OP)?, |v, _| (a * v + b).clamp(lo, hi));
    Ok(y)
}

fn last_dim(op: &str, x: &Tensor) -> Result<usize> {
    x.shape()
        .last()
        .copied()
        .ok_or_else(|| RuntimeError::shape(op, "a scalar has no channel axis"))
}

/// Split the last (channel) axis into its first `c0` and remaining channels (`0 < c0 < C`).
pub fn split_last(x: &Tensor, c0: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "split_last";
    let dev = common_device(OP, &[x])?;
    let c = last_dim(OP, x)?;
    if c0 == 0 || c0 >= c {
        return Err(RuntimeError::shape(
            OP,
            format!("cannot split {c} channels at {c0}"),
        ));
    }
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::split_last(OP, x, c0);
    }
    let _timer = cpu_only(OP, dev)?;
    let c1 = c - c0;
    let mut sa = x.shape().to_vec();
    let mut sb = x.shape().to_vec();
    if let (Some(la), Some(lb)) = (sa.last_mut(), sb.last_mut()) {
        *la = c0;
        *lb = c1;
    }
    let mut a = Tensor::uninit(&sa);
    let mut b = Tensor::uninit(&sb);
    let src = x.f32s(OP)?;
    for ((row, ra), rb) in src
        .chunks_exact(c)
        .zip(a.f32s_mut(OP)?.chunks_exact_mut(c0))
        .zip(b.f32s_mut(OP)?.chunks_exact_mut(c1))
    {
        ra.copy_from_slice(&row[..c0]);
        rb.copy_from_slice(&row[c0..]);
    }
    Ok((a, b))
}

/// Join two tensors along the last axis (the inverse of [`split_last`]).
pub fn concat_last(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat_last";
    let dev = common_device(OP, &[a, b])?;
    let (ca, cb) = (last_dim(OP, a)?, last_dim(OP, b)?);
    let (ra, rb) = (&a.shape()[..a.rank() - 1], &b.shape()[..b.rank() - 1]);
    if ra != rb || ca == 0 || cb == 0 {
        return Err(RuntimeError::shape(
            OP,
            format!(
                "cannot join {:?} and {:?} along the last axis",
                a.shape(),
                b.shape()
            ),
        ));
    }
    let mut shape = ra.to_vec();
    shape.push(ca + cb);
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::concat_last(OP, a, b, &shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&shape);
    for ((row, xa), xb) in y
        .f32s_mut(OP)?
        .chunks_exact_mut(ca + cb)
        .zip(a.f32s(OP)?.chunks_exact(ca))
        .zip(b.f32s(OP)?.chunks_exact(cb))
    {
        row[..ca].copy_from_slice(xa);
        row[ca..].copy_from_slice(xb);
    }
    Ok(y)
}

/// The log-variance clamp of the reference's `DiagonalGaussianDistribution`.
const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

/// Moments `[.., 2·Cz]` (mean ‖ log-variance) and `eps` `[.., Cz]` as rows of the channel axis.
fn sample_dims(op: &str, moments: &Tensor, eps: &Tensor) -> Result<usize> {
    let c2 = last_dim(op, moments)?;
    let cz = c2 / 2;
    let mut want = moments.shape().to_vec();
    if let Some(l) = want.last_mut() {
        *l = cz;
    }
    if c2 % 2 != 0 || cz == 0 {
        return Err(RuntimeError::shape(
            op,
            format!("moments {:?} need an even channel count", moments.shape()),
        ));
    }
    eps.expect_shape(op, "eps", &want)?;
    Ok(cz)
}

/// Reparameterised sample `z = μ + exp(½·clamp(logvar, −30, 20)) · eps` from channels-last
/// moments (the first half of the channels is μ, the second the log-variance).
pub fn gaussian_sample_forward(moments: &Tensor, eps: &Tensor) -> Result<Tensor> {
    const OP: &str = "gaussian_sample_forward";
    let dev = common_device(OP, &[moments, eps])?;
    let cz = sample_dims(OP, moments, eps)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::gaussian_sample_forward(OP, moments, eps, cz);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut z = Tensor::uninit(eps.shape());
    for ((m, e), zr) in moments
        .f32s(OP)?
        .chunks_exact(2 * cz)
        .zip(eps.f32s(OP)?.chunks_exact(cz))
        .zip(z.f32s_mut(OP)?.chunks_exact_mut(cz))
    {
        for c in 0..cz {
            let std = (0.5 * m[cz + c].clamp(LOGVAR_MIN, LOGVAR_MAX)).exp();
            zr[c] = m[c] + std * e[c];
        }
    }
    Ok(z)
}

/// Backward of [`gaussian_sample_forward`]: `(dmoments, deps)`. The clamp passes the gradient
/// where `−30 ≤ logvar ≤ 20` (inclusive, as `torch.clamp`).
pub fn gaussian_sample_backward(
    moments: &Tensor,
    eps: &Tensor,
    dz: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "gaussian_sample_backward";
    let dev = common_device(OP, &[moments, eps, dz])?;
    let cz = sample_dims(OP, moments, eps)?;
    dz.expect_shape(OP, "dz", eps.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::gaussian_sample_backward(OP, moments, eps, dz, cz);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dm = Tensor::uninit(moments.shape());
    let mut de = Tensor::uninit(eps.shape());
    for ((((m, e), g), dmr), der) in moments
        .f32s(OP)?
        .chunks_exact(2 * cz)
        .zip(eps.f32s(OP)?.chunks_exact(cz))
        .zip(dz.f32s(OP)?.chunks_exact(cz))
        .zip(dm.f32s_mut(OP)?.chunks_exact_mut(2 * cz))
        .zip(de.f32s_mut(OP)?.chunks_exact_mut(cz))
    {
        for c in 0..cz {
            let lv = m[cz + c];
            let std = (0.5 * lv.clamp(LOGVAR_MIN, LOGVAR_MAX)).exp();
            dmr[c] = g[c];
            dmr[cz + c] = if (LOGVAR_MIN..=LOGVAR_MAX).contains(&lv) {
                0.5 * std * e[c] * g[c]
            } else {
                0.0
            };
            der[c] = std * g[c];
        }
    }
    Ok((dm, de))
}

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` for element `i` of the stream `seed` (24 random bits).
#[inline]
pub fn uniform_at(seed: u64, i: u64) -> f32 {
    let r = mix64(seed ^ mix64(i.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    (r >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

fn fill_indexed(out: &mut [f32], f: impl Fn(u64) -> f32 + Sync) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let base = (ci * CHUNK) as u64;
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = f(base + j as u64);
            }
        });
}

/// An inverted-dropout mask: each element is `0` with probability `p`, else `1 / (1 − p)`
/// (PyTorch's `nn.Dropout` scaling), a pure function of `(seed, index)`.
pub fn dropout_mask(shape: &[usize], p: f32, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(RuntimeError::shape(
            "dropout_mask",
            format!("drop probability {p} is not in [0, 1)"),
        ));
    }
    let keep = 1.0 / (1.0 - p);
    let mut m = Tensor::uninit(shape);
    fill_indexed(m.f32s_mut("dropout_mask")?, |i| {
        if uniform_at(seed, i) < p {
            0.0
        } else {
            keep
        }
    });
    Ok(m)
}

/// Standard normal samples (Box–Muller on two counter-based uniforms per element).
pub fn standard_normal(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut t = Tensor::uninit(shape);
    fill_indexed(t.f32s_mut("standard_normal")?, |i| {
        // 1 − u keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - uniform_at(seed, 2 * i) as f64;
        let u2 = uniform_at(seed, 2 * i + 1) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    });
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }

    #[test]
    fn split_and_concat_are_inverse() {
        let x = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let (a, b) = split_last(&x, 1).unwrap();
        assert_eq!(a.to_f32_vec(), vec![1., 4.]);
        assert_eq!(b.to_f32_vec(), vec![2., 3., 5., 6.]);
        assert_eq!(concat_last(&a, &b).unwrap().to_f32_vec(), x.to_f32_vec());
    }

    #[test]
    fn gaussian_sample_matches_formula_and_clamp_gradient() {
        let m = t(&[2, 2], &[0.5, -1.0, 0.0, 25.0]);
        let e = t(&[2, 1], &[2.0, 1.0]);
        let z = gaussian_sample_forward(&m, &e).unwrap().to_f32_vec();
        assert!((z[0] - (0.5 + (-0.5f32).exp() * 2.0)).abs() < 1e-6);
        assert!((z[1] - 10f32.exp()).abs() / 10f32.exp() < 1e-6);
        let (dm, de) = gaussian_sample_backward(&m, &e, &t(&[2, 1], &[1.0, 1.0])).unwrap();
        let dm = dm.to_f32_vec();
        assert_eq!(dm[3], 0.0, "clamped log-variance passes no gradient");
        assert!((dm[1] - 0.5 * (-0.5f32).exp() * 2.0).abs() < 1e-6);
        assert!((de.to_f32_vec()[0] - (-0.5f32).exp()).abs() < 1e-6);
    }

    #[test]
    fn dropout_mask_rate_and_scale() {
        let m = dropout_mask(&[100_000], 0.1, 42).unwrap().to_f32_vec();
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.1).abs() < 0.01, "drop rate {dropped}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(m, dropout_mask(&[100_000], 0.1, 42).unwrap().to_f32_vec());
        assert_ne!(m, dropout_mask(&[100_000], 0.1, 43).unwrap().to_f32_vec());
    }

    #[test]
    fn standard_normal_moments() {
        let v = standard_normal(&[200_000], 7).unwrap().to_f32_vec();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "mean {mean} var {var}"
        );
    }
}
