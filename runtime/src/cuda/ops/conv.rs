//! Convolution 2D/3D on the GPU: implicit GEMM on tensor cores (TF32 or BF16, f32 accumulate)
//! or the direct f32 kernels, with the CPU kernels' geometry ([`ConvGeometry`]) and semantics.

use super::{check_f32, conv_bf16, conv_thin, grid_1d, i32_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv";

/// `ConvGeom` of `kernels/cuda/medvae_conv.cuh`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: i32,
    pub id: i32,
    pub ih: i32,
    pub iw: i32,
    pub cin: i32,
    pub od: i32,
    pub oh: i32,
    pub ow: i32,
    pub cout: i32,
    pub kd: i32,
    pub kh: i32,
    pub kw: i32,
    pub sd: i32,
    pub sh: i32,
    pub sw: i32,
    pub pd: i32,
    pub ph: i32,
    pub pw: i32,
}
const _: () = assert!(std::mem::size_of::<ConvGeom>() == 72);
// SAFETY: #[repr(C)] of 18 i32, the layout of the C struct.
unsafe impl super::KernelArg for ConvGeom {}

impl ConvGeom {
    /// From a validated [`ConvGeometry`]; every GEMM extent must fit the kernels' 32-bit
    /// indices (element offsets are 64-bit).
    pub fn from_geometry(g: &ConvGeometry) -> CudaResult<Self> {
        g.validate()?;
        let o = g.out_spatial();
        let i = |what: &str, v: usize| i32_of(KERNEL, what, v);
        let taps = g.kernel.iter().product::<usize>();
        i("output pixels", g.batch * o.iter().product::<usize>())?;
        i(
            "input pixels",
            g.batch * g.in_spatial.iter().product::<usize>(),
        )?;
        i("taps*cin", taps * g.cin)?;
        i("taps*cout", taps * g.cout)?;
        Ok(ConvGeom {
            n: i("batch", g.batch)?,
            id: i("d", g.in_spatial[0])?,
            ih: i("h", g.in_spatial[1])?,
            iw: i("w", g.in_spatial[2])?,
            cin: i("cin", g.cin)?,
            od: i("od", o[0])?,
            oh: i("oh", o[1])?,
            ow: i("ow", o[2])?,
            cout: i("cout", g.cout)?,
            kd: i("kd", g.kernel[0])?,
            kh: i("kh", g.kernel[1])?,
            kw: i("kw", g.kernel[2])?,
            sd: i("sd", g.stride[0])?,
            sh: i("sh", g.stride[1])?,
            sw: i("sw", g.stride[2])?,
            pd: i("pd", g.pad_lo[0])?,
            ph: i("ph", g.pad_lo[1])?,
            pw: i("pw", g.pad_lo[2])?,
        })
    }
}

/// Arithmetic of the convolution GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPrecision {
    /// Direct f32 kernels (reference; no tensor cores).
    Fp32,
    /// Tensor cores, TF32 inputs, f32 accumulation.
    Tf32,
    /// Tensor cores, BF16 inputs, f32 accumulation.
    Bf16,
}

impl ConvPrecision {
    fn tag(self) -> &'static str {
        match self {
            ConvPrecision::Fp32 => "fp32",
            ConvPrecision::Tf32 => "tf32",
            ConvPrecision::Bf16 => "bf16",
        }
    }
    /// k-tile of the implicit GEMM (the streamed BF16 kernels share it: conv_bf16::BK).
    fn bk(self) -> usize {
        match self {
            ConvPrecision::Bf16 => conv_bf16::BK,
            _ => 16,
        }
    }
}

/// Block tile: 128x128 (256 threads) when there are enough tiles to fill the device, else
/// 64x64 (128 threads).
pub(super) fn tile(dev: &CudaDevice, m: usize, n: usize) -> (usize, u32, &'static str) {
    tile_for(dev.sm_count() as usize, m, n)
}

/// [`tile`] for a device of `sm_count` multiprocessors.
fn tile_for(sm_count: usize, m: usize, n: usize) -> (usize, u32, &'static str) {
    let big_blocks = m.div_ceil(128) * n.div_ceil(128);
    if n > 64 && big_blocks >= 2 * sm_count {
        (128, 256, "128x128")
    } else {
        (64, 128, "64x64")
    }
}

