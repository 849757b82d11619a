//! LPIPS with the VGG16 backbone (the reference's `LPIPS`, eval mode):
//!
//! ```text
//! scaling_layer: x → (x − shift) / scale per channel (a 1-channel image broadcasts to 3)
//! net:           VGG16 features, five slice outputs (vgg.rs)
//! per slice k:   mean_pixels lin_k((n̂(fa_k) − n̂(fb_k))²)    (ops::perceptual)
//! p = Σ_k
//! ```
//! `lin_k` is a bias-free 1×1 convolution to one channel (`lin{k}.model.1.weight`; the
//! reference's dropout before it is off in eval mode). Everything is frozen: the backward goes
//! to the inputs only, and only to those asked for ([`Need`]). When both inputs need a gradient
//! (or neither does) they run as one batch; otherwise the branch without gradient runs in
//! feature-only mode, keeping nothing but its five slice outputs.
//!
//! Every step is a runtime op (`medvae_runtime::ops::perceptual` for the scaling layer and the
//! distance), so LPIPS runs on whichever device its inputs and parameters are on (move the
//! parameters with `crate::layer::move_params`); only the `[N]` distances are read back.
//!
//! Weights come from files the user names ([`Lpips::pretrained`]): torchvision's VGG16
//! ImageNet checkpoint and the LPIPS linear layers (`vgg.pth`).

use super::vgg::{Vgg16Features, VggActs, VGG16_WIDTHS};
use crate::layer::{join_key, no_saved_state, visit_one, Param, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::checkpoint::load_checkpoint;
use medvae_runtime::ops::perceptual::{
    lpips_distance_backward, lpips_distance_forward, lpips_scaling_backward, lpips_scaling_forward,
    GradSides, LpipsScaling, Samples,
};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};
use std::path::Path;

/// The reference's `ScalingLayer` constants (ImageNet statistics in [-1, 1] units).
pub const SCALING_SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
pub const SCALING_SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// Which inputs get a gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub input: bool,
    pub target: bool,
}

impl Need {
    pub const NONE: Need = Need {
        input: false,
        target: false,
    };
    pub const BOTH: Need = Need {
        input: true,
        target: true,
    };
    pub const TARGET: Need = Need {
        input: false,
        target: true,
    };
    pub const INPUT: Need = Need {
        input: true,
        target: false,
    };
}

/// Input gradients of one LPIPS pass.
#[derive(Debug, Default)]
pub struct LpipsGrads {
    pub input: Option<Tensor>,
    pub target: Option<Tensor>,
}

/// How the two branches of a gradient pass ran.
#[derive(Debug)]
enum Branches {
    /// input ‖ target as one batch `[2N, ..]`, both with gradient.
    Joint(VggActs),
    /// The input with gradient, the target's features only.
    Input { grad: VggActs, other: VggActs },
    /// The target with gradient, the input's features only.
    Target { grad: VggActs, other: VggActs },
}

/// What [`Lpips::distance_backward`] needs from a forward.
#[derive(Debug)]
pub struct LpipsState {
    branches: Branches,
    /// The inputs' shape `[N, H, W, C]` (C = 1 or 3).
    in_shape: Vec<usize>,
}

#[derive(Debug)]
pub struct Lpips {
    pub net: Vgg16Features,
    /// `lin{k}.model.1.weight`, PyTorch shape `[1, C_k, 1, 1]`.
    pub lin: Vec<Param>,
    /// `scaling_layer.shift` / `.scale`, shape `[1, 3, 1, 1]` (buffers).
    pub shift: Param,
    pub scale: Param,
    /// A host copy of `shift` / `scale`, read every time the two buffers are visited (loads
    /// and device moves go through `visit_params`), so a pass on the GPU needs no download;
    /// `None` when a buffer does not hold 3 values.
    scaling: Option<LpipsScaling>,
    saved: Option<LpipsState>,
}

/// Where the two weight files come from, for the error when they are not given.
pub const WEIGHTS_HELP: &str = "LPIPS needs two weight files: torchvision's VGG16 ImageNet \
checkpoint `vgg16-397923af.pth` (https://download.pytorch.org/models/vgg16-397923af.pth) and \
the LPIPS linear layers `vgg.pth` (shipped in the `lpips` PyPI package as \
lpips/weights/v0.1/vgg.pth: `pip download lpips --no-deps` and unzip the wheel). Without them \
the perceptual loss would train against a random network; set perceptual_weight = 0 to train \
without it.";

