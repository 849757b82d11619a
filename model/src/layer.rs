//! The layer contract of the engine: parameters, the forward/backward pass context, and the
//! `Layer` trait (explicit backward, no tape).
//!
//! * A [`Param`] is one PyTorch `state_dict` entry: its key relative to the owning layer, its
//!   value in the engine's layout, a lazily allocated gradient that backward ACCUMULATES into,
//!   and whether it is trained at all (a frozen parameter costs no weight-gradient work).
//! * [`Ctx`] carries what a forward needs to know: training mode (dropout, BatchNorm batch
//!   statistics), whether a backward will follow (so intermediates are kept only then), and
//!   the random stream for dropout masks.
//! * [`Layer::forward`] saves what its backward needs; [`Layer::backward`] consumes it, returns
//!   the input gradient and adds parameter gradients into [`Param::grad`]. Composite layers call
//!   their children's backward in reverse order.

use medvae_kernels::cpu::conv::{weight_from_torch, weight_to_torch};
use medvae_kernels::Spatial;
use medvae_runtime::ops::norm::{NormGrads, NormParams};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// A trained parameter or a state buffer (BatchNorm running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    /// Saved and loaded with the model but never given a gradient.
    Buffer,
    /// An integer buffer in PyTorch (`num_batches_tracked`, int64), held as f32 here.
    IntBuffer,
}

impl ParamKind {
    pub fn is_buffer(self) -> bool {
        self != ParamKind::Weight
    }
}

/// How the engine stores a parameter relative to PyTorch's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorchLayout {
    /// Same element order; only the shape is recorded (vectors, scalars).
    Same { shape: Vec<usize> },
    /// A convolution weight: engine `[kd, kh, kw, Cin, Cout]`, PyTorch `(O, I, k..)` with
    /// `rank` spatial axes (2: `(O, I, kh, kw)`, 3: `(O, I, kd, kh, kw)`).
    ConvWeight {
        cout: usize,
        cin: usize,
        kernel: Spatial,
        rank: usize,
    },
}

impl TorchLayout {
    /// The PyTorch shape of the parameter.
    pub fn torch_shape(&self) -> Vec<usize> {
        match self {
            TorchLayout::Same { shape } => shape.clone(),
            TorchLayout::ConvWeight {
                cout,
                cin,
                kernel,
                rank,
            } => {
                let mut s = vec![*cout, *cin];
                s.extend_from_slice(&kernel[3 - rank..]);
                s
            }
        }
    }
}

/// One named parameter or buffer.
#[derive(Debug, Clone)]
pub struct Param {
    /// The PyTorch `state_dict` key relative to the owning layer (`weight`, `bias`, ...).
    pub name: String,
    /// The value, in the engine's layout (see [`Param::layout`]).
    pub value: Tensor,
    /// Accumulated gradient (engine layout), allocated on first use.
    pub grad: Option<Tensor>,
    /// `false`: backward computes no gradient for this parameter.
    pub trainable: bool,
    pub kind: ParamKind,
    pub layout: TorchLayout,
}

impl Param {
    /// A trainable weight stored in PyTorch's own element order.
    pub fn plain(name: &str, value: Tensor) -> Param {
        let shape = value.shape().to_vec();
        Param {
            name: name.to_string(),
            value,
            grad: None,
            trainable: true,
            kind: ParamKind::Weight,
            layout: TorchLayout::Same { shape },
        }
    }

    /// A buffer (never trained), e.g. a running mean.
    pub fn buffer(name: &str, value: Tensor) -> Param {
        let mut p = Param::plain(name, value);
        p.trainable = false;
        p.kind = ParamKind::Buffer;
        p
    }

    /// A convolution weight whose engine value is `[kd, kh, kw, Cin, Cout]`.
    pub fn conv_weight(name: &str, value: Tensor, rank: usize) -> Result<Param> {
        let (kernel, cin, cout) = match *value.shape() {
            [kd, kh, kw, cin, cout] => ([kd, kh, kw], cin, cout),
            _ => {
                return Err(RuntimeError::shape(
                    "Param::conv_weight",
                    format!("{:?}", value.shape()),
                ))
            }
        };
        if !(rank == 2 && kernel[0] == 1 || rank == 3) {
            return Err(RuntimeError::shape(
                "Param::conv_weight",
                format!("a {rank}D convolution cannot have kernel {kernel:?}"),
            ));
        }
        Ok(Param {
            name: name.to_string(),
            value,
            grad: None,
            trainable: true,
            kind: ParamKind::Weight,
            layout: TorchLayout::ConvWeight {
                cout,
                cin,
                kernel,
                rank,
            },
        })
    }

