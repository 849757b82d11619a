//! Matrix products on the `gemm` crate: general `matmul` with transpose flags, batched `bmm`,
//! and the fully connected layer (`y = x·Wᵀ + b`, W in PyTorch's `[out, in]` layout) with its
//! backward.
//!
//! `gemm` computes `dst := α·dst + β·lhs·rhs` on strided matrices for f32 and f64 (it panics on
//! other types, so any other `Real` takes a plain loop here). Its own rayon parallelism is used
//! for large products only: thread hand-off costs more than a small product.

use crate::error::check_len;
use crate::{KernelError, Real};
use gemm::Parallelism;
use rayon::prelude::*;
use std::any::TypeId;

/// Multiply-adds above which a product runs on all rayon threads.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `C = alpha·op(A)·op(B) + beta·C` on row-major matrices: `op(A)` is `m × k` (A stored
/// `[m, k]`, or `[k, m]` when `trans_a`), `op(B)` is `k × n` (B stored `[k, n]`, or `[n, k]` when
/// `trans_b`), C is `[m, n]`. With `beta == 0` C is write-only (NaNs in it do not propagate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
}

impl Gemm {
    /// `C = A·B` (no transposes, alpha 1, beta 0).
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    fn a_len(&self) -> usize {
        self.m * self.k
    }
    fn b_len(&self) -> usize {
        self.k * self.n
    }
    fn c_len(&self) -> usize {
        self.m * self.n
    }
    fn flops(&self) -> usize {
        self.m * self.n * self.k
    }
}

/// Strides `(row, col)` of op(A) and op(B) in their storage.
fn operand_strides(g: &Gemm) -> ((isize, isize), (isize, isize)) {
    let (m, n, k) = (g.m as isize, g.n as isize, g.k as isize);
    let a = if g.trans_a { (1, m) } else { (k, 1) };
    let b = if g.trans_b { (1, k) } else { (n, 1) };
    (a, b)
}

