//! GroupNorm (+ fused SiLU), BatchNorm and LayerNorm on the GPU, with the CPU kernels' dims
//! structs. BatchNorm runs on the GroupNorm kernels (one "sample" of N*S rows, one channel per
//! group), exactly as the CPU implementation does.

use super::{check_f32, grid_1d, i32_of, i64_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use cudarc::driver::LaunchConfig;
use medvae_kernels::cpu::batch_norm::BatchNormDims;
use medvae_kernels::cpu::group_norm::GroupNormDims;
use medvae_kernels::cpu::layer_norm::LayerNormDims;

const KERNEL: &str = "cuda norm";
/// Channel limit of the GroupNorm/BatchNorm kernels (shared-memory staging).
const GN_MAX_C: usize = 2048;
/// Channel limit of the LayerNorm kernels.
const LN_MAX_C: usize = 4096;

/// The GroupNorm problem as the kernels see it.
#[derive(Clone, Copy, Debug)]
struct Gn {
    n: usize,
    s: usize,
    c: usize,
    g: usize,
    eps: f32,
}

impl Gn {
    fn validate(&self) -> CudaResult<()> {
        if self.c == 0 || self.g == 0 || !self.c.is_multiple_of(self.g) {
            return Err(geometry(
                KERNEL,
                format!("{} channels in {} groups", self.c, self.g),
            ));
        }
        if self.c > GN_MAX_C {
            return Err(geometry(
                KERNEL,
                format!("{} channels > {GN_MAX_C}", self.c),
            ));
        }
        if self.n > 65535 {
            return Err(geometry(KERNEL, format!("batch {} > 65535", self.n)));
        }
        Ok(())
    }
    fn len(&self) -> usize {
        self.n * self.s * self.c
    }
    /// The kernels' vector width: 4 (float4) when the channels allow, else 1.
    fn vector_width(&self) -> usize {
        if self.c.is_multiple_of(4) {
            4
        } else {
            1
        }
    }
    /// `entry` with the suffix of the kernels' vector width: `_v4` or `_v1`.
    fn vector_entry(&self, entry: &str) -> String {
        format!("{entry}_v{}", self.vector_width())
    }

    /// Vector width of the elementwise passes (float4 when the channels allow) and their grid:
    /// (blocks per sample, N) with at least 8 row lanes per channel vector (so at most 1/8 of
    /// the threads idle, see `gn_walk` in group_norm.cu), about 8 blocks per SM in total, and no
    /// more lanes than rows.
    fn elementwise_launch(&self, dev: &CudaDevice, entry: &str) -> (String, LaunchConfig) {
        let vectors = self.c / self.vector_width();
        let block = 256usize;
        let for_lanes = (8 * vectors).div_ceil(block);
        let for_device = (8 * dev.sm_count() as usize).div_ceil(self.n.max(1));
        let most = (self.s.max(1) * vectors).div_ceil(block);
        let blocks = for_lanes.max(for_device).min(most.max(for_lanes)).max(1);
        let grid = if self.len() == 0 { 0 } else { blocks as u32 };
        (
            self.vector_entry(entry),
            cfg((grid, self.n as u32, 1), (block as u32, 1, 1), 0),
        )
    }

    /// Row chunks per sample: about 4 blocks per SM in total.
    fn chunks(&self, dev: &CudaDevice) -> (usize, usize) {
        let target = (4 * dev.sm_count() as usize).div_ceil(self.n.max(1)).max(1);
        let chunks = target.min(self.s.max(1));
        let rows = self.s.max(1).div_ceil(chunks);
        (self.s.max(1).div_ceil(rows), rows)
    }
}

/// Statistics pass: mean, rstd (and var when given) per (n, g).
fn gn_stats(
    dev: &CudaDevice,
    p: &Gn,
    x: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    var: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    let (chunks, rows) = p.chunks(dev);
    let partial = dev.alloc_f32(p.n * chunks * p.g * 2)?;
    let (s, c, g) = (
        i64_of(p.s),
        i32_of(KERNEL, "channels", p.c)?,
        i32_of(KERNEL, "groups", p.g)?,
    );
    Args::new()
        .buf(x)
        .push(s)
        .push(c)
        .push(g)
        .push(i32_of(KERNEL, "rows per chunk", rows)?)
        .buf(&partial)
        .launch(
            dev,
            &p.vector_entry("gn_stats_partial"),
            cfg((chunks as u32, p.n as u32, 1), (256, 1, 1), 0),
        )?;
    Args::new()
        .buf(&partial)
        .buf(x)
        .push(i32_of(KERNEL, "batch", p.n)?)
        .push(s)
        .push(c)
        .push(g)
        .push(chunks as i32)
        .push(p.eps)
        .buf(mean)
        .buf(rstd)
        .opt(var)
        .launch(dev, "gn_stats_finalize", grid_1d(dev, p.n * p.g))
}

fn gn_apply(
    dev: &CudaDevice,
    p: &Gn,
    silu: bool,
    x: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    gamma: Option<&DeviceBuffer>,
    beta: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
) -> CudaResult<()> {
    let mut args = Args::new();
    args.buf(x)
        .buf(mean)
        .buf(rstd)
        .opt(gamma)
        .opt(beta)
        .buf(y)
        .push(i64_of(p.s))
        .push(p.c as i32)
        .push(p.g as i32)
        .push(silu as i32);
    let (entry, launch) = p.elementwise_launch(dev, "gn_apply");
    args.launch(dev, &entry, launch)
}

/// Backward: dgamma/dbeta (accumulated, optional) and dx = value + dx_beta * dx. `coef_null`
/// drops the mean terms (BatchNorm in eval mode).
fn gn_backward(
    dev: &CudaDevice,
    p: &Gn,
    silu: bool,
    x: &DeviceBuffer,
    gamma: Option<&DeviceBuffer>,
    beta: Option<&DeviceBuffer>,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dgamma: Option<&DeviceBuffer>,
    dbeta: Option<&DeviceBuffer>,
    dx_beta: f32,
    coef_null: bool,
) -> CudaResult<()> {
    let (chunks, rows) = p.chunks(dev);
    let partial = dev.alloc_f32(p.n * chunks * p.c * 2)?;
    let coef = dev.alloc_f32(p.n * p.g * 2)?;
    let (s, c, g) = (i64_of(p.s), p.c as i32, p.g as i32);
    Args::new()
        .buf(x)
        .buf(dy)
        .buf(mean)
        .buf(rstd)
        .opt(gamma)
        .opt(beta)
        .push(s)
        .push(c)
        .push(g)
        .push(silu as i32)
        .push(i32_of(KERNEL, "rows per chunk", rows)?)
        .buf(&partial)
        .launch(
            dev,
            &p.vector_entry("gn_bwd_partial"),
            cfg((chunks as u32, p.n as u32, 1), (256, 1, 1), 0),
        )?;
    Args::new()
        .buf(&partial)
        .push(chunks as i32)
        .push(s)
        .push(c)
        .push(g)
        .opt(gamma)
        .opt(dgamma)
        .opt(dbeta)
        .buf(&coef)
        .launch(
            dev,
            "gn_bwd_finalize",
            cfg((p.n as u32, 1, 1), (256, 1, 1), 0),
        )?;
    let (entry, launch) = p.elementwise_launch(dev, "gn_bwd_dx");
    Args::new()
        .buf(x)
        .buf(dy)
        .buf(mean)
        .buf(rstd)
        .opt(gamma)
        .opt(beta)
        .opt(if coef_null { None } else { Some(&coef) })
        .buf(dx)
        .push(s)
        .push(c)
        .push(g)
        .push(silu as i32)
        .push(dx_beta)
        .launch(dev, &entry, launch)
}

fn gn_of(d: &GroupNormDims) -> CudaResult<Gn> {
    let p = Gn {
        n: d.n,
        s: d.spatial,
        c: d.channels,
        g: d.groups,
        eps: d.eps as f32,
    };
    p.validate()?;
    Ok(p)
}

fn check_affine(
    c: usize,
    gamma: Option<&DeviceBuffer>,
    beta: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    if let Some(b) = gamma {
        check_f32(KERNEL, "gamma", b, c)?;
    }
    if let Some(b) = beta {
        check_f32(KERNEL, "beta", b, c)?;
    }
    Ok(())
}

/// GroupNorm (+ SiLU when `silu`) forward over `[n, spatial, channels]`; saves `mean`, `rstd`
/// (`[n * groups]`). gamma/beta may be absent (1 / 0).
pub fn group_norm_forward(
    dev: &CudaDevice,
    d: &GroupNormDims,
    silu: bool,
    x: &DeviceBuffer,
    gamma: Option<&DeviceBuffer>,
    beta: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
) -> CudaResult<()> {
    let p = gn_of(d)?;
    check_f32(KERNEL, "x", x, p.len())?;
    check_f32(KERNEL, "y", y, p.len())?;
    check_f32(KERNEL, "mean", mean, p.n * p.g)?;
    check_f32(KERNEL, "rstd", rstd, p.n * p.g)?;
    check_affine(p.c, gamma, beta)?;
    if p.len() == 0 {
        return Ok(());
    }
    gn_stats(dev, &p, x, mean, rstd, None)?;
    gn_apply(dev, &p, silu, x, mean, rstd, gamma, beta, y)
}

/// GroupNorm (+ SiLU) backward: `dx = value + dx_beta * dx`; dgamma, dbeta accumulate (skip a
/// frozen layer's by passing None).
pub fn group_norm_backward(
    dev: &CudaDevice,
    d: &GroupNormDims,
    silu: bool,
    x: &DeviceBuffer,
    gamma: Option<&DeviceBuffer>,
    beta: Option<&DeviceBuffer>,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dgamma: Option<&DeviceBuffer>,
    dbeta: Option<&DeviceBuffer>,
    dx_beta: f32,
) -> CudaResult<()> {
    let p = gn_of(d)?;
    for (what, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_f32(KERNEL, what, b, p.len())?;
    }
    check_f32(KERNEL, "mean", mean, p.n * p.g)?;
    check_f32(KERNEL, "rstd", rstd, p.n * p.g)?;
    check_affine(p.c, gamma, beta)?;
    check_affine(p.c, dgamma, dbeta)?;
    if p.len() == 0 {
        return Ok(());
    }
    gn_backward(
        dev, &p, silu, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dx_beta, false,
    )
}

fn bn_of(d: &BatchNormDims) -> CudaResult<Gn> {
    let p = Gn {
        n: 1,
        s: d.n * d.spatial,
        c: d.channels,
        g: d.channels,
        eps: d.eps as f32,
    };
    p.validate()?;
    Ok(p)
}

/// BatchNorm, training mode: normalises with the batch statistics, updates the running ones
/// (momentum, unbiased variance) and saves `mean`, `rstd` (`[channels]`) for the backward.
pub fn batch_norm_train_forward(
    dev: &CudaDevice,
    d: &BatchNormDims,
    x: &DeviceBuffer,
    gamma: &DeviceBuffer,
    beta: &DeviceBuffer,
    running_mean: &DeviceBuffer,
    running_var: &DeviceBuffer,
    y: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
) -> CudaResult<()> {
    let p = bn_of(d)?;
    if p.s < 2 {
        return Err(geometry(
            KERNEL,
            "batch norm in training mode needs more than one value per channel",
        ));
    }
    check_f32(KERNEL, "x", x, p.len())?;
    check_f32(KERNEL, "y", y, p.len())?;
    for (what, b) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("mean", mean),
        ("rstd", rstd),
    ] {
        check_f32(KERNEL, what, b, p.c)?;
    }
    let var = dev.alloc_f32(p.c)?;
    gn_stats(dev, &p, x, mean, rstd, Some(&var))?;
    Args::new()
        .buf(mean)
        .buf(&var)
        .push(i64_of(p.s))
        .push(d.momentum as f32)
        .push(p.c as i32)
        .buf(running_mean)
        .buf(running_var)
        .launch(dev, "bn_update_running", grid_1d(dev, p.c))?;
    gn_apply(dev, &p, false, x, mean, rstd, Some(gamma), Some(beta), y)
}