    /// The gradient buffer to accumulate into: `None` for a frozen parameter or a buffer
    /// (callers then skip the weight-gradient work), zeros on first use.
    pub fn grad_slot(&mut self) -> Result<Option<&mut Tensor>> {
        if !self.trainable || self.kind.is_buffer() {
            return Ok(None);
        }
        if self.grad.is_none() {
            self.grad = Some(self.value.zeros_like()?);
        }
        Ok(self.grad.as_mut())
    }

    /// The value and the gradient slot at once (the backward of a layer needs both).
    pub fn value_and_grad(&mut self) -> Result<(&Tensor, Option<&mut Tensor>)> {
        let wants = self.trainable && !self.kind.is_buffer();
        if wants && self.grad.is_none() {
            self.grad = Some(self.value.zeros_like()?);
        }
        let grad = if wants { self.grad.as_mut() } else { None };
        Ok((&self.value, grad))
    }

    /// Move the value (and any gradient) to `device`; nothing is copied when they are
    /// already there. Integer buffers (BatchNorm's `num_batches_tracked`) are host-side
    /// counters and stay on the CPU.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if self.kind == ParamKind::IntBuffer {
            return Ok(());
        }
        if self.value.device() != device {
            self.value = self.value.to_device(device)?;
        }
        if let Some(g) = self.grad.take() {
            self.grad = Some(g.into_device(device)?);
        }
        Ok(())
    }

    pub fn zero_grad(&mut self) {
        self.grad = None;
    }

    pub fn torch_shape(&self) -> Vec<usize> {
        self.layout.torch_shape()
    }

    /// Engine-layout data to PyTorch element order.
    pub fn engine_to_torch(&self, data: &[f32]) -> Vec<f32> {
        match &self.layout {
            TorchLayout::Same { .. } => data.to_vec(),
            TorchLayout::ConvWeight {
                cout, cin, kernel, ..
            } => weight_to_torch(data, *cout, *cin, *kernel),
        }
    }

    /// The value in PyTorch's layout.
    pub fn to_torch(&self) -> Vec<f32> {
        self.engine_to_torch(&self.value.to_f32_vec())
    }

    /// The accumulated gradient in PyTorch's layout, if any.
    pub fn grad_to_torch(&self) -> Option<Vec<f32>> {
        self.grad
            .as_ref()
            .map(|g| self.engine_to_torch(&g.to_f32_vec()))
    }

    /// Overwrite the value from PyTorch-layout data of PyTorch shape `shape`.
    pub fn load_torch(&mut self, shape: &[usize], data: &[f32]) -> Result<()> {
        let want = self.torch_shape();
        if shape != want.as_slice() || data.len() != want.iter().product::<usize>() {
            return Err(RuntimeError::shape(
                "Param::load_torch",
                format!(
                    "`{}` expects {want:?}, got {shape:?} with {} values",
                    self.name,
                    data.len()
                ),
            ));
        }
        let engine = match &self.layout {
            TorchLayout::Same { .. } => data.to_vec(),
            TorchLayout::ConvWeight {
                cout, cin, kernel, ..
            } => weight_from_torch(data, *cout, *cin, *kernel),
        };
        self.value = Tensor::from_vec(self.value.shape(), engine)?;
        Ok(())
    }
}

/// Counter-based random seeds for dropout and sampling. Each draw is a fresh 64-bit stream id;
/// the masks themselves are a pure function of (stream id, element index) (see
/// `medvae_runtime::ops::elementwise`), so saving a `Rng` (two words) saves all randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
    pub counter: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { seed, counter: 0 }
    }

    /// The next stream id.
    pub fn next_stream(&mut self) -> u64 {
        self.counter += 1;
        let mut z = self.seed ^ self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What one forward pass is for.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Training-mode semantics: dropout active, BatchNorm on batch statistics.
    pub train: bool,
    /// A backward will follow: keep the intermediates it needs.
    pub grad: bool,
    pub rng: Rng,
}

impl Ctx {
    /// Training step: dropout on, intermediates kept.
    pub fn train(seed: u64) -> Ctx {
        Ctx {
            train: true,
            grad: true,
            rng: Rng::new(seed),
        }
    }

    /// Inference: nothing kept, no randomness.
    pub fn eval() -> Ctx {
        Ctx {
            train: false,
            grad: false,
            rng: Rng::new(0),
        }
    }

    /// Eval-mode semantics with gradients (frozen networks inside a loss, golden checks).
    pub fn eval_with_grad() -> Ctx {
        Ctx {
            train: false,
            grad: true,
            rng: Rng::new(0),
        }
    }

