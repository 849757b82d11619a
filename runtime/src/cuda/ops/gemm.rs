//! Dense batched GEMM on tensor cores and the linear layer built on it (PyTorch weight layout
//! `[out, in]`, as the CPU kernel). BF16 products whose extents allow it run the streamed
//! kernels of `gemm_bf16.cu` on operands rounded once (see [`super::conv_bf16`]); TF32 ones
//! the streamed kernels of `gemm_tf32.cu` on the f32 operands in place, once switched on (see
//! [`super::conv_tf32`]).

use super::{check_f32, conv_bf16, conv_tf32, i32_of, i64_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::ops::conv::ConvPrecision;
use crate::cuda::{CudaDevice, DeviceBuffer};
use cudarc::driver::LaunchConfig;
use medvae_kernels::cpu::linear::LinearDims;

const KERNEL: &str = "cuda gemm";

/// `GemmGeom` of `kernels/cuda/medvae_gemm.cuh`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct GemmGeom {
    m: i32,
    n: i32,
    k: i32,
    lda: i32,
    ldb: i32,
    ldc: i32,
    alpha: f32,
    beta: f32,
    sa: i64,
    sb: i64,
    sc: i64,
}
const _: () = assert!(std::mem::size_of::<GemmGeom>() == 56);
// SAFETY: #[repr(C)] with the field order and types of the C struct (i64 at offset 32).
unsafe impl super::KernelArg for GemmGeom {}

/// How A and B are stored (row-major, with their leading dimensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmLayout {
    /// A `[M, K]`, B `[K, N]`.
    Nn,
    /// A `[M, K]`, B `[N, K]` (C = A B^T).
    Nt,
    /// A `[K, M]`, B `[K, N]` (C = A^T B).
    Tn,
}

/// A matrix inside a buffer: element offset, leading dimension, batch stride (0 = shared).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub buf: &'a DeviceBuffer,
    pub offset: usize,
    pub ld: usize,
    pub batch_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major matrix with `cols` columns at the start of `buf`.
    pub fn dense(buf: &'a DeviceBuffer, cols: usize, batch_stride: usize) -> Self {
        MatRef {
            buf,
            offset: 0,
            ld: cols,
            batch_stride,
        }
    }
    fn check(&self, what: &'static str, rows: usize, cols: usize, batch: usize) -> CudaResult<()> {
        if self.ld < cols {
            return Err(geometry(
                KERNEL,
                format!("{what}: leading dimension {} < {cols} columns", self.ld),
            ));
        }
        if rows == 0 || cols == 0 || batch == 0 {
            return Ok(());
        }
        let last = self.offset + (batch - 1) * self.batch_stride + (rows - 1) * self.ld + cols;
        check_f32(KERNEL, what, self.buf, last)
    }
    fn ptr(&self) -> u64 {
        self.buf.ptr() + 4 * self.offset as u64
    }
    /// Elements from the first to one past the last of a `rows x cols` matrix per batch entry.
    fn span(&self, rows: usize, cols: usize, batch: usize) -> usize {
        if rows == 0 || cols == 0 || batch == 0 {
            return 0;
        }
        (batch - 1) * self.batch_stride + (rows - 1) * self.ld + cols
    }
}

/// Every run of eight elements along a contiguous side stays in its row: contiguous extents,
/// leading dimensions and batch strides are multiples of 8 (what the streamed kernels,
/// `gemm_bf16.cu` and `gemm_tf32.cu`, need of the product).
fn runs_fit(layout: GemmLayout, (m, n, k): (usize, usize, usize), a: &MatRef, b: &MatRef) -> bool {
    let a_contig = if layout == GemmLayout::Tn { m } else { k };
    let b_contig = if layout == GemmLayout::Nt { k } else { n };
    [
        a_contig,
        b_contig,
        a.ld,
        b.ld,
        a.batch_stride,
        b.batch_stride,
    ]
    .iter()
    .all(|v| v.is_multiple_of(8))
}

