//! Convolution layer, 2D and 3D from the same code (the spatial rank is a parameter).
//!
//! Weights live tap-major `[kd, kh, kw, Cin, Cout]` (2D: `kd = 1`) and are converted from / to
//! PyTorch's `(O, I, k..)` by [`Param`] on load and export.

use crate::layer::{no_saved_state, visit_one, Ctx, Layer, Param, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::ops::conv::{conv_backward, conv_forward, ConvSpec};
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

/// A convolution whose caller keeps its input: the forward may save internal state (LoRA's
/// low-rank activation) but never the input, which the caller hands back to the backward. This
/// lets composite blocks own (or recompute) their activations instead of copying them.
pub trait ConvOp: Parameters {
    fn conv_forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
    /// `dx` (when `need_dx`) from the forward input `x` and `dy`; accumulates parameter grads.
    /// An owned `x` is released before `dx` is allocated (see `ops::conv::conv_backward`):
    /// callers hand over inputs they no longer need.
    fn conv_backward(
        &mut self,
        x: Cow<'_, Tensor>,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>>;
}

/// The convolution geometry of a PyTorch `Conv{rank}d(cin, cout, k, stride, padding)`, with
/// extra zero padding `pad_hi_extra` after each spatial axis (the encoder's downsample pads
/// (0, 1) before a padding-0 convolution; this folds that into the kernel, no copy).
pub fn conv_spec(
    rank: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    pad_hi_extra: usize,
) -> Result<ConvSpec> {
    match rank {
        2 => Ok(ConvSpec {
            cin,
            cout,
            kernel: [1, k, k],
            stride: [1, stride, stride],
            pad_lo: [0, pad, pad],
            pad_hi: [0, pad + pad_hi_extra, pad + pad_hi_extra],
        }),
        3 => Ok(ConvSpec {
            cin,
            cout,
            kernel: [k; 3],
            stride: [stride; 3],
            pad_lo: [pad; 3],
            pad_hi: [pad + pad_hi_extra; 3],
        }),
        _ => Err(RuntimeError::Other(format!(
            "convolutions are 2D or 3D, not {rank}D"
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct Conv {
    pub spec: ConvSpec,
    /// Spatial rank of the PyTorch module (2 or 3).
    pub rank: usize,
    pub weight: Param,
    pub bias: Option<Param>,
    /// The input of the last gradient-mode forward (only for the [`Layer`] interface).
    saved_x: Option<Tensor>,
}

impl Conv {
    /// A convolution with PyTorch's default initialisation (see [`Init`]).
    pub fn new(spec: ConvSpec, rank: usize, bias: bool, init: &mut Init) -> Result<Conv> {
        let taps: usize = spec.kernel.iter().product();
        let bound = 1.0 / ((spec.cin * taps) as f32).sqrt();
        let weight =
            Param::conv_weight("weight", init.uniform(&spec.weight_shape(), bound)?, rank)?;
        let bias = if bias {
            Some(Param::plain("bias", init.uniform(&[spec.cout], bound)?))
        } else {
            None
        };
        Ok(Conv {
            spec,
            rank,
            weight,
            bias,
            saved_x: None,
        })
    }

    /// `Conv{rank}d(cin, cout, k, stride, padding)` with bias.
    pub fn square(
        rank: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        init: &mut Init,
    ) -> Result<Conv> {
        Conv::new(
            conv_spec(rank, cin, cout, k, stride, pad, 0)?,
            rank,
            true,
            init,
        )
    }

    /// Forward without saving anything.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        conv_forward(
            &self.spec,
            x,
            &self.weight.value,
            self.bias.as_ref().map(|b| &b.value),
        )
    }

    /// Backward from the forward input `x`: `dx` when `need_dx`, parameter gradients
    /// accumulated for trainable parameters (a frozen weight costs no weight-gradient GEMM).
    pub fn grad(
        &mut self,
        x: Cow<'_, Tensor>,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let (w, dw) = self.weight.value_and_grad()?;
        let db = match self.bias.as_mut() {
            Some(b) => b.grad_slot()?,
            None => None,
        };
        conv_backward(&self.spec, x, w, dy, need_dx, dw, db)
    }

    /// Only the weight gradient `∂⟨conv(x), dy⟩/∂W` as a fresh tensor (engine layout), without
    /// touching the accumulated gradients: the adaptive GAN weight needs it per loss term.
    pub fn weight_grad_of(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let mut dw = self.weight.value.zeros_like()?;
        conv_backward(
            &self.spec,
            Cow::Borrowed(x),
            &self.weight.value,
            dy,
            false,
            Some(&mut dw),
            None,
        )?;
        Ok(dw)
    }
}

impl Parameters for Conv {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, &mut self.weight, f);
        if let Some(b) = self.bias.as_mut() {
            visit_one(prefix, b, f);
        }
    }
}

impl ConvOp for Conv {
    fn conv_forward(&mut self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        self.apply(x)
    }
    fn conv_backward(
        &mut self,
        x: Cow<'_, Tensor>,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        self.grad(x, dy, need_dx)
    }
}

impl Layer for Conv {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.apply(&x)?;
        self.saved_x = if ctx.grad { Some(x) } else { None };
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let x = self.saved_x.take().ok_or_else(|| no_saved_state("Conv"))?;
        self.grad(Cow::Owned(x), dy, true)?
            .ok_or_else(|| RuntimeError::Other("conv backward returned no dx".into()))
    }
}
