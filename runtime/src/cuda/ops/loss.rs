//! Reductions and loss terms on the GPU: sums/means (deterministic two-pass), row and column
//! sums, L1, the hinge loss, the diagonal-Gaussian KL and sampling. Scalars stay on the device (`out` buffers of one f32), so a training
//! step needs no host round trip; gradient launchers take an optional device scale `gscale`.

use super::{check_f32, i32_of, i64_of, Args, BLOCK};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::loss::KlDims;

const KERNEL: &str = "cuda loss";

/// Partial-sum blocks of the two-pass reductions.
fn partial_blocks(dev: &CudaDevice, n: usize) -> usize {
    n.div_ceil(BLOCK as usize * 4)
        .clamp(1, (dev.sm_count() as usize * 4).max(1))
}

fn finalize(
    dev: &CudaDevice,
    partial: &DeviceBuffer,
    count: usize,
    out: &DeviceBuffer,
    scale: f32,
    accumulate: bool,
) -> CudaResult<()> {
    Args::new()
        .buf(partial)
        .push(count as i32)
        .buf(out)
        .push(scale)
        .push(accumulate as i32)
        .launch(dev, "reduce_finalize", cfg((1, 1, 1), (256, 1, 1), 0))
}

fn two_pass(
    dev: &CudaDevice,
    entry: &str,
    inputs: &[&DeviceBuffer],
    n: usize,
    out: &DeviceBuffer,
    scale: f32,
    accumulate: bool,
) -> CudaResult<()> {
    check_f32(KERNEL, "out", out, 1)?;
    let blocks = partial_blocks(dev, n);
    let partial = dev.alloc_f32(blocks)?;
    let mut a = Args::new();
    for b in inputs {
        check_f32(KERNEL, "input", b, n)?;
        a.buf(b);
    }
    a.push(i64_of(n)).buf(&partial);
    a.launch(dev, entry, cfg((blocks as u32, 1, 1), (BLOCK, 1, 1), 0))?;
    finalize(dev, &partial, blocks, out, scale, accumulate)
}

/// `out[0] = scale * sum(x[..n])` (+ out[0] when `accumulate`); mean = scale 1/n.
pub fn sum(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    n: usize,
    out: &DeviceBuffer,
    scale: f32,
    accumulate: bool,
) -> CudaResult<()> {
    two_pass(dev, "reduce_sum_partial", &[x], n, out, scale, accumulate)
}

/// `out[0] = sum(x^2)` (squared L2 norm, e.g. of a gradient).
pub fn sum_squares(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    n: usize,
    out: &DeviceBuffer,
) -> CudaResult<()> {
    two_pass(dev, "reduce_sumsq_partial", &[x], n, out, 1.0, false)
}

/// `out[0]` = how many elements of `x[..n]` are NaN or infinite (as f32).
pub fn count_non_finite(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    n: usize,
    out: &DeviceBuffer,
) -> CudaResult<()> {
    two_pass(dev, "reduce_nonfinite_partial", &[x], n, out, 1.0, false)
}

/// `out[0] +=` how many elements of `x[..n]` are NaN or infinite (counts of several tensors
/// add up; exact while the total stays below 2²⁴, and never 0 when any element is non-finite).
pub fn count_non_finite_acc(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    n: usize,
    out: &DeviceBuffer,
) -> CudaResult<()> {
    if n == 0 {
        return Ok(());
    }
    two_pass(dev, "reduce_nonfinite_partial", &[x], n, out, 1.0, true)
}

/// `out[0] = sum relu(1 + sign * x)` over `x[..n]`: one half of the hinge loss (sign −1 for the
/// real logits, +1 for the fake ones), for a discriminator that runs the halves separately.
pub fn hinge_half_forward(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    n: usize,
    sign: f32,
    out: &DeviceBuffer,
) -> CudaResult<()> {
    if n == 0 {
        return Err(geometry(KERNEL, "hinge loss of empty logits"));
    }
    check_f32(KERNEL, "x", x, n)?;
    check_f32(KERNEL, "out", out, 1)?;
    let blocks = partial_blocks(dev, n);
    let partial = dev.alloc_f32(blocks)?;
    Args::new()
        .buf(x)
        .push(i64_of(n))
        .push(sign)
        .buf(&partial)
        .launch(
            dev,
            "hinge_half_partial",
            cfg((blocks as u32, 1, 1), (BLOCK, 1, 1), 0),
        )?;
    finalize(dev, &partial, blocks, out, 1.0, false)
}

/// `dx = g · sign` where `1 + sign · x > 0`, else 0 (overwrites `dx`).
pub fn hinge_half_backward(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    n: usize,
    sign: f32,
    g: f32,
    dx: &DeviceBuffer,
) -> CudaResult<()> {
    check_f32(KERNEL, "x", x, n)?;
    check_f32(KERNEL, "dx", dx, n)?;
    Args::new()
        .buf(x)
        .push(i64_of(n))
        .push(sign)
        .push(g)
        .buf(dx)
        .launch(dev, "hinge_half_bwd", super::grid_1d(dev, n))
}

