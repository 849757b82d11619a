//! Resampling-type ops on the GPU: softmax over rows, nearest upsampling, 2x2 max pooling and
//! bicubic antialiased resize (with the CPU's [`ResizePlan`] weight tables).

use super::{check_f32, grid_1d, i32_of, i64_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::pool::MaxPoolDims;
use medvae_kernels::cpu::resize::{AxisWeights, ResizePlan};
use medvae_kernels::cpu::upsample::UpsampleDims;

const KERNEL: &str = "cuda sample";

// ------------------------------------------------------------------ softmax
/// `y = softmax(x)` over each of `rows` rows of `n`.
pub fn softmax_forward(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    rows: usize,
    n: usize,
) -> CudaResult<()> {
    check_f32(KERNEL, "x", x, rows * n)?;
    check_f32(KERNEL, "y", y, rows * n)?;
    if n == 0 {
        return Ok(());
    }
    Args::new()
        .buf(x)
        .buf(y)
        .push(i32_of(KERNEL, "cols", n)?)
        .launch(dev, "softmax_fwd", cfg((rows as u32, 1, 1), (256, 1, 1), 0))
}

/// `dx = y * (dy - sum(dy * y)) + dx_beta * dx` per row.
pub fn softmax_backward(
    dev: &CudaDevice,
    y: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    rows: usize,
    n: usize,
    dx_beta: f32,
) -> CudaResult<()> {
    for (w, b) in [("y", y), ("dy", dy), ("dx", dx)] {
        check_f32(KERNEL, w, b, rows * n)?;
    }
    if n == 0 {
        return Ok(());
    }
    Args::new()
        .buf(y)
        .buf(dy)
        .buf(dx)
        .push(i32_of(KERNEL, "cols", n)?)
        .push(dx_beta)
        .launch(dev, "softmax_bwd", cfg((rows as u32, 1, 1), (256, 1, 1), 0))
}

// ------------------------------------------------------------------ nearest upsample
fn up_args(d: &UpsampleDims) -> CudaResult<[i32; 8]> {
    if d.scale.contains(&0) {
        return Err(geometry(
            KERNEL,
            format!("upsample scale {:?} has a zero", d.scale),
        ));
    }
    let i = |w: &str, v: usize| i32_of(KERNEL, w, v);
    Ok([
        i("n", d.n)?,
        i("d", d.spatial[0])?,
        i("h", d.spatial[1])?,
        i("w", d.spatial[2])?,
        i("channels", d.channels)?,
        i("sd", d.scale[0])?,
        i("sh", d.scale[1])?,
        i("sw", d.scale[2])?,
    ])
}

/// Nearest upsampling by the integer factors of `d`.
pub fn upsample_nearest_forward(
    dev: &CudaDevice,
    d: &UpsampleDims,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
) -> CudaResult<()> {
    let a = up_args(d)?;
    check_f32(KERNEL, "x", x, d.in_len())?;
    check_f32(KERNEL, "y", y, d.out_len())?;
    let mut args = Args::new();
    args.buf(x).buf(y);
    for v in a {
        args.push(v);
    }
    args.launch(dev, "upsample_nearest_fwd", grid_1d(dev, d.out_len()))
}

/// `dx = (block sums of dy) + dx_beta * dx`.
pub fn upsample_nearest_backward(
    dev: &CudaDevice,
    d: &UpsampleDims,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dx_beta: f32,
) -> CudaResult<()> {
    let a = up_args(d)?;
    check_f32(KERNEL, "dy", dy, d.out_len())?;
    check_f32(KERNEL, "dx", dx, d.in_len())?;
    let mut args = Args::new();
    args.buf(dy).buf(dx);
    for v in a {
        args.push(v);
    }
    args.push(dx_beta)
        .launch(dev, "upsample_nearest_bwd", grid_1d(dev, d.in_len()))
}

// ------------------------------------------------------------------ 2x2 max pool
/// Pools h and w; depth slices are independent, so [n, d, h, w, c] runs as n*d images.
fn pool_args(d: &MaxPoolDims) -> CudaResult<[i32; 4]> {
    let i = |w: &str, v: usize| i32_of(KERNEL, w, v);
    Ok([
        i("n*d", d.n * d.spatial[0])?,
        i("h", d.spatial[1])?,
        i("w", d.spatial[2])?,
        i("channels", d.channels)?,
    ])
}

/// 2x2/2 max pool (floor); the window's first maximum wins, NaN propagates (torch rule).
pub fn max_pool2x2_forward(
    dev: &CudaDevice,
    d: &MaxPoolDims,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
) -> CudaResult<()> {
    let a = pool_args(d)?;
    check_f32(KERNEL, "x", x, d.in_len())?;
    check_f32(KERNEL, "y", y, d.out_len())?;
    Args::new()
        .buf(x)
        .buf(y)
        .push(a[0])
        .push(a[1])
        .push(a[2])
        .push(a[3])
        .launch(dev, "maxpool2_fwd", grid_1d(dev, d.out_len()))
}

/// Max pool backward from the forward input (the argmax is recomputed, no index buffer).
pub fn max_pool2x2_backward(
    dev: &CudaDevice,
    d: &MaxPoolDims,
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    dx_beta: f32,
) -> CudaResult<()> {
    let a = pool_args(d)?;
    check_f32(KERNEL, "x", x, d.in_len())?;
    check_f32(KERNEL, "dy", dy, d.out_len())?;
    check_f32(KERNEL, "dx", dx, d.in_len())?;
    Args::new()
        .buf(x)
        .buf(dy)
        .buf(dx)
        .push(a[0])
        .push(a[1])
        .push(a[2])
        .push(a[3])
        .push(dx_beta)
        .launch(dev, "maxpool2_bwd", grid_1d(dev, d.in_len()))
}

// ------------------------------------------------------------------ bicubic AA resize
/// One axis of a resize as the kernel reads it: output j uses input idx0[j] + t, t < taps,
/// with weight wts[j * taps + t] (zero-padded).
struct AxisTable {
    idx0: DeviceBuffer,
    wts: DeviceBuffer,
    taps: usize,
    in_len: usize,
    out_len: usize,
}

/// Dense (start, weights) table from a CSR gather table whose rows are contiguous runs.
fn dense(
    dev: &CudaDevice,
    out_len: usize,
    in_len: usize,
    rows: impl Fn(usize) -> Vec<(usize, f64)>,
) -> CudaResult<AxisTable> {
    let runs: Vec<Vec<(usize, f64)>> = (0..out_len).map(rows).collect();
    let taps = runs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut idx0 = vec![0i32; out_len];
    let mut wts = vec![0f32; out_len * taps];
    for (j, run) in runs.iter().enumerate() {
        if let Some(&(first, _)) = run.first() {
            idx0[j] = i32_of(KERNEL, "resize index", first)?;
            for (t, &(s, w)) in run.iter().enumerate() {
                if s != first + t {
                    return Err(geometry(KERNEL, "resize taps are not a contiguous run"));
                }
                wts[j * taps + t] = w as f32;
            }
        }
    }
    Ok(AxisTable {
        idx0: dev.upload(&idx0)?,
        wts: dev.upload(&wts)?,
        taps,
        in_len,
        out_len,
    })
}

/// Forward (output-major) and transposed (input-major) tables of one axis.
fn axis_tables(dev: &CudaDevice, a: &AxisWeights) -> CudaResult<(AxisTable, AxisTable)> {
    let (off, src, w) = (a.offsets(), a.source(), a.weights());
    let fwd = dense(dev, a.dest_len(), a.source_len(), |j| {
        (off[j]..off[j + 1]).map(|k| (src[k], w[k])).collect()
    })?;
    let mut by_input: Vec<Vec<(usize, f64)>> = vec![Vec::new(); a.source_len()];
    for j in 0..a.dest_len() {
        for k in off[j]..off[j + 1] {
            by_input[src[k]].push((j, w[k]));
        }
    }
    let bwd = dense(dev, a.source_len(), a.dest_len(), |s| by_input[s].clone())?;
    Ok((fwd, bwd))
}

/// A [`ResizePlan`]'s tables on the device (build once per geometry).
pub struct GpuResizePlan {
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    /// (forward, transposed) tables of the height and width axes; None when the size is unchanged.
    rows: Option<(AxisTable, AxisTable)>,
    cols: Option<(AxisTable, AxisTable)>,
}

impl GpuResizePlan {
    pub fn new(dev: &CudaDevice, plan: &ResizePlan) -> CudaResult<Self> {
        let (in_hw, out_hw) = (plan.in_hw(), plan.out_hw());
        let rows = (in_hw[0] != out_hw[0])
            .then(|| axis_tables(dev, plan.height_weights()))
            .transpose()?;
        let cols = (in_hw[1] != out_hw[1])
            .then(|| axis_tables(dev, plan.width_weights()))
            .transpose()?;
        Ok(GpuResizePlan {
            in_hw,
            out_hw,
            rows,
            cols,
        })
    }
}

/// One pass over `[outer, len, inner]`.
fn resample(
    dev: &CudaDevice,
    t: &AxisTable,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    outer: usize,
    inner: usize,
) -> CudaResult<()> {
    Args::new()
        .buf(x)
        .buf(y)
        .push(i64_of(outer))
        .push(i32_of(KERNEL, "in len", t.in_len)?)
        .push(i32_of(KERNEL, "out len", t.out_len)?)
        .push(i64_of(inner))
        .buf(&t.idx0)
        .buf(&t.wts)
        .push(t.taps as i32)
        .launch(
            dev,
            "resample_axis_fwd",
            grid_1d(dev, outer * t.out_len * inner),
        )
}

/// Width pass then height pass, as the CPU kernel (and PyTorch) do; `bwd` selects the
/// transposed tables, whose passes commute the same way.
fn separable(
    dev: &CudaDevice,
    p: &GpuResizePlan,
    bwd: bool,
    n: usize,
    c: usize,
    src: &DeviceBuffer,
    dst: &DeviceBuffer,
) -> CudaResult<()> {
    let (src_hw, dst_hw) = if bwd {
        (p.out_hw, p.in_hw)
    } else {
        (p.in_hw, p.out_hw)
    };
    let cols = p.cols.as_ref().map(|(f, b)| if bwd { b } else { f });
    let rows = p.rows.as_ref().map(|(f, b)| if bwd { b } else { f });
    match (cols, rows) {
        (None, None) => dev.copy(src, dst, n * src_hw[0] * src_hw[1] * c * 4),
        (Some(ct), None) => resample(dev, ct, src, dst, n * src_hw[0], c),
        (None, Some(rt)) => resample(dev, rt, src, dst, n, src_hw[1] * c),
        (Some(ct), Some(rt)) => {
            let mid = dev.alloc_f32(n * src_hw[0] * dst_hw[1] * c)?;
            resample(dev, ct, src, &mid, n * src_hw[0], c)?;
            resample(dev, rt, &mid, dst, n, dst_hw[1] * c)
        }
    }
}

/// Bicubic antialiased resize: x `[n, in_h, in_w, c]` -> y `[n, out_h, out_w, c]`.
pub fn resize_forward(
    dev: &CudaDevice,
    p: &GpuResizePlan,
    n: usize,
    c: usize,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
) -> CudaResult<()> {
    check_f32(KERNEL, "x", x, n * p.in_hw[0] * p.in_hw[1] * c)?;
    check_f32(KERNEL, "y", y, n * p.out_hw[0] * p.out_hw[1] * c)?;
    separable(dev, p, false, n, c, x, y)
}

/// The transpose: dy `[n, out_h, out_w, c]` -> dx `[n, in_h, in_w, c]` (overwritten).
pub fn resize_backward(
    dev: &CudaDevice,
    p: &GpuResizePlan,
    n: usize,
    c: usize,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
) -> CudaResult<()> {
    check_f32(KERNEL, "dy", dy, n * p.out_hw[0] * p.out_hw[1] * c)?;
    check_f32(KERNEL, "dx", dx, n * p.in_hw[0] * p.in_hw[1] * c)?;
    separable(dev, p, true, n, c, dy, dx)
}