    /// The forward of a checkpointed (recomputed) block: `run` keeps nothing, and the random
    /// stream advances as in a gradient run, so that later layers draw the same numbers.
    /// Returns `run`'s output and the context that replays it exactly in the backward (the
    /// same dropout masks).
    pub fn checkpointed<T>(&mut self, run: impl FnOnce(&mut Ctx) -> Result<T>) -> Result<(T, Ctx)> {
        let replay = self.clone();
        let mut no_grad = Ctx {
            grad: false,
            ..self.clone()
        };
        let out = run(&mut no_grad)?;
        self.rng = no_grad.rng;
        Ok((out, replay))
    }
}

/// A visitor over every parameter, with full PyTorch keys (`encoder.conv_in.weight`).
pub type ParamVisitor<'a> = dyn FnMut(&str, &mut Param) + 'a;

/// Anything that owns parameters.
pub trait Parameters {
    /// Call `f(full_key, param)` for every parameter and buffer, in `state_dict` order.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor);
}

/// The affine parameters of a normalisation and the gradient slots its backward adds into:
/// `None` when both are frozen. The kernels write both gradients, so a half-frozen pair gets a
/// zeroed scratch tensor (in `scratch`, on the parameter's device) for the frozen one.
pub fn norm_affine<'a>(
    weight: &'a mut Param,
    bias: &'a mut Param,
    scratch: &'a mut (Option<Tensor>, Option<Tensor>),
) -> Result<(NormParams<'a>, Option<NormGrads<'a>>)> {
    let (gamma, dg) = weight.value_and_grad()?;
    let (beta, db) = bias.value_and_grad()?;
    let grads = match (dg, db) {
        (None, None) => None,
        (dg, db) => {
            let dgamma = match dg {
                Some(g) => g,
                None => scratch.0.insert(gamma.zeros_like()?),
            };
            let dbeta = match db {
                Some(g) => g,
                None => scratch.1.insert(beta.zeros_like()?),
            };
            Some(NormGrads { dgamma, dbeta })
        }
    };
    Ok((NormParams { gamma, beta }, grads))
}

/// Move every parameter and buffer of `model` to `device` (the first failure is returned).
pub fn move_params(model: &mut dyn Parameters, device: Device) -> Result<()> {
    let mut failure = None;
    model.visit_params("", &mut |key, p| {
        if failure.is_none() {
            if let Err(e) = p.to_device(device) {
                failure = Some(RuntimeError::Other(format!(
                    "moving {key} to {device}: {e}"
                )));
            }
        }
    });
    failure.map_or(Ok(()), Err)
}

/// A single-input, single-output layer with explicit backward.
pub trait Layer: Parameters {
    /// `y = layer(x)`. With `ctx.grad` the layer keeps what its backward needs; without, it
    /// keeps nothing (and drops anything left from an earlier pass).
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;

    /// [`Layer::forward`] taking ownership of the input, so that a layer which keeps its input
    /// for the backward need not copy it (composite networks pass activations along this way).
    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward(&x, ctx)
    }

    /// `dx` from `dy`, accumulating parameter gradients. Consumes the state of the last
    /// forward, which must have run with `ctx.grad`.
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor>;
}

/// `prefix.name`, or `name` at the top level.
pub fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Visit a parameter under `prefix`.
pub fn visit_one(prefix: &str, p: &mut Param, f: &mut ParamVisitor) {
    let key = join_key(prefix, &p.name);
    f(&key, p);
}

/// The error of a backward called without a saved forward.
pub fn no_saved_state(layer: &str) -> RuntimeError {
    RuntimeError::Other(format!(
        "{layer}: backward without a preceding forward in gradient mode (ctx.grad = false, or backward called twice)"
    ))
}

/// Set `trainable` on every parameter (not buffers) of `model`.
pub fn set_trainable(model: &mut dyn Parameters, trainable: bool) {
    model.visit_params("", &mut |_, p| {
        if p.kind == ParamKind::Weight {
            p.trainable = trainable;
        }
    });
}

/// Drop every accumulated gradient of `model`.
pub fn zero_grads(model: &mut dyn Parameters) {
    model.visit_params("", &mut |_, p| p.zero_grad());
}

/// Number of parameter elements (not buffers), and of trainable ones.
pub fn count_params(model: &mut dyn Parameters) -> (usize, usize) {
    let (mut all, mut trainable) = (0, 0);
    model.visit_params("", &mut |_, p| {
        if p.kind == ParamKind::Weight {
            all += p.value.numel();
            if p.trainable {
                trainable += p.value.numel();
            }
        }
    });
    (all, trainable)
}
