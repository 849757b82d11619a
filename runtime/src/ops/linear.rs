//! Linear layers and matrix products (PyTorch weight layout `[out, in]`).

use super::{common_device, cpu_only};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::linear::{self as k, LinearDims, LinearGrads};

fn dims(op: &str, x: &Tensor, w: &Tensor) -> Result<LinearDims> {
    let (Some(&in_features), [out_features, w_in]) = (x.shape().last(), w.shape()) else {
        return Err(RuntimeError::shape(
            op,
            format!("x {:?}, weight {:?}", x.shape(), w.shape()),
        ));
    };
    if *w_in != in_features {
        return Err(RuntimeError::shape(
            op,
            format!(
                "x {:?} has {in_features} features, weight {:?} expects {w_in}",
                x.shape(),
                w.shape()
            ),
        ));
    }
    Ok(LinearDims {
        rows: x.numel() / in_features.max(1),
        in_features,
        out_features: *out_features,
    })
}

/// `y = x·Wᵀ + b` over the last dimension of `x`.
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear_forward";
    let dev = common_device(OP, &[x, w])?;
    let d = dims(OP, x, w)?;
    if let Some(b) = b {
        b.expect_shape(OP, "bias", &[d.out_features])?;
        common_device(OP, &[x, b])?;
    }
    let mut shape = x.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = d.out_features;
    }
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::linear::linear_forward(OP, &d, x, w, b, &shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&shape);
    let bias = match b {
        Some(b) => Some(b.f32s(OP)?),
        None => None,
    };
    k::linear_forward(&d, x.f32s(OP)?, w.f32s(OP)?, bias, y.f32s_mut(OP)?)?;
    Ok(y)
}

/// Backward of [`linear_forward`]: `dx` when asked, accumulating `dw`/`db` when given.
pub fn linear_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<Option<Tensor>> {
    const OP: &str = "linear_backward";
    let dev = common_device(OP, &[x, w, dy])?;
    let d = dims(OP, x, w)?;
    if dy.numel() != d.rows * d.out_features {
        return Err(RuntimeError::shape(
            OP,
            format!("dy {:?} does not match x {:?}", dy.shape(), x.shape()),
        ));
    }
    if let Some(t) = &dw {
        t.expect_shape(OP, "dweight", w.shape())?;
    }
    if let Some(t) = &db {
        t.expect_shape(OP, "dbias", &[d.out_features])?;
    }
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::linear::linear_backward(OP, &d, x, w, dy, need_dx, dw, db);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = if need_dx {
        Some(Tensor::uninit(x.shape()))
    } else {
        None
    };
    let dweight = match dw {
        Some(t) => {
            t.expect_shape(OP, "dweight", w.shape())?;
            Some(t.f32s_mut(OP)?)
        }
        None => None,
    };
    let dbias = match db {
        Some(t) => {
            t.expect_shape(OP, "dbias", &[d.out_features])?;
            Some(t.f32s_mut(OP)?)
        }
        None => None,
    };
    let grads = LinearGrads {
        dx: match dx.as_mut() {
            Some(t) => Some(t.f32s_mut(OP)?),
            None => None,
        },
        dweight,
        dbias,
    };
    k::linear_backward(&d, x.f32s(OP)?, w.f32s(OP)?, dy.f32s(OP)?, grads)?;
    Ok(dx)
}
