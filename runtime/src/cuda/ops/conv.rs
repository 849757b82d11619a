//! Convolution 2D/3D on the GPU: implicit GEMM on tensor cores (TF32 or BF16, f32 accumulate)
//! or the direct f32 kernels, with the CPU kernels' geometry ([`ConvGeometry`]) and semantics.

use super::conv_plan::{tf32_wgrad_plan, tile, wgrad_plan};
use super::{
    check_f32, conv_bf16, conv_streamed, conv_tf32, conv_thin, conv_wgmma, grid_1d, i32_of, Args,
};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;
use std::ops::Deref;
use std::sync::Arc;

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
    pub(super) fn bk(self) -> usize {
        match self {
            ConvPrecision::Bf16 => conv_bf16::BK,
            _ => 16,
        }
    }
}

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
        if conv_wgmma::applies(dev, g) {
            return conv_wgmma::forward(dev, g, cg, &xh, w, bias, y, beta);
        }
        let wh = conv_bf16::to_bf16(dev, w, g.weight_len())?;
        return conv_streamed::forward(conv_bf16::BF16, dev, g, cg, &xh, &wh, bias, y, beta);
    }
    if prec != ConvPrecision::Fp32 && conv_thin::applies(g) {
        return conv_thin::forward(dev, g, cg, x, w, bias, y, beta);
    }
    if prec == ConvPrecision::Tf32 && conv_tf32::applies(g) {
        return conv_streamed::forward(conv_tf32::TF32, dev, g, cg, x, w, bias, y, beta);
    }
    let mut a = Args::new();
    a.push(cg).buf(x).buf(w).opt(bias).buf(y).push(beta);
    if prec == ConvPrecision::Fp32 {
        return a.launch(dev, "conv_direct_fwd", grid_1d(dev, g.output_len()));
    }
    let m = g.output_len() / g.cout;
    let t = tile(dev, m, g.cout);
    let grid = (m.div_ceil(t.bm) as u32, g.cout.div_ceil(t.bn) as u32, 1);
    a.launch(
        dev,
        &format!("conv_fwd_{}_{}", prec.tag(), t.name),
        cfg(grid, (t.threads, 1, 1), 0),
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
    let x = x.map(ConvInput::Borrowed);
    backward(dev, g, prec, x, w, dy, dx, dw, dbias).map(drop)
}

/// The forward input handed to the backward: borrowed from a caller who still needs it, or a
/// share of its tensor's buffer that the backward drops once the weight gradient is done (the
/// buffer is freed then when no other tensor shares it).
pub enum ConvInput<'a> {
    Borrowed(&'a DeviceBuffer),
    Shared(Arc<DeviceBuffer>),
}

impl Deref for ConvInput<'_> {
    type Target = DeviceBuffer;
    fn deref(&self) -> &DeviceBuffer {
        match self {
            ConvInput::Borrowed(b) => b,
            ConvInput::Shared(b) => b,
        }
    }
}