/// The product on checked slices, serial or on all threads.
fn gemm_unchecked<T: Real>(g: &Gemm, a: &[T], b: &[T], c: &mut [T], parallel: bool) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 {
        // An empty sum: C = beta·C.
        if g.beta == 0.0 {
            c.fill(T::zero());
        } else {
            let beta = T::c(g.beta);
            c.iter_mut().for_each(|v| *v *= beta);
        }
        return;
    }
    let ((a_rs, a_cs), (b_rs, b_cs)) = operand_strides(g);
    let is_native =
        TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>();
    if !is_native {
        naive_gemm(g, a, b, c, (a_rs, a_cs), (b_rs, b_cs));
        return;
    }
    let parallelism = if parallel && g.flops() >= PARALLEL_MIN_FLOPS {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the slices were checked to hold op(A) m×k, op(B) k×n and C m×n at the strides
    // given (row-major, contiguous), C does not alias A or B (distinct borrows), and T is f32
    // or f64, the types gemm supports.
    unsafe {
        gemm::gemm(
            g.m,
            g.n,
            g.k,
            c.as_mut_ptr(),
            1,
            g.n as isize,
            g.beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::c(g.beta),
            T::c(g.alpha),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Reference product for `Real` types `gemm` does not know.
fn naive_gemm<T: Real>(
    g: &Gemm,
    a: &[T],
    b: &[T],
    c: &mut [T],
    (a_rs, a_cs): (isize, isize),
    (b_rs, b_cs): (isize, isize),
) {
    let (alpha, beta) = (T::c(g.alpha), T::c(g.beta));
    for i in 0..g.m {
        for j in 0..g.n {
            let mut acc = T::zero();
            for p in 0..g.k {
                let ai = i as isize * a_rs + p as isize * a_cs;
                let bi = p as isize * b_rs + j as isize * b_cs;
                acc += a[ai as usize] * b[bi as usize];
            }
            let o = &mut c[i * g.n + j];
            *o = if g.beta == 0.0 {
                alpha * acc
            } else {
                alpha * acc + beta * *o
            };
        }
    }
}

/// `C = alpha·op(A)·op(B) + beta·C` (see [`Gemm`]).
pub fn matmul<T: Real>(g: &Gemm, a: &[T], b: &[T], c: &mut [T]) -> Result<(), KernelError> {
    check_len("matmul", "a", a.len(), g.a_len())?;
    check_len("matmul", "b", b.len(), g.b_len())?;
    check_len("matmul", "c", c.len(), g.c_len())?;
    gemm_unchecked(g, a, b, c, true);
    Ok(())
}

/// Element offsets between consecutive batch entries of A, B and C in [`bmm_strided`]. A
/// stride of 0 shares one operand across the batch (C's must be at least `m·n`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStrides {
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

/// `batch` independent products `C_i = alpha·op(A_i)·op(B_i) + beta·C_i`, stored contiguously.
pub fn bmm<T: Real>(
    g: &Gemm,
    batch: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
) -> Result<(), KernelError> {
    let strides = BatchStrides {
        a: g.a_len(),
        b: g.b_len(),
        c: g.c_len(),
    };
    bmm_strided(g, batch, strides, a, b, c)
}

/// Batched product with explicit batch strides (e.g. one weight shared by every entry).
pub fn bmm_strided<T: Real>(
    g: &Gemm,
    batch: usize,
    strides: BatchStrides,
    a: &[T],
    b: &[T],
    c: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "bmm";
    if strides.c < g.c_len() && batch > 1 {
        return Err(KernelError::Geometry {
            kernel,
            msg: format!("C batch stride {} overlaps m·n = {}", strides.c, g.c_len()),
        });
    }
    let need = |stride: usize, len: usize| {
        if batch == 0 {
            0
        } else {
            (batch - 1) * stride + len
        }
    };
    check_len(kernel, "a", a.len(), need(strides.a, g.a_len()))?;
    check_len(kernel, "b", b.len(), need(strides.b, g.b_len()))?;
    check_len(kernel, "c", c.len(), need(strides.c, g.c_len()))?;
    if batch == 0 || g.c_len() == 0 {
        return Ok(());
    }
    let (al, bl, cl) = (g.a_len(), g.b_len(), g.c_len());
    let a_of = |i: usize| &a[i * strides.a..i * strides.a + al];
    let b_of = |i: usize| &b[i * strides.b..i * strides.b + bl];
    // Many products: one per task, each serial. Few large ones: one at a time, each parallel.
    let threads = rayon::current_num_threads();
    if batch >= threads && g.flops() < 64 * PARALLEL_MIN_FLOPS {
        c.par_chunks_mut(strides.c.max(cl))
            .take(batch)
            .enumerate()
            .for_each(|(i, cc)| gemm_unchecked(g, a_of(i), b_of(i), &mut cc[..cl], false));
    } else {
        for (i, cc) in c.chunks_mut(strides.c.max(cl)).take(batch).enumerate() {
            gemm_unchecked(g, a_of(i), b_of(i), &mut cc[..cl], true);
        }
    }
    Ok(())
}

/// Geometry of a fully connected layer on `rows` vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearDims {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
}

/// `y = x·Wᵀ + b`: x `[rows, in]`, W `[out, in]` (PyTorch layout), b `[out]`, y `[rows, out]`.
pub fn linear_forward<T: Real>(
    d: &LinearDims,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "linear_forward";
    let (rows, fin, fout) = (d.rows, d.in_features, d.out_features);
    check_len(kernel, "x", x.len(), rows * fin)?;
    check_len(kernel, "weight", weight.len(), fout * fin)?;
    check_len(kernel, "y", y.len(), rows * fout)?;
    let mut g = Gemm::new(rows, fout, fin);
    g.trans_b = true;
    if let Some(b) = bias {
        check_len(kernel, "bias", b.len(), fout)?;
        if fout > 0 {
            for row in y.chunks_exact_mut(fout) {
                row.copy_from_slice(b);
            }
        }
        g.beta = 1.0;
    }
    gemm_unchecked(&g, x, weight, y, true);
    Ok(())
}

/// Gradients a [`linear_backward`] call produces; `None` skips one (frozen weights, or no
/// gradient needed for the input).
#[derive(Debug)]
pub struct LinearGrads<'a, T> {
    /// `dx = dy·W`, overwritten.
    pub dx: Option<&'a mut [T]>,
    /// `dW += dyᵀ·x`.
    pub dweight: Option<&'a mut [T]>,
    /// `db += Σ_rows dy`.
    pub dbias: Option<&'a mut [T]>,
}

/// Backward of [`linear_forward`].
pub fn linear_backward<T: Real>(
    d: &LinearDims,
    x: &[T],
    weight: &[T],
    dy: &[T],
    grads: LinearGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "linear_backward";
    let (rows, fin, fout) = (d.rows, d.in_features, d.out_features);
    check_len(kernel, "x", x.len(), rows * fin)?;
    check_len(kernel, "weight", weight.len(), fout * fin)?;
    check_len(kernel, "dy", dy.len(), rows * fout)?;
    // All lengths first, so that a bad call changes nothing.
    if let Some(dx) = &grads.dx {
        check_len(kernel, "dx", dx.len(), rows * fin)?;
    }
    if let Some(dw) = &grads.dweight {
        check_len(kernel, "dweight", dw.len(), fout * fin)?;
    }
    if let Some(db) = &grads.dbias {
        check_len(kernel, "dbias", db.len(), fout)?;
    }
    if let Some(dx) = grads.dx {
        // dx[rows, in] = dy[rows, out]·W[out, in]
        gemm_unchecked(&Gemm::new(rows, fin, fout), dy, weight, dx, true);
    }
    if let Some(dw) = grads.dweight {
        // dW[out, in] += dyᵀ·x
        let g = Gemm {
            trans_a: true,
            beta: 1.0,
            ..Gemm::new(fout, fin, rows)
        };
        gemm_unchecked(&g, dy, x, dw, true);
    }
    if let Some(db) = grads.dbias {
        if fout > 0 {
            crate::cpu::reduce::add_row_sums(dy, db)?;
        }
    }
    Ok(())
}
