//! Moving golden tensors (PyTorch layout) in and out of engine tensors (channels-last).

use medvae_runtime::golden::GoldenCase;
use medvae_runtime::layout::{to_channels_first, to_channels_last};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};
use std::cell::Cell;

thread_local! {
    // The device the case being verified runs on: inputs and parameters are uploaded to it.
    static TARGET: Cell<Device> = const { Cell::new(Device::Cpu) };
}

/// Run `f` with golden inputs placed on `device` (restored afterwards).
pub fn on_device<T>(device: Device, f: impl FnOnce() -> T) -> T {
    let before = TARGET.with(|t| t.replace(device));
    let out = f();
    TARGET.with(|t| t.set(before));
    out
}

/// The device set by [`on_device`] (the CPU outside it).
pub fn target() -> Device {
    TARGET.with(|t| t.get())
}

/// `t` on the target device.
pub fn to_target(t: Tensor) -> Result<Tensor> {
    match target() {
        Device::Cpu => Ok(t),
        d => t.to_device(d),
    }
}

/// Zeros of `shape` on the target device.
pub fn zeros(shape: &[usize]) -> Result<Tensor> {
    Tensor::zeros_on(shape, target())
}

/// A golden activation `[N, C, ...]` as a channels-last engine tensor `[N, ..., C]`.
pub fn activation(case: &GoldenCase, name: &str) -> Result<Tensor> {
    let t = case.tensor(name)?;
    if t.shape.len() < 3 {
        return Err(RuntimeError::file(
            &case.path,
            format!(
                "`{name}` has shape {:?}; an activation needs [N, C, spatial...]",
                t.shape
            ),
        ));
    }
    let (data, shape) = to_channels_last(&t.data, &t.shape)?;
    to_target(Tensor::from_vec(&shape, data)?)
}

/// A golden tensor used as-is (vectors, `[.., features]` rows, weights in PyTorch layout).
pub fn plain(case: &GoldenCase, name: &str) -> Result<Tensor> {
    let t = case.tensor(name)?;
    to_target(Tensor::from_vec(&t.shape, t.data.clone())?)
}

/// An engine activation back to the golden layout.
pub fn activation_out(t: &Tensor) -> Result<Vec<f32>> {
    let (data, _) = to_channels_first(&t.to_f32_vec(), t.shape())?;
    Ok(data)
}