/// `out[r] = scale * sum_c x[r, c]` (+ out[r] when `accumulate`).
pub fn reduce_rows(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    rows: usize,
    cols: usize,
    out: &DeviceBuffer,
    scale: f32,
    accumulate: bool,
) -> CudaResult<()> {
    check_f32(KERNEL, "x", x, rows * cols)?;
    check_f32(KERNEL, "out", out, rows)?;
    Args::new()
        .buf(x)
        .push(i32_of(KERNEL, "cols", cols)?)
        .buf(out)
        .push(scale)
        .push(accumulate as i32)
        .launch(dev, "reduce_rows", cfg((rows as u32, 1, 1), (256, 1, 1), 0))
}

/// `out[c] += sum_r x[r, c]` (bias gradients).
pub fn reduce_cols_acc(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    rows: usize,
    cols: usize,
    out: &DeviceBuffer,
) -> CudaResult<()> {
    check_f32(KERNEL, "x", x, rows * cols)?;
    check_f32(KERNEL, "out", out, cols)?;
    let per_block = rows.div_ceil(65535).max(256);
    let grid = (cols.div_ceil(32) as u32, rows.div_ceil(per_block) as u32, 1);
    Args::new()
        .buf(x)
        .push(i64_of(rows))
        .push(i32_of(KERNEL, "cols", cols)?)
        .push(i32_of(KERNEL, "rows per block", per_block)?)
        .buf(out)
        .launch(dev, "reduce_cols_acc", cfg(grid, (32, 8, 1), 0))
}

/// `out[0] = scale * sum |a - b|` (mean: scale 1/n).
pub fn l1_forward(
    dev: &CudaDevice,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    n: usize,
    out: &DeviceBuffer,
    scale: f32,
) -> CudaResult<()> {
    two_pass(dev, "l1_partial", &[a, b], n, out, scale, false)
}

/// `da = scale * gscale * sign(a - b) + beta * da`.
pub fn l1_backward(
    dev: &CudaDevice,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    da: &DeviceBuffer,
    n: usize,
    scale: f32,
    gscale: Option<&DeviceBuffer>,
    beta: f32,
) -> CudaResult<()> {
    for (w, x) in [("a", a), ("b", b), ("da", da)] {
        check_f32(KERNEL, w, x, n)?;
    }
    Args::new()
        .buf(a)
        .buf(b)
        .buf(da)
        .push(i64_of(n))
        .push(scale)
        .opt(gscale)
        .push(beta)
        .launch(dev, "l1_bwd", super::grid_1d(dev, n))
}

/// `out[0] = 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))`.
pub fn hinge_forward(
    dev: &CudaDevice,
    real: &DeviceBuffer,
    nr: usize,
    fake: &DeviceBuffer,
    nf: usize,
    out: &DeviceBuffer,
) -> CudaResult<()> {
    if nr == 0 || nf == 0 {
        return Err(geometry(KERNEL, "hinge loss of empty logits"));
    }
    check_f32(KERNEL, "real", real, nr)?;
    check_f32(KERNEL, "fake", fake, nf)?;
    check_f32(KERNEL, "out", out, 1)?;
    let blocks = partial_blocks(dev, nr.max(nf));
    let partial = dev.alloc_f32(2 * blocks)?;
    Args::new()
        .buf(real)
        .push(i64_of(nr))
        .buf(fake)
        .push(i64_of(nf))
        .buf(&partial)
        .launch(
            dev,
            "hinge_partial",
            cfg((blocks as u32, 1, 1), (BLOCK, 1, 1), 0),
        )?;
    Args::new()
        .buf(&partial)
        .push(blocks as i32)
        .push(i64_of(nr))
        .push(i64_of(nf))
        .buf(out)
        .launch(dev, "hinge_finalize", cfg((1, 1, 1), (256, 1, 1), 0))
}

/// Gradients of the hinge loss (times `scale * gscale`) into dreal, dfake (+ beta * old).
pub fn hinge_backward(
    dev: &CudaDevice,
    real: &DeviceBuffer,
    nr: usize,
    fake: &DeviceBuffer,
    nf: usize,
    dreal: &DeviceBuffer,
    dfake: &DeviceBuffer,
    scale: f32,
    gscale: Option<&DeviceBuffer>,
    beta: f32,
) -> CudaResult<()> {
    if nr == 0 || nf == 0 {
        return Err(geometry(KERNEL, "hinge loss of empty logits"));
    }
    for (w, b, n) in [
        ("real", real, nr),
        ("dreal", dreal, nr),
        ("fake", fake, nf),
        ("dfake", dfake, nf),
    ] {
        check_f32(KERNEL, w, b, n)?;
    }
    Args::new()
        .buf(real)
        .push(i64_of(nr))
        .buf(fake)
        .push(i64_of(nf))
        .buf(dreal)
        .buf(dfake)
        .push(scale)
        .opt(gscale)
        .push(beta)
        .launch(dev, "hinge_bwd", super::grid_1d(dev, nr + nf))
}