/// BatchNorm, eval mode: normalises with the running statistics.
pub fn batch_norm_eval_forward(
    dev: &CudaDevice,
    d: &BatchNormDims,
    x: &DeviceBuffer,
    gamma: &DeviceBuffer,
    beta: &DeviceBuffer,
    running_mean: &DeviceBuffer,
    running_var: &DeviceBuffer,
    y: &DeviceBuffer,
) -> CudaResult<()> {
    let p = bn_of(d)?;
    check_f32(KERNEL, "x", x, p.len())?;
    check_f32(KERNEL, "y", y, p.len())?;
    let (mean, rstd) = bn_eval_stats(dev, &p, running_mean, running_var)?;
    check_affine(p.c, Some(gamma), Some(beta))?;
    gn_apply(dev, &p, false, x, &mean, &rstd, Some(gamma), Some(beta), y)
}

fn bn_eval_stats(
    dev: &CudaDevice,
    p: &Gn,
    running_mean: &DeviceBuffer,
    running_var: &DeviceBuffer,
) -> CudaResult<(DeviceBuffer, DeviceBuffer)> {
    check_f32(KERNEL, "running_mean", running_mean, p.c)?;
    check_f32(KERNEL, "running_var", running_var, p.c)?;
    let mean = dev.alloc_f32(p.c)?;
    let rstd = dev.alloc_f32(p.c)?;
    Args::new()
        .buf(running_mean)
        .buf(running_var)
        .push(p.eps)
        .push(p.c as i32)
        .buf(&mean)
        .buf(&rstd)
        .launch(dev, "bn_eval_stats", grid_1d(dev, p.c))?;
    Ok((mean, rstd))
}