/// The streamed BF16 kernels take the product: BF16 streaming is on and the runs fit (the
/// operands are copied to fresh bf16 buffers, so their offsets do not matter).
fn streamable(layout: GemmLayout, mnk: (usize, usize, usize), a: &MatRef, b: &MatRef) -> bool {
    conv_bf16::streamed() && runs_fit(layout, mnk, a, b)
}

/// The streamed TF32 kernels take the product: switched on (`MEDVAE_CONV_TF32=streamed`), the
/// runs fit, and the operands start at multiples of 8 elements (they are read in place with
/// 16-byte copies; buffers themselves are 256-byte aligned).
fn streamable_tf32(layout: GemmLayout, mnk: (usize, usize, usize), a: &MatRef, b: &MatRef) -> bool {
    conv_tf32::streamed_tf32()
        && runs_fit(layout, mnk, a, b)
        && a.offset.is_multiple_of(8)
        && b.offset.is_multiple_of(8)
}

/// `C[b] = alpha * op(A[b]) op(B[b]) + bias + beta * C[b]` for `b < batch`: on tensor cores for
/// TF32 and BF16, on the CUDA cores in plain f32 for Fp32 (`gemm_f32.cu`). `C` is `[M, N]` and
/// is not read when `beta == 0`; `bias` has N entries.
pub fn gemm(
    dev: &CudaDevice,
    prec: ConvPrecision,
    layout: GemmLayout,
    (m, n, k, batch): (usize, usize, usize, usize),
    a: MatRef,
    b: MatRef,
    c: MatRef,
    bias: Option<&DeviceBuffer>,
    alpha: f32,
    beta: f32,
) -> CudaResult<()> {
    let tag = match prec {
        ConvPrecision::Tf32 => "tf32",
        ConvPrecision::Bf16 => "bf16",
        ConvPrecision::Fp32 => "f32",
    };
    let (ar, ac) = if layout == GemmLayout::Tn {
        (k, m)
    } else {
        (m, k)
    };
    let (br, bc) = if layout == GemmLayout::Nt {
        (n, k)
    } else {
        (k, n)
    };
    a.check("a", ar, ac, batch)?;
    b.check("b", br, bc, batch)?;
    c.check("c", m, n, batch)?;
    if let Some(bb) = bias {
        check_f32(KERNEL, "bias", bb, n)?;
    }
    if batch > 65535 {
        return Err(geometry(KERNEL, format!("batch {batch} > 65535")));
    }
    let i = |w: &str, v: usize| i32_of(KERNEL, w, v);
    let g = GemmGeom {
        m: i("m", m)?,
        n: i("n", n)?,
        k: i("k", k)?,
        lda: i("lda", a.ld)?,
        ldb: i("ldb", b.ld)?,
        ldc: i("ldc", c.ld)?,
        alpha,
        beta,
        sa: i64_of(a.batch_stride),
        sb: i64_of(b.batch_stride),
        sc: i64_of(c.batch_stride),
    };
    let big = n > 64 && m.div_ceil(128) * n.div_ceil(128) * batch >= 2 * dev.sm_count() as usize;
    let (bm, threads, size) = if big {
        (128, 256, "128x128")
    } else {
        (64, 128, "64x64")
    };
    let suffix = match layout {
        GemmLayout::Nn => "nn",
        GemmLayout::Nt => "nt",
        GemmLayout::Tn => "tn",
    };
    let grid = (m.div_ceil(bm) as u32, n.div_ceil(bm) as u32, batch as u32);
    // Every variant takes (geometry, A, B, bias, C) with A and B as device addresses.
    let c_ptr = c.ptr();
    let launch = |a_ptr: u64, b_ptr: u64, entry: String, c: LaunchConfig| {
        Args::new()
            .push(g)
            .push(a_ptr)
            .push(b_ptr)
            .opt(bias)
            .push(c_ptr)
            .launch(dev, &entry, c)
    };
    if prec == ConvPrecision::Fp32 {
        // 64x64 tiles of 256 threads whatever the size (no tensor-core tile choice).
        let grid = (m.div_ceil(64) as u32, n.div_ceil(64) as u32, batch as u32);
        let entry = format!("gemm_f32_{suffix}");
        return launch(a.ptr(), b.ptr(), entry, cfg(grid, (256, 1, 1), 0));
    }
    if prec == ConvPrecision::Bf16 && streamable(layout, (m, n, k), &a, &b) {
        // Round each operand's span once; the bf16 copy starts at the operand's offset, so
        // the same leading dimensions and batch strides address it.
        let (ah, bh) = (
            conv_bf16::to_bf16_at(dev, a.ptr(), a.span(ar, ac, batch))?,
            conv_bf16::to_bf16_at(dev, b.ptr(), b.span(br, bc, batch))?,
        );
        let smem =
            conv_bf16::square_smem_bytes(bm, layout != GemmLayout::Tn, layout == GemmLayout::Nt);
        let entry = format!("gemm_bf16s_{size}_{suffix}");
        return launch(ah.ptr(), bh.ptr(), entry, cfg(grid, (threads, 1, 1), smem));
    }
    if prec == ConvPrecision::Tf32 && streamable_tf32(layout, (m, n, k), &a, &b) {
        let smem =
            conv_tf32::square_smem_bytes(bm, layout != GemmLayout::Tn, layout == GemmLayout::Nt);
        let entry = format!("gemm_tf32s_{size}_{suffix}");
        return launch(a.ptr(), b.ptr(), entry, cfg(grid, (threads, 1, 1), smem));
    }
    let entry = format!("gemm_{tag}_{size}_{suffix}");
    launch(a.ptr(), b.ptr(), entry, cfg(grid, (threads, 1, 1), 0))
}