fn kl_args(d: &KlDims) -> CudaResult<[i32; 6]> {
    let i = |w: &str, v: usize| i32_of(KERNEL, w, v);
    Ok([
        i("n", d.n)?,
        i("d", d.spatial[0])?,
        i("h", d.spatial[1])?,
        i("w", d.spatial[2])?,
        i("z channels", d.z_channels)?,
        d.keep_last_axis as i32,
    ])
}

/// KL of the diagonal Gaussian given by `moments` to N(0, 1), per sample (or per sample and W
/// with `keep_last_axis`, as the 3D reference). Same dims as the CPU kernel.
pub fn kl_forward(
    dev: &CudaDevice,
    d: &KlDims,
    moments: &DeviceBuffer,
    kl: &DeviceBuffer,
) -> CudaResult<()> {
    let a = kl_args(d)?;
    check_f32(KERNEL, "moments", moments, d.moments_len())?;
    check_f32(KERNEL, "kl", kl, d.out_len())?;
    let mut args = Args::new();
    args.buf(moments);
    for v in a {
        args.push(v);
    }
    args.buf(kl).launch(
        dev,
        "kl_moments_fwd",
        cfg((d.out_len() as u32, 1, 1), (256, 1, 1), 0),
    )
}

/// dmoments = dKL/dmoments for upstream `dkl` (None = ones) times `scale * gscale`, + beta * old.
pub fn kl_backward(
    dev: &CudaDevice,
    d: &KlDims,
    moments: &DeviceBuffer,
    dkl: Option<&DeviceBuffer>,
    dmoments: &DeviceBuffer,
    scale: f32,
    gscale: Option<&DeviceBuffer>,
    beta: f32,
) -> CudaResult<()> {
    let a = kl_args(d)?;
    check_f32(KERNEL, "moments", moments, d.moments_len())?;
    check_f32(KERNEL, "dmoments", dmoments, d.moments_len())?;
    if let Some(g) = dkl {
        check_f32(KERNEL, "dkl", g, d.out_len())?;
    }
    let mut args = Args::new();
    args.buf(moments).opt(dkl).buf(dmoments);
    for v in a {
        args.push(v);
    }
    args.push(scale).opt(gscale).push(beta).launch(
        dev,
        "kl_moments_bwd",
        super::grid_1d(dev, d.moments_len()),
    )
}

/// z = mean + exp(0.5 * clamp(logvar)) * eps over `pixels` positions of `z_channels`.
pub fn gaussian_sample_forward(
    dev: &CudaDevice,
    pixels: usize,
    z_channels: usize,
    moments: &DeviceBuffer,
    eps: &DeviceBuffer,
    z: &DeviceBuffer,
) -> CudaResult<()> {
    check_f32(KERNEL, "moments", moments, pixels * 2 * z_channels)?;
    check_f32(KERNEL, "eps", eps, pixels * z_channels)?;
    check_f32(KERNEL, "z", z, pixels * z_channels)?;
    Args::new()
        .buf(moments)
        .buf(eps)
        .buf(z)
        .push(i64_of(pixels))
        .push(i32_of(KERNEL, "z channels", z_channels)?)
        .launch(
            dev,
            "gaussian_sample_fwd",
            super::grid_1d(dev, pixels * z_channels),
        )
}

/// dmoments from dz (+ beta * old).
pub fn gaussian_sample_backward(
    dev: &CudaDevice,
    pixels: usize,
    z_channels: usize,
    moments: &DeviceBuffer,
    eps: &DeviceBuffer,
    dz: &DeviceBuffer,
    dmoments: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    check_f32(KERNEL, "moments", moments, pixels * 2 * z_channels)?;
    check_f32(KERNEL, "dmoments", dmoments, pixels * 2 * z_channels)?;
    check_f32(KERNEL, "eps", eps, pixels * z_channels)?;
    check_f32(KERNEL, "dz", dz, pixels * z_channels)?;
    Args::new()
        .buf(moments)
        .buf(eps)
        .buf(dz)
        .buf(dmoments)
        .push(i64_of(pixels))
        .push(i32_of(KERNEL, "z channels", z_channels)?)
        .push(beta)
        .launch(
            dev,
            "gaussian_sample_bwd",
            super::grid_1d(dev, pixels * 2 * z_channels),
        )
}