/// BatchNorm backward, training mode, from the saved batch statistics.
pub fn batch_norm_train_backward(
    dev: &CudaDevice,
    d: &BatchNormDims,
    x: &DeviceBuffer,
    gamma: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dgamma: Option<&DeviceBuffer>,
    dbeta: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    let p = bn_of(d)?;
    for (what, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_f32(KERNEL, what, b, p.len())?;
    }
    for (what, b) in [("gamma", gamma), ("mean", mean), ("rstd", rstd)] {
        check_f32(KERNEL, what, b, p.c)?;
    }
    check_affine(p.c, dgamma, dbeta)?;
    gn_backward(
        dev,
        &p,
        false,
        x,
        Some(gamma),
        None,
        mean,
        rstd,
        dy,
        dx,
        dgamma,
        dbeta,
        0.0,
        false,
    )
}

/// BatchNorm backward, eval mode (statistics are constants).
pub fn batch_norm_eval_backward(
    dev: &CudaDevice,
    d: &BatchNormDims,
    x: &DeviceBuffer,
    gamma: &DeviceBuffer,
    running_mean: &DeviceBuffer,
    running_var: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dgamma: Option<&DeviceBuffer>,
    dbeta: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    let p = bn_of(d)?;
    for (what, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_f32(KERNEL, what, b, p.len())?;
    }
    check_f32(KERNEL, "gamma", gamma, p.c)?;
    check_affine(p.c, dgamma, dbeta)?;
    let (mean, rstd) = bn_eval_stats(dev, &p, running_mean, running_var)?;
    gn_backward(
        dev,
        &p,
        false,
        x,
        Some(gamma),
        None,
        &mean,
        &rstd,
        dy,
        dx,
        dgamma,
        dbeta,
        0.0,
        true,
    )
}