impl Lpips {
    /// An LPIPS network with VGG stage widths `widths`; `init` draws the (frozen) weights:
    /// [`Init::Zeros`] before loading, [`Init::Random`] for benchmarks and tests.
    pub fn new(widths: [usize; 5], init: &mut Init) -> Result<Lpips> {
        let net = Vgg16Features::new(widths, init)?;
        let mut lin = Vec::with_capacity(5);
        for &c in &widths {
            // Non-negative, as the trained LPIPS weights are.
            let mut w = init.uniform(&[1, c, 1, 1], 0.2)?;
            w.f32s_mut("Lpips::new")?
                .iter_mut()
                .for_each(|v| *v = v.abs());
            let mut p = Param::plain("weight", w);
            p.trainable = false;
            lin.push(p);
        }
        let buffer = |name: &str, v: [f32; 3]| -> Result<Param> {
            Ok(Param::buffer(
                name,
                Tensor::from_vec(&[1, 3, 1, 1], v.to_vec())?,
            ))
        };
        Ok(Lpips {
            net,
            lin,
            shift: buffer("shift", SCALING_SHIFT)?,
            scale: buffer("scale", SCALING_SCALE)?,
            scaling: Some(LpipsScaling {
                shift: SCALING_SHIFT,
                scale: SCALING_SCALE,
            }),
            saved: None,
        })
    }

    /// Re-read the host copy of the scaling buffers (a download when they live on a GPU).
    fn refresh_scaling(&mut self) {
        let three = |p: &Param| <[f32; 3]>::try_from(p.value.to_f32_vec()).ok();
        self.scaling = match (three(&self.shift), three(&self.scale)) {
            (Some(shift), Some(scale)) => Some(LpipsScaling { shift, scale }),
            _ => None,
        };
    }

    fn scaling(&self) -> Result<LpipsScaling> {
        self.scaling.ok_or_else(|| {
            RuntimeError::Other(format!(
                "LPIPS: the scaling buffers must hold 3 values each, got shapes {:?} and {:?}",
                self.shift.value.shape(),
                self.scale.value.shape()
            ))
        })
    }

    /// The real LPIPS (full VGG16 widths) from the user's weight files: torchvision's
    /// `vgg16-397923af.pth` and LPIPS' `vgg.pth`.
    pub fn pretrained(vgg16: &Path, lin: &Path) -> Result<Lpips> {
        let mut lp = Lpips::new(VGG16_WIDTHS, &mut Init::Zeros)?;
        lp.load_vgg16(vgg16)?;
        lp.load_lin(lin)?;
        Ok(lp)
    }

    /// [`Lpips::pretrained`] when both files are given; otherwise the error that says where to
    /// get them (a perceptual loss must never train against a random VGG).
    pub fn require(vgg16: Option<&Path>, lin: Option<&Path>) -> Result<Lpips> {
        match (vgg16, lin) {
            (Some(v), Some(l)) => Lpips::pretrained(v, l),
            (v, l) => {
                let missing: Vec<&str> = [
                    (v.is_none(), "the VGG16 checkpoint"),
                    (l.is_none(), "vgg.pth"),
                ]
                .iter()
                .filter(|(m, _)| *m)
                .map(|(_, s)| *s)
                .collect();
                Err(RuntimeError::Other(format!(
                    "perceptual_weight > 0 but {} not given. {WEIGHTS_HELP}",
                    missing.join(" and ")
                )))
            }
        }
    }

    pub fn widths(&self) -> [usize; 5] {
        self.net.widths
    }

    /// Load the convolutions from torchvision's VGG16 checkpoint (`features.{i}.weight|bias`;
    /// the classifier is ignored). A missing or mis-shaped key is an error naming file and key.
    pub fn load_vgg16(&mut self, path: &Path) -> Result<()> {
        let sd = load_checkpoint(path).map_err(|e| RuntimeError::file(path, e.to_string()))?;
        let widths = self.net.widths;
        let mut result = Ok(());
        self.net.visit_params("", &mut |key, p| {
            if result.is_err() {
                return;
            }
            // `slice{k}.{index}.{weight|bias}` → `features.{index}.{weight|bias}`.
            let tv = key
                .split_once('.')
                .map(|(_, rest)| format!("features.{rest}"));
            let Some(tv) = tv else { return };
            result = load_key(path, &sd, &tv, p, &format!("VGG16 widths {widths:?}"));
        });
        result
    }

