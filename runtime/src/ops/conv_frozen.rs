//! Convolutions whose weight does not change between calls (a frozen network's, such as
//! LPIPS' VGG16), with the weight's Winograd transform kept from call to call.
//!
//! On the CPU every stride-1 convolution with a 3×3 (or `kd×3×3`) kernel transforms its weight before the GEMMs
//! (`U = G g Gᵀ`, 16/9 of the weight's size). For the deep, small layers of a perceptual
//! network that pass costs as much as the convolution itself, and a stage-1 step runs each
//! frozen layer three times (the reconstruction's and the target's forward, the
//! reconstruction's backward). A [`FrozenConvCache`] beside the layer keeps one transform, which
//! serves both the forward and the backward-data.
//!
//! The cache is keyed by the weight's [`Tensor::content_version`], which changes with every
//! write to the weight, so a reloaded or edited weight is transformed anew, never served stale.
//! CUDA tensors (and geometries Winograd does not run) take the plain convolution.

use super::conv::{
    backward_checked, check_backward, check_forward, forward_checked, with_scratch, ConvSpec,
    ForwardCall,
};
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::conv as k;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// The Winograd transform of one frozen convolution weight, made on first use.
#[derive(Debug, Default)]
pub struct FrozenConvCache {
    slot: Mutex<Option<Transformed>>,
}

#[derive(Debug)]
struct Transformed {
    /// [`Tensor::content_version`] of the weight it was made from.
    version: u64,
    weight: Arc<k::WinogradWeight<f32>>,
}

/// A clone starts empty: it is filled again on its first use (the weight it will see may be
/// another tensor).
impl Clone for FrozenConvCache {
    fn clone(&self) -> Self {
        FrozenConvCache::default()
    }
}

impl FrozenConvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held by the kept transform (0 before the first CPU call).
    pub fn size_bytes(&self) -> usize {
        self.lock().as_ref().map_or(0, |t| t.weight.size_bytes())
    }

    /// The slot; a panic elsewhere while it was held cannot leave it half written (it is only
    /// ever replaced whole), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Transformed>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transform of `w` (a CPU f32 weight of `spec`), kept or made anew.
    fn transformed(
        &self,
        op: &str,
        spec: &ConvSpec,
        w: &Tensor,
    ) -> Result<Option<Arc<k::WinogradWeight<f32>>>> {
        let Some(version) = w.content_version() else {
            return Ok(None);
        };
        let mut slot = self.lock();
        if let Some(t) = slot.as_ref().filter(|t| t.version == version) {
            return Ok(Some(t.weight.clone()));
        }
        let weight = Arc::new(k::WinogradWeight::new(
            spec.kernel,
            spec.cin,
            spec.cout,
            w.f32s(op)?,
        )?);
        *slot = Some(Transformed {
            version,
            weight: weight.clone(),
        });
        Ok(Some(weight))
    }
}

/// `y = conv(x, w) + b` for a weight that `cache` may keep a transform of (see the module).
pub fn conv_forward_frozen(
    spec: &ConvSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cache: &FrozenConvCache,
) -> Result<Tensor> {
    const OP: &str = "conv_forward_frozen";
    let call = check_forward(OP, spec, x, w, b)?;
    let ForwardCall { dev, g, y_shape } = &call;
    if dev.is_cpu() && k::winograd_runs_forward(g) {
        if let Some(u) = cache.transformed(OP, spec, w)? {
            let mut y = Tensor::uninit(y_shape);
            let bias = match b {
                Some(b) => Some(b.f32s(OP)?),
                None => None,
            };
            let (xs, ys) = (x.f32s(OP)?, y.f32s_mut(OP)?);
            with_scratch(|s| k::conv_forward_winograd(s, g, xs, &u, bias, ys))?;
            return Ok(y);
        }
    }
    forward_checked(OP, call, x, w, b)
}

