//! Convolution (2D and 3D, any kernel, stride and asymmetric zero padding).
//! Weights are tap-major `[kd, kh, kw, Cin, Cout]` (2D: `[1, kh, kw, Cin, Cout]`).

use super::{common_device, cpu_only, join_nsc, split_nsc};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use crate::Device;
use medvae_kernels::cpu::conv as k;
use medvae_kernels::Spatial;
use std::borrow::Cow;
use std::cell::RefCell;

thread_local! {
    /// Packing buffers, per-task buffers and weight-gradient partials reused across calls, so a
    /// steady-state training step does not allocate them on every convolution.
    static SCRATCH: RefCell<k::ConvScratch<f32>> = RefCell::new(k::ConvScratch::new());
}

/// Run `f` with this thread's convolution scratch (the kernels never call back into the ops,
/// so the borrow cannot be re-entered).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut k::ConvScratch<f32>) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Static description of a convolution (everything but the input's batch and extent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: Spatial,
    pub stride: Spatial,
    pub pad_lo: Spatial,
    pub pad_hi: Spatial,
}

impl ConvSpec {
    /// A 2D convolution `k×k`, stride `s`, symmetric padding `p` (the PyTorch `Conv2d` case).
    pub fn square_2d(cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Self {
        ConvSpec {
            cin,
            cout,
            kernel: [1, k, k],
            stride: [1, s, s],
            pad_lo: [0, p, p],
            pad_hi: [0, p, p],
        }
    }

    /// A 3D convolution `k×k×k`, stride `s`, symmetric padding `p`.
    pub fn cube_3d(cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Self {
        ConvSpec {
            cin,
            cout,
            kernel: [k; 3],
            stride: [s; 3],
            pad_lo: [p; 3],
            pad_hi: [p; 3],
        }
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        vec![
            self.kernel[0],
            self.kernel[1],
            self.kernel[2],
            self.cin,
            self.cout,
        ]
    }

    /// The kernel geometry for input `x` (validated).
    pub fn geometry(&self, op: &str, x_shape: &[usize]) -> Result<k::ConvGeometry> {
        let (n, s, c) = split_nsc(op, x_shape)?;
        if c != self.cin {
            return Err(RuntimeError::shape(
                op,
                format!(
                    "input {x_shape:?} has {c} channels, the convolution expects {}",
                    self.cin
                ),
            ));
        }
        if x_shape.len() == 4
            && (self.kernel[0] != 1 || self.stride[0] != 1 || self.pad_lo[0] + self.pad_hi[0] != 0)
        {
            return Err(RuntimeError::shape(
                op,
                "a 3D convolution was given a 2D input",
            ));
        }
        let g = k::ConvGeometry {
            batch: n,
            in_spatial: s,
            cin: self.cin,
            cout: self.cout,
            kernel: self.kernel,
            stride: self.stride,
            pad_lo: self.pad_lo,
            pad_hi: self.pad_hi,
        };
        g.validate()?;
        Ok(g)
    }
}

/// A checked forward: the operands' device, the geometry and the output's shape.
pub(super) struct ForwardCall {
    pub dev: Device,
    pub g: k::ConvGeometry,
    pub y_shape: Vec<usize>,
}

/// Check the operands of `y = conv(x, w) + b` against `spec` and each other.
pub(super) fn check_forward(
    op: &str,
    spec: &ConvSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<ForwardCall> {
    let dev = common_device(op, &[x, w])?;
    let g = spec.geometry(op, x.shape())?;
    w.expect_shape(op, "weight", &spec.weight_shape())?;
    if let Some(b) = b {
        b.expect_shape(op, "bias", &[spec.cout])?;
        b.expect_device(op, dev)?;
    }
    let y_shape = join_nsc(x.rank(), g.batch, g.out_spatial(), spec.cout);
    Ok(ForwardCall { dev, g, y_shape })
}

/// `y = conv(x, w) + b`.
pub fn conv_forward(spec: &ConvSpec, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "conv_forward";
    let call = check_forward(OP, spec, x, w, b)?;
    forward_checked(OP, call, x, w, b)
}

/// [`conv_forward`] of operands that [`check_forward`] has passed as `call`.
pub(super) fn forward_checked(
    op: &'static str,
    call: ForwardCall,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    let ForwardCall { dev, g, y_shape } = call;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::conv::conv_forward(op, &g, x, w, b, &y_shape);
    }
    let _timer = cpu_only(op, dev)?;
    let mut y = Tensor::uninit(&y_shape);
    let bias = match b {
        Some(b) => Some(b.f32s(op)?),
        None => None,
    };
    let (xs, ws, ys) = (x.f32s(op)?, w.f32s(op)?, y.f32s_mut(op)?);
    with_scratch(|s| k::conv_forward_with(s, &g, xs, ws, bias, ys))?;
    Ok(y)
}

/// Check the operands of a convolution's backward against `spec` and each other: the
/// device and the geometry.
pub(super) fn check_backward(
    op: &str,
    spec: &ConvSpec,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Device, k::ConvGeometry)> {
    let dev = common_device(op, &[x, w, dy])?;
    let g = spec.geometry(op, x.shape())?;
    w.expect_shape(op, "weight", &spec.weight_shape())?;
    dy.expect_shape(
        op,
        "dy",
        &join_nsc(x.rank(), g.batch, g.out_spatial(), spec.cout),
    )?;
    Ok((dev, g))
}

/// Gradients of a convolution: returns `dx` (when `need_dx`) and accumulates into `dw`/`db`.
///
/// The weight gradient runs first; an owned `x` ([`Cow::Owned`]) is then released before `dx`
/// is allocated, so a caller that no longer needs the input keeps the backward's peak at x or
/// dx, never both.
pub fn conv_backward(
    spec: &ConvSpec,
    x: Cow<'_, Tensor>,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<Option<Tensor>> {
    const OP: &str = "conv_backward";
    let (dev, g) = check_backward(OP, spec, &x, w, dy)?;
    if let Some(dw) = &dw {
        dw.expect_shape(OP, "dw", &spec.weight_shape())?;
    }
    if let Some(db) = &db {
        db.expect_shape(OP, "db", &[spec.cout])?;
    }
    backward_checked(OP, (dev, g), x, w, dy, need_dx, dw, db)
}

/// [`conv_backward`] of operands that [`check_backward`] has passed as `call` (and `dw`, `db`
/// of the weight's and bias' shapes).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_checked(
    op: &'static str,
    (dev, g): (Device, k::ConvGeometry),
    x: Cow<'_, Tensor>,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::conv::conv_backward(op, &g, x, w, dy, need_dx, dw, db);
    }
    let _timer = cpu_only(op, dev)?;
    if let Some(dw) = dw {
        let dbias = match db {
            Some(db) => Some(db.f32s_mut(op)?),
            None => None,
        };
        let (xs, dys, dws) = (x.f32s(op)?, dy.f32s(op)?, dw.f32s_mut(op)?);
        with_scratch(|s| k::conv_backward_weight_with(s, &g, xs, dys, dws, dbias))?;
    } else if let Some(db) = db {
        // Bias gradient alone (frozen weight, trainable bias) still needs the sum over dy.
        let dyv = dy.f32s(op)?;
        let dbv = db.f32s_mut(op)?;
        for row in dyv.chunks_exact(g.cout) {
            for (a, &v) in dbv.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
    if !need_dx {
        return Ok(None);
    }
    let x_shape = x.shape().to_vec();
    drop(x);
    let mut dx = Tensor::uninit(&x_shape);
    let (dys, ws, dxs) = (dy.f32s(op)?, w.f32s(op)?, dx.f32s_mut(op)?);
    with_scratch(|s| k::conv_backward_data_with(s, &g, dys, ws, dxs))?;
    Ok(Some(dx))
}
