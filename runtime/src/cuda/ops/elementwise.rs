//! Activations, arithmetic, fills and transposes on the GPU. `n` is the number of elements to
//! process (buffers may be larger); outputs may alias inputs.

use super::{check_f32, grid_1d, i32_of, i64_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};

const KERNEL: &str = "cuda elementwise";

/// Pointwise activations with a backward from the forward input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Silu,
    Relu,
    LeakyRelu(f32),
    /// Exact (erf) GELU.
    Gelu,
}

fn check(bufs: &[(&'static str, &DeviceBuffer)], n: usize) -> CudaResult<()> {
    bufs.iter()
        .try_for_each(|(w, b)| check_f32(KERNEL, w, b, n))
}

/// `y = act(x)`.
pub fn activation_forward(
    dev: &CudaDevice,
    act: Activation,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    n: usize,
) -> CudaResult<()> {
    check(&[("x", x), ("y", y)], n)?;
    let mut a = Args::new();
    a.buf(x).buf(y).push(i64_of(n));
    let entry = match act {
        Activation::Silu => "act_silu_fwd",
        Activation::Relu => "act_relu_fwd",
        Activation::Gelu => "act_gelu_fwd",
        Activation::LeakyRelu(s) => {
            a.push(s);
            "act_leaky_relu_fwd"
        }
    };
    a.launch(dev, entry, grid_1d(dev, n))
}

/// `dx = dy * act'(x)` (overwrites dx).
pub fn activation_backward(
    dev: &CudaDevice,
    act: Activation,
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    dx: &DeviceBuffer,
    n: usize,
) -> CudaResult<()> {
    check(&[("x", x), ("dy", dy), ("dx", dx)], n)?;
    let mut a = Args::new();
    a.buf(x).buf(dy).buf(dx).push(i64_of(n));
    let entry = match act {
        Activation::Silu => "act_silu_bwd",
        Activation::Relu => "act_relu_bwd",
        Activation::Gelu => "act_gelu_bwd",
        Activation::LeakyRelu(s) => {
            a.push(s);
            "act_leaky_relu_bwd"
        }
    };
    a.launch(dev, entry, grid_1d(dev, n))
}

/// `y[..n] = value`.
pub fn fill(dev: &CudaDevice, y: &DeviceBuffer, n: usize, value: f32) -> CudaResult<()> {
    check(&[("y", y)], n)?;
    Args::new()
        .buf(y)
        .push(i64_of(n))
        .push(value)
        .launch(dev, "ew_fill", grid_1d(dev, n))
}

/// `y = alpha * a + beta * b` (add: 1, 1; subtract: 1, -1).
pub fn add_scaled(
    dev: &CudaDevice,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    y: &DeviceBuffer,
    n: usize,
    alpha: f32,
    beta: f32,
) -> CudaResult<()> {
    check(&[("a", a), ("b", b), ("y", y)], n)?;
    Args::new()
        .buf(a)
        .buf(b)
        .buf(y)
        .push(i64_of(n))
        .push(alpha)
        .push(beta)
        .launch(dev, "ew_add_scaled", grid_1d(dev, n))
}

/// `y = alpha * x`.
pub fn scale(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    n: usize,
    alpha: f32,
) -> CudaResult<()> {
    check(&[("x", x), ("y", y)], n)?;
    Args::new()
        .buf(x)
        .buf(y)
        .push(i64_of(n))
        .push(alpha)
        .launch(dev, "ew_scale", grid_1d(dev, n))
}

/// `y += alpha * x`.
pub fn axpy(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    n: usize,
    alpha: f32,
) -> CudaResult<()> {
    check(&[("x", x), ("y", y)], n)?;
    Args::new()
        .buf(x)
        .buf(y)
        .push(i64_of(n))
        .push(alpha)
        .launch(dev, "ew_axpy", grid_1d(dev, n))
}

/// `y = a * b`.
pub fn mul(
    dev: &CudaDevice,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    y: &DeviceBuffer,
    n: usize,
) -> CudaResult<()> {
    check(&[("a", a), ("b", b), ("y", y)], n)?;
    Args::new()
        .buf(a)
        .buf(b)
        .buf(y)
        .push(i64_of(n))
        .launch(dev, "ew_mul", grid_1d(dev, n))
}

/// `y[r, c] += bias[c]` over `[rows, channels]`.
pub fn add_channel_bias(
    dev: &CudaDevice,
    y: &DeviceBuffer,
    bias: &DeviceBuffer,
    rows: usize,
    channels: usize,
) -> CudaResult<()> {
    check(&[("y", y)], rows * channels)?;
    check_f32(KERNEL, "bias", bias, channels)?;
    Args::new()
        .buf(y)
        .buf(bias)
        .push(i64_of(rows))
        .push(i32_of(KERNEL, "channels", channels)?)
        .launch(dev, "ew_add_channel_bias", grid_1d(dev, rows * channels))
}

/// `y = clamp(a * x + b, lo, hi)`.
pub fn affine_clamp(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    n: usize,
    a: f32,
    b: f32,
    lo: f32,
    hi: f32,
) -> CudaResult<()> {
    check(&[("x", x), ("y", y)], n)?;
    Args::new()
        .buf(x)
        .buf(y)
        .push(i64_of(n))
        .push(a)
        .push(b)
        .push(lo)
        .push(hi)
        .launch(dev, "ew_affine_clamp", grid_1d(dev, n))
}

/// `y[b] = x[b]^T` for `batch` row-major `[rows, cols]` matrices (y must not alias x).
pub fn transpose_2d(
    dev: &CudaDevice,
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    batch: usize,
    rows: usize,
    cols: usize,
) -> CudaResult<()> {
    check(&[("x", x), ("y", y)], batch * rows * cols)?;
    if batch > 65535 || rows.div_ceil(32) > 65535 {
        return Err(geometry(
            KERNEL,
            "transpose grid too large (batch or rows/32 > 65535)",
        ));
    }
    let grid = (
        cols.div_ceil(32) as u32,
        rows.div_ceil(32) as u32,
        batch as u32,
    );
    Args::new()
        .buf(x)
        .buf(y)
        .push(i32_of(KERNEL, "rows", rows)?)
        .push(i32_of(KERNEL, "cols", cols)?)
        .launch(dev, "transpose_2d", cfg(grid, (32, 8, 1), 0))
}