/// `dx` of a convolution whose weight (and bias) get no gradient, from its forward input `x`
/// (only its shape is read) and `dy`, with the transform `cache` keeps (see the module).
pub fn conv_backward_data_frozen(
    spec: &ConvSpec,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    cache: &FrozenConvCache,
) -> Result<Tensor> {
    const OP: &str = "conv_backward_data_frozen";
    let call = check_backward(OP, spec, x, w, dy)?;
    let (dev, g) = &call;
    if dev.is_cpu() && k::winograd_runs_backward_data(g) {
        if let Some(u) = cache.transformed(OP, spec, w)? {
            let mut dx = Tensor::uninit(x.shape());
            let (dys, dxs) = (dy.f32s(OP)?, dx.f32s_mut(OP)?);
            with_scratch(|s| k::conv_backward_data_winograd(s, g, dys, &u, dxs))?;
            return Ok(dx);
        }
    }
    backward_checked(OP, call, Cow::Borrowed(x), w, dy, true, None, None)?.ok_or_else(|| {
        crate::RuntimeError::Other(format!("{OP}: the convolution gave no input gradient"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::{conv_backward, conv_forward};

    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
            .collect();
        Tensor::from_vec(shape, data).unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (a.f32s("test").unwrap(), b.f32s("test").unwrap());
        let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let den: f32 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    /// Both paths of the frozen convolution give the plain convolution's results: the kept
    /// transform (3×3, stride 1) and the fallback (stride 2, which Winograd does not run).
    #[test]
    fn frozen_matches_plain_with_and_without_winograd() {
        for (spec, tol) in [
            (ConvSpec::square_2d(6, 5, 3, 1, 1), 1e-5),
            (ConvSpec::square_2d(6, 5, 3, 2, 1), 0.0),
        ] {
            let x = ramp(&[2, 9, 7, 6], 0.01);
            let w = ramp(&spec.weight_shape(), 0.02);
            let b = ramp(&[5], 0.1);
            let cache = FrozenConvCache::new();
            let y = conv_forward_frozen(&spec, &x, &w, Some(&b), &cache).unwrap();
            let y_ref = conv_forward(&spec, &x, &w, Some(&b)).unwrap();
            assert_eq!(y.shape(), y_ref.shape());
            assert!(rel_err(&y, &y_ref) <= tol, "{spec:?}: forward");
            let dy = ramp(y.shape(), 0.03);
            let dx = conv_backward_data_frozen(&spec, &x, &w, &dy, &cache).unwrap();
            let dx_ref = conv_backward(&spec, Cow::Borrowed(&x), &w, &dy, true, None, None)
                .unwrap()
                .unwrap();
            assert!(rel_err(&dx, &dx_ref) <= tol, "{spec:?}: backward-data");
            // Only the Winograd geometry keeps a transform.
            assert_eq!(cache.size_bytes() > 0, spec.stride == [1, 1, 1]);
        }
    }

    /// Mismatched operands are refused under the frozen op's name, on both paths.
    #[test]
    fn bad_operands_are_errors_naming_the_frozen_op() {
        for stride in [1, 2] {
            let spec = ConvSpec::square_2d(6, 5, 3, stride, 1);
            let x = ramp(&[1, 8, 8, 6], 0.01);
            let cache = FrozenConvCache::new();
            let wrong_w = ramp(&[3, 3, 5, 6], 0.02);
            let err = conv_forward_frozen(&spec, &x, &wrong_w, None, &cache).unwrap_err();
            assert!(err.to_string().contains("conv_forward_frozen"), "{err}");
            let w = ramp(&spec.weight_shape(), 0.02);
            let wrong_dy = ramp(&[1, 3, 3, 5], 0.03);
            let err = conv_backward_data_frozen(&spec, &x, &w, &wrong_dy, &cache).unwrap_err();
            assert!(
                err.to_string().contains("conv_backward_data_frozen"),
                "{err}"
            );
        }
    }
}
