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
    check_backward, check_forward, conv_backward, conv_forward, with_scratch, ConvSpec, ForwardCall,
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
    let ForwardCall { dev, g, y_shape } = check_forward(OP, spec, x, w, b)?;
    if dev.is_cpu() && k::winograd_runs_forward(&g) {
        if let Some(u) = cache.transformed(OP, spec, w)? {
            let mut y = Tensor::uninit(&y_shape);
            let bias = match b {
                Some(b) => Some(b.f32s(OP)?),
                None => None,
            };
            let (xs, ys) = (x.f32s(OP)?, y.f32s_mut(OP)?);
            with_scratch(|s| k::conv_forward_winograd(s, &g, xs, &u, bias, ys))?;
            return Ok(y);
        }
    }
    conv_forward(spec, x, w, b)
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
    let (dev, g) = check_backward(OP, spec, x, w, dy)?;
    if dev.is_cpu() && k::winograd_runs_backward_data(&g) {
        if let Some(u) = cache.transformed(OP, spec, w)? {
            let mut dx = Tensor::uninit(x.shape());
            let (dys, dxs) = (dy.f32s(OP)?, dx.f32s_mut(OP)?);
            with_scratch(|s| k::conv_backward_data_winograd(s, &g, dys, &u, dxs))?;
            return Ok(dx);
        }
    }
    conv_backward(spec, Cow::Borrowed(x), w, dy, true, None, None)?.ok_or_else(|| {
        crate::RuntimeError::Other(format!("{OP}: the convolution gave no input gradient"))
    })
}