/// Resident weight-gradient blocks per SM forced by `MEDVAE_WGRAD_BLOCKS_PER_SM` (1–64; for
/// tuning on a new card), else `None`.
fn wgrad_blocks_per_sm() -> Option<usize> {
    static PER_SM: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *PER_SM.get_or_init(|| {
        std::env::var("MEDVAE_WGRAD_BLOCKS_PER_SM")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| (1..=64).contains(&v))
    })
}

/// Weight-gradient block tile forced by `MEDVAE_WGRAD_TILE=128x128` or `64x64` (for tuning on
/// a new card), else `None`.
fn wgrad_tile() -> Option<(usize, u32, &'static str)> {
    static FORCED: std::sync::OnceLock<Option<(usize, u32, &'static str)>> =
        std::sync::OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("MEDVAE_WGRAD_TILE").as_deref() {
        Ok("128x128") => Some((128, 256, "128x128")),
        Ok("64x64") => Some((64, 128, "64x64")),
        _ => None,
    })
}

/// Default blocks per SM of the staged weight-gradient kernels. Was 2 until measured on an
/// H200 (docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM: usize = 32;
/// The same for the streamed kernels (H100 sweep of 4, 8 and 32, docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM_STREAMED: usize = 8;

/// Each `(name, buffer, f32 needed)` must be large enough.
fn check_all(operands: &[(&'static str, &DeviceBuffer, usize)]) -> CudaResult<()> {
    operands
        .iter()
        .try_for_each(|(what, b, n)| check_f32(KERNEL, what, b, *n))
}

/// `y = conv(x, w) + bias + beta * y`. x `[N, D, H, W, Cin]`, w `[kd, kh, kw, Cin, Cout]`,
/// y `[N, Do, Ho, Wo, Cout]`; `beta = 0` overwrites y without reading it.
pub fn conv_forward(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    bias: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let cg = ConvGeom::from_geometry(g)?;
    check_all(&[
        ("x", x, g.input_len()),
        ("w", w, g.weight_len()),
        ("y", y, g.output_len()),
    ])?;
    if let Some(b) = bias {
        check_f32(KERNEL, "bias", b, g.cout)?;
    }
    if prec == ConvPrecision::Bf16 && conv_bf16::applies(g) {
        let xh = conv_bf16::to_bf16(dev, x, g.input_len())?;
        let wh = conv_bf16::to_bf16(dev, w, g.weight_len())?;
        return conv_bf16::forward(dev, g, cg, &xh, &wh, bias, y, beta);
    }
    if prec != ConvPrecision::Fp32 && conv_thin::applies(g) {
        return conv_thin::forward(dev, g, cg, x, w, bias, y, beta);
    }
    let mut a = Args::new();
    a.push(cg).buf(x).buf(w).opt(bias).buf(y).push(beta);
    if prec == ConvPrecision::Fp32 {
        return a.launch(dev, "conv_direct_fwd", grid_1d(dev, g.output_len()));
    }
    let m = g.output_len() / g.cout;
    let (bm, threads, name) = tile(dev, m, g.cout);
    let grid = (m.div_ceil(bm) as u32, g.cout.div_ceil(bm) as u32, 1);
    a.launch(
        dev,
        &format!("conv_fwd_{}_{name}", prec.tag()),
        cfg(grid, (threads, 1, 1), 0),
    )
}

/// `dx = conv^T(dy, w) + beta * dx` (the data gradient; `beta = 0` overwrites).
pub fn conv_backward_data(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    dy: &DeviceBuffer,
    w: &DeviceBuffer,
    dx: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    conv_backward(
        dev,
        g,
        prec,
        None,
        Some(w),
        dy,
        Some((dx, beta)),
        None,
        None,
    )
}

/// `dw += x^T dy` and, when given, `dbias += sum over pixels of dy` (parameter gradients
/// accumulate, as on the CPU).
pub fn conv_backward_weight(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    dw: &DeviceBuffer,
    dbias: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    conv_backward(dev, g, prec, Some(x), None, dy, None, Some(dw), dbias)
}

/// The gradients of a convolution in one call: `dx = conv^T(dy, w) + beta * dx` when `dx` is
/// given (then `w` is needed), `dw += x^T dy` when `dw` is (then `x` is), `dbias += Σ dy` when
/// `dbias` is. On the streamed BF16 path dy is rounded to bf16 once for both GEMMs.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    x: Option<&DeviceBuffer>,
    w: Option<&DeviceBuffer>,
    dy: &DeviceBuffer,
    dx: Option<(&DeviceBuffer, f32)>,
    dw: Option<&DeviceBuffer>,
    dbias: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    let dx = dx.map(|(buf, beta)| (DataGradientOut::Into(buf), beta));
    backward(dev, g, prec, x, w, dy, dx, dw, dbias).map(drop)
}

/// [`conv_backward`] with the data gradient (`beta = 0`) written into a new buffer, which is
/// returned. The buffer is allocated after the weight gradient has run, when that GEMM's bf16
/// copy of x is already freed: the backward's peak memory holds one of the two, not both.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_new_dx(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    x: Option<&DeviceBuffer>,
    w: &DeviceBuffer,
    dy: &DeviceBuffer,
    dw: Option<&DeviceBuffer>,
    dbias: Option<&DeviceBuffer>,
) -> CudaResult<DeviceBuffer> {
    let dx = Some((DataGradientOut::New, 0.0));
    backward(dev, g, prec, x, Some(w), dy, dx, dw, dbias)?
        .ok_or_else(|| geometry(KERNEL, "the data gradient was not produced"))
}