fn check_ln(d: &LayerNormDims) -> CudaResult<()> {
    if d.dim == 0 || d.dim > LN_MAX_C {
        return Err(geometry(
            KERNEL,
            format!("layer norm dim {} not in 1..={LN_MAX_C}", d.dim),
        ));
    }
    Ok(())
}

/// LayerNorm forward over the last dim of `[rows, dim]`; saves `mean`, `rstd` (`[rows]`).
pub fn layer_norm_forward(
    dev: &CudaDevice,
    d: &LayerNormDims,
    x: &DeviceBuffer,
    gamma: Option<&DeviceBuffer>,
    beta: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
) -> CudaResult<()> {
    check_ln(d)?;
    check_f32(KERNEL, "x", x, d.rows * d.dim)?;
    check_f32(KERNEL, "y", y, d.rows * d.dim)?;
    check_f32(KERNEL, "mean", mean, d.rows)?;
    check_f32(KERNEL, "rstd", rstd, d.rows)?;
    check_affine(d.dim, gamma, beta)?;
    Args::new()
        .buf(x)
        .opt(gamma)
        .opt(beta)
        .buf(y)
        .buf(mean)
        .buf(rstd)
        .push(i32_of(KERNEL, "rows", d.rows)?)
        .push(d.dim as i32)
        .push(d.eps as f32)
        .launch(
            dev,
            "ln_fwd",
            cfg((d.rows.div_ceil(8) as u32, 1, 1), (256, 1, 1), 0),
        )
}

/// LayerNorm backward: dx = value + dx_beta * dx; dgamma, dbeta accumulate (optional).
pub fn layer_norm_backward(
    dev: &CudaDevice,
    d: &LayerNormDims,
    x: &DeviceBuffer,
    gamma: Option<&DeviceBuffer>,
    mean: &DeviceBuffer,
    rstd: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dgamma: Option<&DeviceBuffer>,
    dbeta: Option<&DeviceBuffer>,
    dx_beta: f32,
) -> CudaResult<()> {
    check_ln(d)?;
    for (what, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_f32(KERNEL, what, b, d.rows * d.dim)?;
    }
    check_f32(KERNEL, "mean", mean, d.rows)?;
    check_f32(KERNEL, "rstd", rstd, d.rows)?;
    check_affine(d.dim, gamma, None)?;
    check_affine(d.dim, dgamma, dbeta)?;
    let blocks = d.rows.div_ceil(8).min(2 * dev.sm_count() as usize).max(1);
    Args::new()
        .buf(x)
        .buf(dy)
        .opt(gamma)
        .buf(mean)
        .buf(rstd)
        .buf(dx)
        .opt(dgamma)
        .opt(dbeta)
        .push(i32_of(KERNEL, "rows", d.rows)?)
        .push(d.dim as i32)
        .push(dx_beta)
        .launch(dev, "ln_bwd", cfg((blocks as u32, 1, 1), (256, 1, 1), 0))
}
