//! The two leaf layers of a transformer: a fully connected layer (`nn.Linear`, weight in
//! PyTorch's `[out, in]` layout, so checkpoints load without conversion) and a LayerNorm over
//! the last dimension. Both are applied to `[.., features]` tensors (tokens as rows) and leave
//! saving their input to the caller, who owns the activations (as `Conv` does).

use crate::layer::{norm_affine, visit_one, Param, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::ops::linear::{linear_backward, linear_forward};
use medvae_runtime::ops::norm::{layer_norm_backward, layer_norm_forward, NormParams, NormSaved};
use medvae_runtime::{Result, RuntimeError, Tensor};

/// `y = x·Wᵀ + b` over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// PyTorch's default initialisation `U(±1/√in)` (zeros under `Init::Zeros`).
    pub fn new(cin: usize, cout: usize, bias: bool, init: &mut Init) -> Result<Linear> {
        let bound = 1.0 / (cin.max(1) as f32).sqrt();
        let weight = Param::plain("weight", init.uniform(&[cout, cin], bound)?);
        let bias = if bias {
            Some(Param::plain("bias", init.uniform(&[cout], bound)?))
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn in_features(&self) -> usize {
        self.weight.value.shape()[1]
    }

    pub fn out_features(&self) -> usize {
        self.weight.value.shape()[0]
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        linear_forward(x, &self.weight.value, self.bias.as_ref().map(|b| &b.value))
    }

    /// `dx` (when `need_dx`) from the forward input `x`; weight and bias gradients are
    /// accumulated only where trainable (a frozen layer costs one GEMM, not three).
    pub fn grad(&mut self, x: &Tensor, dy: &Tensor, need_dx: bool) -> Result<Option<Tensor>> {
        let (w, dw) = self.weight.value_and_grad()?;
        let db = match self.bias.as_mut() {
            Some(b) => b.grad_slot()?,
            None => None,
        };
        linear_backward(x, w, dy, need_dx, dw, db)
    }

    /// [`Linear::grad`] when `dx` is required.
    pub fn grad_x(&mut self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.grad(x, dy, true)?
            .ok_or_else(|| RuntimeError::Other("linear backward returned no dx".into()))
    }
}

impl Parameters for Linear {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, &mut self.weight, f);
        if let Some(b) = self.bias.as_mut() {
            visit_one(prefix, b, f);
        }
    }
}

/// `nn.LayerNorm(dim, eps)` with affine weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Param,
    pub bias: Param,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, init: &mut Init) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Param::plain("weight", init.constant(&[dim], 1.0)?),
            bias: Param::plain("bias", init.constant(&[dim], 0.0)?),
            eps,
        })
    }

    /// The normalised output and the statistics its backward needs.
    pub fn apply(&self, x: &Tensor) -> Result<(Tensor, NormSaved)> {
        let p = NormParams {
            gamma: &self.weight.value,
            beta: &self.bias.value,
        };
        layer_norm_forward(x, &p, self.eps)
    }

    /// `dx` from the forward input and statistics; the affine gradients are accumulated
    /// where trainable (the kernel adds into them; a half-frozen pair takes scratch).
    pub fn grad(&mut self, x: &Tensor, saved: &NormSaved, dy: &Tensor) -> Result<Tensor> {
        let mut scratch = (None, None);
        let (p, grads) = norm_affine(&mut self.weight, &mut self.bias, &mut scratch)?;
        layer_norm_backward(x, &p, self.eps, saved, dy, grads)
    }
}

impl Parameters for LayerNorm {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, &mut self.weight, f);
        visit_one(prefix, &mut self.bias, f);
    }
}