/// Where the backward writes the data gradient.
enum DataGradientOut<'a> {
    Into(&'a DeviceBuffer),
    /// A new buffer of the input's size, allocated once the parameter gradients are done.
    New,
}

/// The shared body of [`conv_backward`] and [`conv_backward_new_dx`]: checks, dy rounded once,
/// the parameter gradients, then the data gradient (returned when it is a new buffer).
#[allow(clippy::too_many_arguments)]
fn backward(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    x: Option<&DeviceBuffer>,
    w: Option<&DeviceBuffer>,
    dy: &DeviceBuffer,
    dx: Option<(DataGradientOut<'_>, f32)>,
    dw: Option<&DeviceBuffer>,
    dbias: Option<&DeviceBuffer>,
) -> CudaResult<Option<DeviceBuffer>> {
    let cg = ConvGeom::from_geometry(g)?;
    check_all(&[("dy", dy, g.output_len())])?;
    let dx = match (dx, w) {
        (Some((out, beta)), Some(w)) => {
            check_all(&[("w", w, g.weight_len())])?;
            if let DataGradientOut::Into(buf) = out {
                check_all(&[("dx", buf, g.input_len())])?;
            }
            Some((out, w, beta))
        }
        (Some(_), None) => {
            return Err(geometry(KERNEL, "the data gradient needs the weights w"));
        }
        (None, _) => None,
    };
    let x = match (dw, x) {
        (Some(dw), Some(x)) => {
            check_all(&[("x", x, g.input_len()), ("dw", dw, g.weight_len())])?;
            Some(x)
        }
        (Some(_), None) => {
            return Err(geometry(KERNEL, "the weight gradient needs the input x"));
        }
        (None, _) => None,
    };
    if let Some(b) = dbias {
        check_f32(KERNEL, "dbias", b, g.cout)?;
    }
    // Streamed BF16: round dy once (x and w as needed), then the bf16-operand kernels.
    let gemms = dx.is_some() || x.is_some();
    let dyh = if gemms && prec == ConvPrecision::Bf16 && conv_bf16::applies(g) {
        Some(conv_bf16::to_bf16(dev, dy, g.output_len())?)
    } else {
        None
    };
    // Parameter gradients first: the weight gradient's bf16 copy of x is freed when it returns,
    // before the data gradient allocates anything.
    if let (Some(x), Some(dw)) = (x, dw) {
        weight_gradient(dev, g, cg, prec, x, dy, dyh.as_ref(), dw)?;
    }
    if let Some(db) = dbias {
        let pixels = g.output_len() / g.cout;
        super::loss::reduce_cols_acc(dev, dy, pixels, g.cout, db)?;
    }
    let Some((out, w, beta)) = dx else {
        return Ok(None);
    };
    match out {
        DataGradientOut::Into(dx) => {
            data_gradient(dev, g, cg, prec, dy, dyh.as_ref(), w, dx, beta)?;
            Ok(None)
        }
        DataGradientOut::New => {
            let dx = dev.alloc_f32(g.input_len())?;
            data_gradient(dev, g, cg, prec, dy, dyh.as_ref(), w, &dx, beta)?;
            Ok(Some(dx))
        }
    }
}

/// The data gradient (buffers checked); `dyh` is dy in bf16 on the streamed path.
#[allow(clippy::too_many_arguments)]
fn data_gradient(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    prec: ConvPrecision,
    dy: &DeviceBuffer,
    dyh: Option<&DeviceBuffer>,
    w: &DeviceBuffer,
    dx: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    if prec != ConvPrecision::Fp32 && conv_thin::applies(g) {
        return conv_thin::backward_data(dev, g, cg, dy, w, dx, beta);
    }
    if prec != ConvPrecision::Fp32 {
        if let Some(gt) = transposed_geometry(g) {
            // Stride 1: a forward convolution of dy with flipped, transposed weights (the
            // forward kernels run about twice the data-gradient kernels' rate, BENCHMARKS.md).
            let taps = g.kernel.iter().product::<usize>();
            let wt = dev.alloc_f32(g.weight_len())?;
            Args::new()
                .buf(w)
                .buf(&wt)
                .push(i32_of(KERNEL, "taps", taps)?)
                .push(i32_of(KERNEL, "cin", g.cin)?)
                .push(i32_of(KERNEL, "cout", g.cout)?)
                .launch(
                    dev,
                    "conv_weight_flip_transpose",
                    grid_1d(dev, g.weight_len()),
                )?;
            return match dyh {
                Some(dyh) => {
                    let wth = conv_bf16::to_bf16(dev, &wt, g.weight_len())?;
                    let cgt = ConvGeom::from_geometry(&gt)?;
                    conv_bf16::forward(dev, &gt, cgt, dyh, &wth, None, dx, beta)
                }
                None => conv_forward(dev, &gt, prec, dy, &wt, None, dx, beta),
            };
        }
        if let Some(dyh) = dyh {
            let wh = conv_bf16::to_bf16(dev, w, g.weight_len())?;
            return conv_bf16::backward_data(dev, g, cg, dyh, &wh, dx, beta);
        }
    }
    let mut a = Args::new();
    a.push(cg).buf(dy).buf(w).buf(dx).push(beta);
    if prec == ConvPrecision::Fp32 {
        return a.launch(dev, "conv_direct_dgrad", grid_1d(dev, g.input_len()));
    }
    let m = g.input_len() / g.cin;
    let (bm, threads, name) = tile(dev, m, g.cin);
    let grid = (m.div_ceil(bm) as u32, g.cin.div_ceil(bm) as u32, 1);
    a.launch(
        dev,
        &format!("conv_dgrad_{}_{name}", prec.tag()),
        cfg(grid, (threads, 1, 1), 0),
    )
}

/// The forward geometry whose output is the data gradient of `g`: dy as the input, Cin and
/// Cout swapped, padding `k − 1 − p` on each side. Only for stride 1 with `p ≤ k − 1` (then its
/// output has exactly `g`'s input size); `None` otherwise.
fn transposed_geometry(g: &ConvGeometry) -> Option<ConvGeometry> {
    let mut gt = ConvGeometry {
        batch: g.batch,
        in_spatial: g.out_spatial(),
        cin: g.cout,
        cout: g.cin,
        kernel: g.kernel,
        stride: [1; 3],
        pad_lo: [0; 3],
        pad_hi: [0; 3],
    };
    for i in 0..3 {
        if g.stride[i] != 1 || g.pad_lo[i] >= g.kernel[i] || g.pad_hi[i] >= g.kernel[i] {
            return None;
        }
        gt.pad_lo[i] = g.kernel[i] - 1 - g.pad_lo[i];
        gt.pad_hi[i] = g.kernel[i] - 1 - g.pad_hi[i];
    }
    (gt.out_spatial() == g.in_spatial).then_some(gt)
}

/// How a weight-gradient GEMM (taps·Cin × Cout over the pixels) is cut: the block tile, and
/// the pixel reduction split across gridDim.z (splits add into dw atomically).
pub(super) struct WgradPlan {
    pub(super) edge: usize,
    pub(super) threads: u32,
    pub(super) name: &'static str,
    pub(super) grid: (u32, u32),
    pub(super) splits: usize,
    pub(super) per_split: usize,
}

/// The plan for `g` on `dev` with the k-tile of `prec`'s kernels (the streamed ones when
/// `streamed`), honouring `MEDVAE_WGRAD_TILE` / `MEDVAE_WGRAD_BLOCKS_PER_SM`.
fn wgrad_plan(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    streamed: bool,
) -> CudaResult<WgradPlan> {
    let forced = (wgrad_tile(), wgrad_blocks_per_sm());
    plan_weight_gradient(dev.sm_count() as usize, g, prec.bk(), streamed, forced)
}

/// The split keeps `blocks_per_sm` blocks per SM with at least 8 k-tiles (of `k_tile` pixels)
/// per split: the GEMMs are tall and thin (~10⁵–10⁶ pixels), and without splits a few dozen
/// blocks would run the whole reduction.
fn plan_weight_gradient(
    sm_count: usize,
    g: &ConvGeometry,
    k_tile: usize,
    streamed: bool,
    (forced_tile, forced_per_sm): (Option<(usize, u32, &'static str)>, Option<usize>),
) -> CudaResult<WgradPlan> {
    let m = g.weight_len() / g.cout;
    // Measured on an H100 (docs/BENCHMARKS.md): the streamed kernels are fastest with 128x128
    // tiles and 8 blocks per SM, the staged ones with the forward rule and 32.
    let (default_tile, default_per_sm) = if streamed && g.cout > 64 {
        ((128, 256, "128x128"), WGRAD_BLOCKS_PER_SM_STREAMED)
    } else if streamed {
        ((64, 128, "64x64"), WGRAD_BLOCKS_PER_SM_STREAMED)
    } else {
        (tile_for(sm_count, m, g.cout), WGRAD_BLOCKS_PER_SM)
    };
    let (edge, threads, name) = forced_tile.unwrap_or(default_tile);
    let (gm, gn) = (m.div_ceil(edge), g.cout.div_ceil(edge));
    let pixels = g.output_len() / g.cout;
    let kt = pixels.div_ceil(k_tile).max(1);
    let per_sm = forced_per_sm.unwrap_or(default_per_sm);
    let want = (per_sm * sm_count).div_ceil(gm * gn).max(1);
    let splits = want.min(kt.div_ceil(8)).max(1);
    let per_split = kt.div_ceil(splits);
    let splits = kt.div_ceil(per_split);
    if splits > 65535 {
        return Err(geometry(
            KERNEL,
            format!("{splits} weight-gradient splits exceed the grid limit"),
        ));
    }
    Ok(WgradPlan {
        edge,
        threads,
        name,
        grid: (gm as u32, gn as u32),
        splits,
        per_split,
    })
}

/// The weight gradient (buffers checked); `dyh` is dy in bf16 on the streamed path.
#[allow(clippy::too_many_arguments)]
fn weight_gradient(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    prec: ConvPrecision,
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    dyh: Option<&DeviceBuffer>,
    dw: &DeviceBuffer,
) -> CudaResult<()> {
    if prec == ConvPrecision::Fp32 {
        let mut a = Args::new();
        a.push(cg).buf(x).buf(dy).buf(dw);
        return a.launch(dev, "conv_direct_wgrad", grid_1d(dev, g.weight_len()));
    }
    if conv_thin::serves_weight_gradient(g) {
        return conv_thin::backward_weight(dev, g, cg, x, dy, dw);
    }
    let plan = wgrad_plan(dev, g, prec, dyh.is_some())?;
    if let Some(dyh) = dyh {
        let xh = conv_bf16::to_bf16(dev, x, g.input_len())?;
        return conv_bf16::backward_weight(dev, cg, &xh, dyh, dw, &plan);
    }
    let mut a = Args::new();
    a.push(cg)
        .buf(x)
        .buf(dy)
        .buf(dw)
        .push(i32_of(KERNEL, "tiles per split", plan.per_split)?);
    a.launch(
        dev,
        &format!("conv_wgrad_{}_{}", prec.tag(), plan.name),
        cfg(
            (plan.grid.0, plan.grid.1, plan.splits as u32),
            (plan.threads, 1, 1),
            0,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use medvae_kernels::cpu::conv::{conv_backward_data, conv_forward};

    /// Every weight-gradient plan covers every k-tile of pixels exactly once (the splits tile
    /// the range, the last one possibly short), its grid covers the whole taps·Cin × Cout
    /// matrix, and a split gets at least 8 k-tiles where there are that many.
    #[test]
    fn weight_gradient_plans_cover_the_reduction() {
        let shapes = [
            ConvGeometry::conv2d(8, [256, 256], 128, 128, 3, 1, 1),
            ConvGeometry::conv2d(8, [256, 256], 1, 128, 3, 1, 1),
            ConvGeometry::conv2d(2, [7, 5], 16, 24, 4, 2, 1),
            ConvGeometry::conv2d(1, [1, 1], 8, 8, 1, 1, 0),
            ConvGeometry::conv3d(1, [64, 64, 64], 64, 64, 3, 1, 1),
            ConvGeometry::conv2d(64, [512, 512], 512, 3, 3, 1, 1),
        ];
        for g in &shapes {
            for (k_tile, streamed) in [(16, false), (32, false), (32, true)] {
                for sm_count in [1, 132] {
                    let p = plan_weight_gradient(sm_count, g, k_tile, streamed, (None, None))
                        .expect("plan");
                    let kt = (g.output_len() / g.cout).div_ceil(k_tile).max(1);
                    let what = format!("{g:?} k-tile {k_tile} streamed {streamed} SMs {sm_count}");
                    assert!(p.splits >= 1 && p.per_split >= 1, "{what}");
                    assert!(p.splits * p.per_split >= kt, "{what}: k-tiles left out");
                    assert!((p.splits - 1) * p.per_split < kt, "{what}: an empty split");
                    assert!(p.per_split >= kt.min(8), "{what}: splits too thin");
                    let m = g.weight_len() / g.cout;
                    assert!(p.grid.0 as usize * p.edge >= m, "{what}: rows left out");
                    assert!(
                        p.grid.1 as usize * p.edge >= g.cout,
                        "{what}: columns left out"
                    );
                    assert_eq!(p.threads as usize, 2 * p.edge, "{what}: tile and block");
                }
            }
        }
        // Forced settings are taken as given; an impossible grid is an error, not a panic.
        let g = &shapes[0];
        let p = plan_weight_gradient(132, g, 32, true, (Some((64, 128, "64x64")), Some(4)))
            .expect("plan");
        assert_eq!((p.edge, p.name), (64, "64x64"));
        let huge = plan_weight_gradient(1 << 26, g, 32, true, (None, Some(64)));
        assert!(huge.is_err() || huge.unwrap().splits <= 65535);
    }

    /// The host twin of `conv_weight_flip_transpose` (same index formula as the kernel).
    fn flip_transpose(w: &[f64], taps: usize, cin: usize, cout: usize) -> Vec<f64> {
        let mut wt = vec![0.0; w.len()];
        for (i, v) in wt.iter_mut().enumerate() {
            let (ci, r) = (i % cin, i / cin);
            let (co, t) = (r % cout, r / cout);
            *v = w[((taps - 1 - t) * cin + ci) * cout + co];
        }
        wt
    }

    /// The GPU's stride-1 data gradient (a forward convolution of dy with flipped, transposed
    /// weights) computed with the CPU kernels must equal the CPU's data gradient: checks the
    /// geometry and the flip without a GPU.
    #[test]
    fn stride_one_data_gradient_is_a_flipped_forward() {
        let cases = [
            ConvGeometry::conv2d(2, [7, 9], 3, 5, 3, 1, 1),
            ConvGeometry::conv2d(1, [6, 5], 4, 2, 1, 1, 0),
            ConvGeometry::conv2d(1, [8, 8], 2, 3, 4, 1, 1), // PatchGAN's k4 s1 p1
            ConvGeometry {
                batch: 1,
                in_spatial: [4, 5, 6],
                cin: 2,
                cout: 3,
                kernel: [3, 3, 3],
                stride: [1; 3],
                pad_lo: [1; 3],
                pad_hi: [1; 3],
            },
        ];
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for g in cases {
            let gt = transposed_geometry(&g).expect("stride 1 qualifies");
            let dy: Vec<f64> = (0..g.output_len()).map(|_| next()).collect();
            let w: Vec<f64> = (0..g.weight_len()).map(|_| next()).collect();
            let mut want = vec![0.0; g.input_len()];
            conv_backward_data(&g, &dy, &w, &mut want).unwrap();
            let taps = g.kernel.iter().product();
            let wt = flip_transpose(&w, taps, g.cin, g.cout);
            let mut got = vec![0.0; g.input_len()];
            conv_forward(&gt, &dy, &wt, None, &mut got).unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f64, f64::max);
            assert!(err < 1e-12, "{g:?}: max error {err}");
        }
        let strided = ConvGeometry::conv2d(1, [8, 8], 2, 3, 3, 2, 1);
        assert!(transposed_geometry(&strided).is_none());
    }
}