/// [`conv_backward`] with the data gradient (`beta = 0`) written into a new buffer, which is
/// returned. The buffer is allocated after the weight gradient has run, when that GEMM's bf16
/// copy of x is already freed, and so is x itself when handed over as [`ConvInput::Shared`]:
/// the backward's peak memory holds x or dx, not both.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_new_dx(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    x: Option<ConvInput<'_>>,
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
    x: Option<ConvInput<'_>>,
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
            check_all(&[("x", &x, g.input_len()), ("dw", dw, g.weight_len())])?;
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
    // and x itself when shared (as soon as it is rounded on the bf16 path), before the data
    // gradient allocates anything.
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
            // The streamed kernels only where their iterators also fit the transposed geometry
            // (its padding and extents differ from g's); else conv_forward picks for it.
            return match dyh {
                Some(dyh) if conv_bf16::applies(&gt) => {
                    let cgt = ConvGeom::from_geometry(&gt)?;
                    if conv_wgmma::applies(dev, &gt) {
                        return conv_wgmma::forward(dev, &gt, cgt, dyh, &wt, None, dx, beta);
                    }
                    let wth = conv_bf16::to_bf16(dev, &wt, g.weight_len())?;
                    conv_streamed::forward(
                        conv_bf16::BF16,
                        dev,
                        &gt,
                        cgt,
                        dyh,
                        &wth,
                        None,
                        dx,
                        beta,
                    )
                }
                _ => conv_forward(dev, &gt, prec, dy, &wt, None, dx, beta),
            };
        }
        if let Some(dyh) = dyh {
            let wh = conv_bf16::to_bf16(dev, w, g.weight_len())?;
            return conv_streamed::backward_data(conv_bf16::BF16, dev, g, cg, dyh, &wh, dx, beta);
        }
        if prec == ConvPrecision::Tf32 && conv_tf32::applies(g) {
            return conv_streamed::backward_data(conv_tf32::TF32, dev, g, cg, dy, w, dx, beta);
        }
    }
    let mut a = Args::new();
    a.push(cg).buf(dy).buf(w).buf(dx).push(beta);
    if prec == ConvPrecision::Fp32 {
        return a.launch(dev, "conv_direct_dgrad", grid_1d(dev, g.input_len()));
    }
    let m = g.input_len() / g.cin;
    let t = tile(dev, m, g.cin);
    let grid = (m.div_ceil(t.bm) as u32, g.cin.div_ceil(t.bn) as u32, 1);
    a.launch(
        dev,
        &format!("conv_dgrad_{}_{}", prec.tag(), t.name),
        cfg(grid, (t.threads, 1, 1), 0),
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

/// The weight gradient (buffers checked); `dyh` is dy in bf16 on the streamed path.
#[allow(clippy::too_many_arguments)]
fn weight_gradient(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    prec: ConvPrecision,
    x: ConvInput<'_>,
    dy: &DeviceBuffer,
    dyh: Option<&DeviceBuffer>,
    dw: &DeviceBuffer,
) -> CudaResult<()> {
    if prec == ConvPrecision::Fp32 {
        let mut a = Args::new();
        a.push(cg).buf(&x).buf(dy).buf(dw);
        return a.launch(dev, "conv_direct_wgrad", grid_1d(dev, g.weight_len()));
    }
    if conv_thin::serves_weight_gradient(g) {
        return conv_thin::backward_weight(dev, g, cg, &x, dy, dw);
    }
    if prec == ConvPrecision::Tf32 && conv_tf32::applies(g) {
        let plan = tf32_wgrad_plan(dev, g)?;
        return conv_streamed::backward_weight(conv_tf32::TF32, dev, cg, &x, dy, dw, &plan);
    }
    if let Some(dyh) = dyh {
        let xh = conv_bf16::to_bf16(dev, &x, g.input_len())?;
        // A shared x is released here: the bf16 GEMM reads only its rounded copy.
        drop(x);
        if conv_wgmma::applies_wgrad(dev, g) {
            return conv_wgmma::backward_weight(dev, g, cg, &xh, dyh, dw);
        }
        let plan = wgrad_plan(dev, g, prec, true)?;
        return conv_streamed::backward_weight(conv_bf16::BF16, dev, cg, &xh, dyh, dw, &plan);
    }
    let plan = wgrad_plan(dev, g, prec, false)?;
    let mut a = Args::new();
    a.push(cg)
        .buf(&x)
        .buf(dy)
        .buf(dw)
        .push(i32_of(KERNEL, "tiles per split", plan.per_split)?);
    a.launch(
        dev,
        &format!("conv_wgrad_{}_{}", prec.tag(), plan.tile.name),
        cfg(
            (plan.grid.0, plan.grid.1, plan.splits as u32),
            (plan.tile.threads, 1, 1),
            0,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use medvae_kernels::cpu::conv::{conv_backward_data, conv_forward};

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
