//! Changing spatial resolution: nearest ×2 upsampling, 2×2 max pooling, bicubic antialiased
//! resize (torchvision `Resize` semantics).

use super::{common_device, cpu_only, join_nsc, split_nsc};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::pool::{self, MaxPoolDims};
use medvae_kernels::cpu::resize::{self, ResizePlan};
use medvae_kernels::cpu::upsample::{self, UpsampleDims};

fn up_dims(op: &str, x_shape: &[usize]) -> Result<UpsampleDims> {
    let (n, s, c) = split_nsc(op, x_shape)?;
    // Every spatial axis doubles: 2D tensors have no depth axis to scale.
    let scale = if x_shape.len() == 4 {
        [1, 2, 2]
    } else {
        [2, 2, 2]
    };
    Ok(UpsampleDims {
        n,
        spatial: s,
        channels: c,
        scale,
    })
}

/// Nearest-neighbour ×2 upsampling of every spatial axis.
pub fn upsample_nearest2_forward(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "upsample_nearest_forward";
    let dev = common_device(OP, &[x])?;
    let d = up_dims(OP, x.shape())?;
    let y_shape = join_nsc(x.rank(), d.n, d.out_spatial(), d.channels);
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::upsample_forward(OP, &d, x, &y_shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&y_shape);
    upsample::upsample_nearest_forward(&d, x.f32s(OP)?, y.f32s_mut(OP)?)?;
    Ok(y)
}

/// Backward of the ×2 upsampling; `x_shape` is the forward input's shape.
pub fn upsample_nearest2_backward(x_shape: &[usize], dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "upsample_nearest_backward";
    let dev = common_device(OP, &[dy])?;
    let d = up_dims(OP, x_shape)?;
    dy.expect_shape(
        OP,
        "dy",
        &join_nsc(x_shape.len(), d.n, d.out_spatial(), d.channels),
    )?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::upsample_backward(OP, &d, x_shape, dy);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = Tensor::uninit(x_shape);
    upsample::upsample_nearest_backward(&d, dy.f32s(OP)?, dx.f32s_mut(OP)?)?;
    Ok(dx)
}

/// What the 2×2 max pool's backward needs: where each window's maximum came from.
#[derive(Debug, Clone)]
pub struct PoolArgmax {
    x_shape: Vec<usize>,
    saved: PoolSaved,
}

#[derive(Debug, Clone)]
enum PoolSaved {
    /// The CPU kernel's winning cell per output element (one byte each).
    Cells(Vec<u8>),
    /// The forward input: the CUDA backward recomputes each window's argmax from it, which
    /// costs no memory when the caller keeps that input anyway (a clone shares the buffer).
    #[cfg(feature = "cuda")]
    Input(Tensor),
}

fn pool_dims(op: &str, x_shape: &[usize]) -> Result<MaxPoolDims> {
    if x_shape.len() != 4 {
        return Err(RuntimeError::shape(
            op,
            format!("2×2 max pool takes [N, H, W, C], got {x_shape:?}"),
        ));
    }
    let (n, s, c) = split_nsc(op, x_shape)?;
    Ok(MaxPoolDims {
        n,
        spatial: s,
        channels: c,
    })
}

/// 2×2 max pooling with stride 2 (VGG16).
pub fn max_pool2x2_forward(x: &Tensor) -> Result<(Tensor, PoolArgmax)> {
    const OP: &str = "max_pool2x2_forward";
    let dev = common_device(OP, &[x])?;
    let d = pool_dims(OP, x.shape())?;
    let y_shape = join_nsc(4, d.n, d.out_spatial(), d.channels);
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        let y = super::on_cuda::reshape::max_pool_forward(OP, &d, x, &y_shape)?;
        let saved = PoolArgmax {
            x_shape: x.shape().to_vec(),
            saved: PoolSaved::Input(x.clone()),
        };
        return Ok((y, saved));
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&y_shape);
    let mut argmax = vec![0u8; d.out_len()];
    pool::max_pool2x2_forward(&d, x.f32s(OP)?, y.f32s_mut(OP)?, &mut argmax)?;
    Ok((
        y,
        PoolArgmax {
            x_shape: x.shape().to_vec(),
            saved: PoolSaved::Cells(argmax),
        },
    ))
}

pub fn max_pool2x2_backward(saved: &PoolArgmax, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "max_pool2x2_backward";
    let dev = common_device(OP, &[dy])?;
    let d = pool_dims(OP, &saved.x_shape)?;
    dy.expect_shape(OP, "dy", &join_nsc(4, d.n, d.out_spatial(), d.channels))?;
    match &saved.saved {
        #[cfg(feature = "cuda")]
        PoolSaved::Input(x) => {
            x.expect_device(OP, dev)?;
            super::on_cuda::reshape::max_pool_backward(OP, &d, x, dy)
        }
        PoolSaved::Cells(argmax) => {
            let _timer = cpu_only(OP, dev)?;
            let mut dx = Tensor::uninit(&saved.x_shape);
            pool::max_pool2x2_backward(&d, argmax, dy.f32s(OP)?, dx.f32s_mut(OP)?)?;
            Ok(dx)
        }
    }
}

fn resize_dims(op: &str, x_shape: &[usize]) -> Result<(usize, [usize; 2], usize)> {
    match *x_shape {
        [n, h, w, c] => Ok((n, [h, w], c)),
        _ => Err(RuntimeError::shape(
            op,
            format!("resize takes [N, H, W, C], got {x_shape:?}"),
        )),
    }
}

/// Bicubic antialiased resize of a `[N, H, W, C]` tensor to `out_hw`.
pub fn resize_bicubic_aa_forward(x: &Tensor, out_hw: [usize; 2]) -> Result<Tensor> {
    const OP: &str = "resize_forward";
    let dev = common_device(OP, &[x])?;
    let (n, in_hw, c) = resize_dims(OP, x.shape())?;
    let plan = ResizePlan::bicubic_aa(in_hw, out_hw)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        let y_shape = [n, out_hw[0], out_hw[1], c];
        return super::on_cuda::reshape::resize_forward(OP, &plan, (n, c), x, &y_shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&[n, out_hw[0], out_hw[1], c]);
    resize::resize_forward(&plan, n, c, x.f32s(OP)?, y.f32s_mut(OP)?)?;
    Ok(y)
}

/// Backward of the resize (the transposed linear map) to the input shape `x_shape`.
pub fn resize_bicubic_aa_backward(x_shape: &[usize], dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "resize_backward";
    let dev = common_device(OP, &[dy])?;
    let (n, in_hw, c) = resize_dims(OP, x_shape)?;
    let (_, out_hw, _) = resize_dims(OP, dy.shape())?;
    let plan = ResizePlan::bicubic_aa(in_hw, out_hw)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reshape::resize_backward(OP, &plan, (n, c), dy, x_shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = Tensor::uninit(x_shape);
    resize::resize_backward(&plan, n, c, dy.f32s(OP)?, dx.f32s_mut(OP)?)?;
    Ok(dx)
}