    /// Load `lin{k}.model.1.weight` from LPIPS' `vgg.pth`.
    pub fn load_lin(&mut self, path: &Path) -> Result<()> {
        let sd = load_checkpoint(path).map_err(|e| RuntimeError::file(path, e.to_string()))?;
        for (k, p) in self.lin.iter_mut().enumerate() {
            load_key(
                path,
                &sd,
                &format!("lin{k}.model.1.weight"),
                p,
                "LPIPS lin layer",
            )?;
        }
        Ok(())
    }

    /// Check the two inputs: same shape `[N, H, W, C]`, C = 1 or 3.
    fn check_inputs(
        &self,
        input: &Tensor,
        target: &Tensor,
    ) -> Result<(usize, usize, usize, usize)> {
        const OP: &str = "LPIPS";
        let [n, h, w, c] = *input.shape() else {
            return Err(RuntimeError::shape(
                OP,
                format!("expected a [N, H, W, C] image, got {:?}", input.shape()),
            ));
        };
        target.expect_shape(OP, "target", input.shape())?;
        if c != 1 && c != 3 {
            return Err(RuntimeError::shape(
                OP,
                format!(
                    "images need 1 or 3 channels, got {c} (shape {:?})",
                    input.shape()
                ),
            ));
        }
        Ok((n, h, w, c))
    }

    /// Per-sample distances `[N]` (a host tensor) between `input` and `target` (`[N, H, W, C]`,
    /// C = 1 or 3, H and W ≥ 16, on the device of the LPIPS parameters), and the state for
    /// [`Lpips::distance_backward`] when `need` asks for a gradient.
    pub fn distance(
        &self,
        input: &Tensor,
        target: &Tensor,
        need: Need,
    ) -> Result<(Tensor, Option<LpipsState>)> {
        let (n, ..) = self.check_inputs(input, target)?;
        let s = self.scaling()?;
        let mut p = Tensor::zeros_on(&[n], input.device())?;
        let state = if need.input == need.target {
            // One batch: input ‖ target, samples [0, n) and [n, 2n).
            let acts = self
                .net
                .forward(lpips_scaling_forward(&s, &[input, target])?, need.input)?;
            for (k, lin) in self.lin.iter().enumerate() {
                let f = acts.feature(k);
                let (a, b) = (Samples::new(f, 0), Samples::new(f, n));
                lpips_distance_forward(a, b, n, &lin.value, &mut p)?;
            }
            need.input.then_some(Branches::Joint(acts))
        } else {
            let a = self
                .net
                .forward(lpips_scaling_forward(&s, &[input])?, need.input)?;
            let b = self
                .net
                .forward(lpips_scaling_forward(&s, &[target])?, need.target)?;
            for (k, lin) in self.lin.iter().enumerate() {
                let (fa, fb) = (Samples::new(a.feature(k), 0), Samples::new(b.feature(k), 0));
                lpips_distance_forward(fa, fb, n, &lin.value, &mut p)?;
            }
            Some(if need.input {
                Branches::Input { grad: a, other: b }
            } else {
                Branches::Target { grad: b, other: a }
            })
        };
        Ok((
            p.into_device(Device::Cpu)?,
            state.map(|branches| LpipsState {
                branches,
                in_shape: input.shape().to_vec(),
            }),
        ))
    }

