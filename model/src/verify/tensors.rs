//! Moving golden tensors (PyTorch layout) in and out of engine tensors (channels-last).

use medvae_runtime::golden::GoldenCase;
use medvae_runtime::layout::{to_channels_first, to_channels_last};
use medvae_runtime::{Result, RuntimeError, Tensor};

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
    Tensor::from_vec(&shape, data)
}

/// A golden tensor used as-is (vectors, `[.., features]` rows, weights in PyTorch layout).
pub fn plain(case: &GoldenCase, name: &str) -> Result<Tensor> {
    let t = case.tensor(name)?;
    Tensor::from_vec(&t.shape, t.data.clone())
}

/// An engine activation back to the golden layout.
pub fn activation_out(t: &Tensor) -> Result<Vec<f32>> {
    let (data, _) = to_channels_first(&t.to_f32_vec(), t.shape())?;
    Ok(data)
}
