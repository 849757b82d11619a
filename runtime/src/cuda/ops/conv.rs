//! Convolution 2D/3D on the GPU: implicit GEMM on tensor cores (TF32 or BF16, f32 accumulate)
//! or the direct f32 kernels, with the CPU kernels' geometry ([`ConvGeometry`]) and semantics.

use super::{check_f32, grid_1d, i32_of, Args};
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
    /// k-tile of the implicit GEMM.
    fn bk(self) -> usize {
        match self {
            ConvPrecision::Bf16 => 32,
            _ => 16,
        }
    }
}

/// Block tile: 128x128 (256 threads) when there are enough tiles to fill the device, else
/// 64x64 (128 threads).
fn tile(dev: &CudaDevice, m: usize, n: usize) -> (usize, u32, &'static str) {
    let big_blocks = m.div_ceil(128) * n.div_ceil(128);
    if n > 64 && big_blocks >= 2 * dev.sm_count() as usize {
        (128, 256, "128x128")
    } else {
        (64, 128, "64x64")
    }
}

/// Target resident weight-gradient blocks per SM (`MEDVAE_WGRAD_BLOCKS_PER_SM` overrides the
/// default, for tuning on a new card).
fn wgrad_blocks_per_sm() -> usize {
    static PER_SM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PER_SM.get_or_init(|| {
        std::env::var("MEDVAE_WGRAD_BLOCKS_PER_SM")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| (1..=64).contains(&v))
            .unwrap_or(WGRAD_BLOCKS_PER_SM)
    })
}

/// Default of [`wgrad_blocks_per_sm`]. Was 2 until measured on an H200 (docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM: usize = 32;

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
    let cg = ConvGeom::from_geometry(g)?;
    check_all(&[
        ("dy", dy, g.output_len()),
        ("w", w, g.weight_len()),
        ("dx", dx, g.input_len()),
    ])?;
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
    let cg = ConvGeom::from_geometry(g)?;
    check_all(&[
        ("x", x, g.input_len()),
        ("dy", dy, g.output_len()),
        ("dw", dw, g.weight_len()),
    ])?;
    if let Some(b) = dbias {
        check_f32(KERNEL, "dbias", b, g.cout)?;
    }
    let pixels = g.output_len() / g.cout;
    if prec == ConvPrecision::Fp32 {
        let mut a = Args::new();
        a.push(cg).buf(x).buf(dy).buf(dw);
        a.launch(dev, "conv_direct_wgrad", grid_1d(dev, g.weight_len()))?;
    } else {
        let m = g.weight_len() / g.cout;
        let (bm, threads, name) = tile(dev, m, g.cout);
        let (gm, gn) = (m.div_ceil(bm), g.cout.div_ceil(bm));
        // Split the pixel reduction (splits add into dw atomically) so that the grid holds
        // `wgrad_blocks_per_sm()` blocks per SM, keeping at least 8 k-tiles per split. The
        // weight-gradient GEMMs are tall and thin (taps·Cin × Cout over ~10⁵–10⁶ pixels):
        // without enough splits a few dozen blocks run the whole reduction.
        let kt = pixels.div_ceil(prec.bk()).max(1);
        let want = (wgrad_blocks_per_sm() * dev.sm_count() as usize)
            .div_ceil(gm * gn)
            .max(1);
        let splits = want.min(kt.div_ceil(8)).max(1);
        let per_split = kt.div_ceil(splits);
        let splits = kt.div_ceil(per_split);
        if splits > 65535 {
            return Err(geometry(
                KERNEL,
                format!("{splits} weight-gradient splits exceed the grid limit"),
            ));
        }
        let mut a = Args::new();
        a.push(cg)
            .buf(x)
            .buf(dy)
            .buf(dw)
            .push(i32_of(KERNEL, "tiles per split", per_split)?);
        a.launch(
            dev,
            &format!("conv_wgrad_{}_{name}", prec.tag()),
            cfg((gm as u32, gn as u32, splits as u32), (threads, 1, 1), 0),
        )?;
    }
    if let Some(db) = dbias {
        super::loss::reduce_cols_acc(dev, dy, pixels, g.cout, db)?;
    }
    Ok(())
}