    /// Input gradients of `Σ_s dp[s]·p[s]` from the state of a [`Lpips::distance`] pass, on
    /// the device of that pass.
    pub fn distance_backward(&self, state: LpipsState, dp: &[f32]) -> Result<LpipsGrads> {
        let shape = state.in_shape;
        let n = shape[0];
        if dp.len() != n {
            return Err(RuntimeError::shape(
                "LPIPS backward",
                format!("{} upstream gradients for a batch of {n}", dp.len()),
            ));
        }
        let s = self.scaling()?;
        let device = match &state.branches {
            Branches::Joint(acts) => acts.feature(0).device(),
            Branches::Input { grad, .. } | Branches::Target { grad, .. } => {
                grad.feature(0).device()
            }
        };
        let dp = Tensor::from_vec(&[n], dp.to_vec())?.into_device(device)?;
        let lin = |k: usize| &self.lin[k].value;
        // `f`: the features with gradient, `other`: those of the other branch (if separate).
        let backward = |acts: VggActs, other: Option<&VggActs>, sides: GradSides| {
            self.net.backward(acts, |k, f, g| {
                let (a, b) = match (other, sides.a) {
                    (None, _) => (Samples::new(f, 0), Samples::new(f, n)),
                    (Some(o), Some(_)) => (Samples::new(f, 0), Samples::new(o.feature(k), 0)),
                    (Some(o), None) => (Samples::new(o.feature(k), 0), Samples::new(f, 0)),
                };
                lpips_distance_backward(a, b, n, lin(k), &dp, g, sides)
            })
        };
        let one = GradSides {
            a: Some(0),
            b: None,
        };
        match state.branches {
            Branches::Joint(acts) => {
                let both = GradSides {
                    a: Some(0),
                    b: Some(n),
                };
                let dx = backward(acts, None, both)?;
                Ok(LpipsGrads {
                    input: Some(lpips_scaling_backward(&s, &dx, 0, &shape)?),
                    target: Some(lpips_scaling_backward(&s, &dx, n, &shape)?),
                })
            }
            Branches::Input { grad, other } => {
                let dx = backward(grad, Some(&other), one)?;
                Ok(LpipsGrads {
                    input: Some(lpips_scaling_backward(&s, &dx, 0, &shape)?),
                    target: None,
                })
            }
            Branches::Target { grad, other } => {
                let sides = GradSides {
                    a: None,
                    b: Some(0),
                };
                let dx = backward(grad, Some(&other), sides)?;
                Ok(LpipsGrads {
                    input: None,
                    target: Some(lpips_scaling_backward(&s, &dx, 0, &shape)?),
                })
            }
        }
    }

    /// [`Lpips::distance`] keeping the state in the layer, for a following [`Lpips::backward`].
    pub fn forward(&mut self, input: &Tensor, target: &Tensor, need: Need) -> Result<Tensor> {
        self.saved = None;
        let (p, state) = self.distance(input, target, need)?;
        self.saved = state;
        Ok(p)
    }

    /// Backward of the last [`Lpips::forward`] with a gradient; `dp` is `[N]`.
    pub fn backward(&mut self, dp: &Tensor) -> Result<LpipsGrads> {
        let state = self.saved.take().ok_or_else(|| no_saved_state("LPIPS"))?;
        self.distance_backward(state, &dp.to_f32_vec())
    }
}

/// Load `key` of `sd` (read from `path`) into `p`, checking presence, type and shape.
fn load_key(
    path: &Path,
    sd: &medvae_runtime::checkpoint::StateDict,
    key: &str,
    p: &mut Param,
    what: &str,
) -> Result<()> {
    let t = sd
        .get(key)
        .ok_or_else(|| RuntimeError::file(path, format!("missing key `{key}` ({what})")))?;
    let want = p.torch_shape();
    if t.shape != want {
        return Err(RuntimeError::file(
            path,
            format!(
                "key `{key}` has shape {:?}, expected {want:?} ({what})",
                t.shape
            ),
        ));
    }
    let data = t
        .as_f32()
        .ok_or_else(|| RuntimeError::file(path, format!("key `{key}` is not a float tensor")))?;
    p.load_torch(&t.shape, data)
        .map_err(|e| RuntimeError::file(path, format!("key `{key}`: {e}")))
}

impl Parameters for Lpips {
    /// The reference's `state_dict` order: scaling layer, net, lin0..lin4.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        let sl = join_key(prefix, "scaling_layer");
        visit_one(&sl, &mut self.shift, f);
        visit_one(&sl, &mut self.scale, f);
        // The visitor may have loaded or moved them.
        self.refresh_scaling();
        self.net.visit_params(&join_key(prefix, "net"), f);
        for (k, p) in self.lin.iter_mut().enumerate() {
            visit_one(&join_key(prefix, &format!("lin{k}.model.1")), p, f);
        }
    }
}