/// `y = x W^T + b`: x `[rows, in]`, W `[out, in]`, y `[rows, out]` (overwritten).
pub fn linear_forward(
    dev: &CudaDevice,
    prec: ConvPrecision,
    d: &LinearDims,
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    bias: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
) -> CudaResult<()> {
    let (r, fi, fo) = (d.rows, d.in_features, d.out_features);
    gemm(
        dev,
        prec,
        GemmLayout::Nt,
        (r, fo, fi, 1),
        MatRef::dense(x, fi, 0),
        MatRef::dense(w, fi, 0),
        MatRef::dense(y, fo, 0),
        bias,
        1.0,
        0.0,
    )
}

/// Backward of [`linear_forward`]: `dx = dy W` (overwritten), `dW += dy^T x`, `db += sum dy`
/// (each optional, as the CPU kernel's `LinearGrads`).
pub fn linear_backward(
    dev: &CudaDevice,
    prec: ConvPrecision,
    d: &LinearDims,
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: Option<&DeviceBuffer>,
    dw: Option<&DeviceBuffer>,
    db: Option<&DeviceBuffer>,
) -> CudaResult<()> {
    let (r, fi, fo) = (d.rows, d.in_features, d.out_features);
    if let Some(dx) = dx {
        gemm(
            dev,
            prec,
            GemmLayout::Nn,
            (r, fi, fo, 1),
            MatRef::dense(dy, fo, 0),
            MatRef::dense(w, fi, 0),
            MatRef::dense(dx, fi, 0),
            None,
            1.0,
            0.0,
        )?;
    }
    if let Some(dw) = dw {
        gemm(
            dev,
            prec,
            GemmLayout::Tn,
            (fo, fi, r, 1),
            MatRef::dense(dy, fo, 0),
            MatRef::dense(x, fi, 0),
            MatRef::dense(dw, fi, 0),
            None,
            1.0,
            1.0,
        )?;
    }
    if let Some(db) = db {
        super::loss::reduce_cols_acc(dev, dy, r, fo, db)?;
    }
    Ok(())
}
