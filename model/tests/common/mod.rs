//! Shared test helpers: random tensors, the golden folder, and finite-difference gradient checks
//! of whole layers.
//!
//! # Why f32 directional differences (and why they are sound here)
//! Layers compute in f32 (the engine's `Tensor`), so their backward cannot be checked against
//! f64 central differences the way the kernels are (the kernels have f64 FD tests of their
//! own, to ~1e-7). What remains to check at block level is the *composition*: wiring, order,
//! saved tensors, accumulation, frozen parameters. Mistakes there are O(1) errors. So each
//! check is a directional derivative `⟨∇f, v⟩` for a random `v` per input and per parameter
//! tensor (so every tensor's gradient is tested on its own), against central differences of
//! `f = Σ⟨out, g⟩` (accumulated in f64) with Richardson extrapolation (truncation error
//! O(h⁴)). The forward's f32 rounding is bounded explicitly: `noise = 8·ε₃₂·Σ|out·g| / h`,
//! and a check passes when `|fd − analytic| ≤ tol·|analytic| + noise`, `tol = 1e-3`.
//! `a_wrong_gradient_is_caught` (fd_blocks.rs) shows the check fails on a 1 % gradient error.

#![allow(dead_code)]

pub mod gpu;
pub mod train;

use medvae_model::layer::{Ctx, Parameters};
use medvae_runtime::ops::elementwise::standard_normal;
use medvae_runtime::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The golden folder: `$MEDVAE_GOLDEN`, else `shared/golden` beside the repository.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("MEDVAE_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"))
}

pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    standard_normal(shape, seed).expect("standard_normal")
}

pub fn randn_scaled(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut t = randn(shape, seed);
    t.f32s_mut("test")
        .unwrap()
        .iter_mut()
        .for_each(|v| *v *= scale);
    t
}

/// The tests' tiny model: `dims`-D, `channels` image channels in and out, width 32, two levels
/// of one res block, no attention, `z_channels` latent channels, no LoRA, the latent head.
/// Tests vary it with struct update syntax.
pub fn tiny_config(
    dims: usize,
    channels: usize,
    z_channels: usize,
) -> medvae_model::zoo::ModelConfig {
    medvae_model::zoo::ModelConfig {
        dims,
        in_channels: channels,
        out_ch: channels,
        ch: 32,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_levels: vec![],
        z_channels,
        embed_dim: z_channels,
        dropout: 0.0,
        lora_rank: None,
        latent_head: true,
    }
}

/// A tiny 2D autoencoder (1 image channel, width 32, two levels) with the latent head and
/// `z_channels` latent channels, only the head trainable: the stage-2 tests' model.
pub fn tiny_head_ae(z_channels: usize) -> medvae_model::autoencoder::AutoencoderKL {
    use medvae_model::layer::set_trainable;
    let cfg = tiny_config(2, 1, z_channels);
    let init = &mut medvae_model::layers::Init::random(11);
    let mut ae = medvae_model::autoencoder::AutoencoderKL::new(&cfg, init).expect("ae");
    set_trainable(&mut ae, false);
    set_trainable(ae.head.as_mut().expect("latent head"), true);
    ae
}

/// `Σ a·b` in f64, and `√Σ (a·b)²` (the scale of that sum's f32 rounding noise: each term
/// carries an independent relative rounding error of the f32 forward).
pub fn dot(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.shape(), b.shape(), "dot of different shapes");
    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
    let (s, m2) = a.iter().zip(&b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let p = x as f64 * y as f64;
        (s + p, m + p * p)
    });
    (s, m2.sqrt())
}

fn axpy(t: &mut Tensor, v: &Tensor, h: f32) {
    for (a, &b) in t
        .f32s_mut("test")
        .unwrap()
        .iter_mut()
        .zip(v.to_f32_vec().iter())
    {
        *a += h * b;
    }
}

/// Allowance for the growth of relative rounding error through one block.
pub const NOISE_DEPTH_BLOCK: f64 = 8.0;

/// Named tensors (inputs, input gradients).
pub type Named = BTreeMap<String, Tensor>;

/// A differentiable system under test: named inputs, parameters inside `model`.
pub struct System<M> {
    pub model: M,
    pub inputs: Named,
    /// `Σ_k ⟨out_k, g_k⟩` and `Σ|out_k · g_k|` from a fresh forward (no gradient state).
    pub objective: fn(&mut M, &Named, &mut Ctx) -> (f64, f64),
    /// Forward in gradient mode then backward: gradients of every input (by name); parameter
    /// gradients are accumulated into the model.
    pub gradients: fn(&mut M, &Named, &mut Ctx) -> Named,
    /// Builds the context of every pass (same seed each time: the same dropout masks).
    pub ctx: fn() -> Ctx,
    /// Growth of relative f32 rounding error through the system (see the module docs).
    pub noise_depth: f64,
}

/// One checked direction.
#[derive(Debug)]
pub struct DirCheck {
    pub what: String,
    pub analytic: f64,
    pub fd: f64,
    pub noise: f64,
}

impl DirCheck {
    pub fn passes(&self, tol: f64) -> bool {
        (self.fd - self.analytic).abs() <= tol * self.analytic.abs() + self.noise
    }
}

impl<M: Parameters> System<M> {
    fn eval(&mut self) -> (f64, f64) {
        let mut ctx = (self.ctx)();
        ctx.grad = false;
        (self.objective)(&mut self.model, &self.inputs, &mut ctx)
    }

    /// Richardson-extrapolated central difference along `perturb(±h)`.
    fn fd(&mut self, h: f32, perturb: &mut dyn FnMut(&mut Self, f32)) -> (f64, f64) {
        let mut central = |s: &mut Self, h: f32| {
            perturb(s, h);
            let (fp, mag) = s.eval();
            perturb(s, -2.0 * h);
            let (fm, _) = s.eval();
            perturb(s, h);
            ((fp - fm) / (2.0 * h as f64), mag)
        };
        let (d1, mag) = central(self, h);
        let (d2, _) = central(self, h / 2.0);
        let fd = (4.0 * d2 - d1) / 3.0;
        let noise = self.noise_depth * f32::EPSILON as f64 * mag / (h as f64 / 2.0);
        (fd, noise)
    }

    fn rms_of(&mut self, name: &str, is_input: bool) -> f32 {
        let rms = |t: &Tensor| {
            let v = t.to_f32_vec();
            (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
                as f32
        };
        if is_input {
            return rms(&self.inputs[name]);
        }
        let mut out = 0.0;
        self.model.visit_params("", &mut |k, p| {
            if k == name {
                out = rms(&p.value);
            }
        });
        out
    }

    /// Check every input gradient and every trainable parameter's gradient along a random
    /// direction. `sabotage` names a tensor whose analytic gradient is scaled by 1.01 (tests of
    /// the checker itself).
    pub fn check(&mut self, h: f32, seed: u64, sabotage: Option<&str>) -> Vec<DirCheck> {
        let mut ctx = (self.ctx)();
        ctx.grad = true;
        medvae_model::layer::zero_grads(&mut self.model);
        let input_grads = (self.gradients)(&mut self.model, &self.inputs, &mut ctx);
        let mut param_grads: Vec<(String, Tensor)> = Vec::new();
        self.model.visit_params("", &mut |k, p| {
            if let Some(g) = &p.grad {
                param_grads.push((k.to_string(), g.clone()));
            }
        });
        let mut out = Vec::new();
        let mut dir_seed = seed;
        let targets: Vec<(String, Tensor, bool)> = input_grads
            .into_iter()
            .map(|(k, g)| (k, g, true))
            .chain(param_grads.into_iter().map(|(k, g)| (k, g, false)))
            .collect();
        for (name, grad, is_input) in targets {
            dir_seed += 1;
            // Steps relative to the tensor's own scale (weights ~0.1, images ~1).
            let rms = self.rms_of(&name, is_input).max(1e-3);
            let v = randn_scaled(grad.shape(), dir_seed, rms);
            let mut analytic = dot(&grad, &v).0;
            if sabotage == Some(name.as_str()) {
                analytic *= 1.01;
            }
            let key = name.clone();
            let mut perturb = |s: &mut Self, step: f32| {
                if is_input {
                    axpy(s.inputs.get_mut(&key).expect("input"), &v, step);
                } else {
                    s.model.visit_params("", &mut |k, p| {
                        if k == key {
                            axpy(&mut p.value, &v, step);
                        }
                    });
                }
            };
            let (fd, noise) = self.fd(h, &mut perturb);
            out.push(DirCheck {
                what: name,
                analytic,
                fd,
                noise,
            });
        }
        out
    }
}

impl<M: Parameters> System<M> {
    /// [`System::check`] at several steps (longest first). Per direction it keeps the estimate
    /// with the least noise among those that agree at `tol`, else the one closest to agreeing.
    /// Long steps suffer truncation where the function curves (exp in the posterior), short
    /// ones rounding noise where a derivative is small; a wrong gradient disagrees at every step.
    pub fn check_steps(&mut self, steps: &[f32], seed: u64, tol: f64) -> Vec<DirCheck> {
        let mut best: Vec<DirCheck> = Vec::new();
        for &h in steps {
            for (i, c) in self.check(h, seed, None).into_iter().enumerate() {
                let excess =
                    |c: &DirCheck| (c.fd - c.analytic).abs() - c.noise - tol * c.analytic.abs();
                let better =
                    |new: &DirCheck, old: &DirCheck| match (new.passes(tol), old.passes(tol)) {
                        (true, true) => new.noise < old.noise,
                        (a, b) if a != b => a,
                        _ => excess(new) < excess(old),
                    };
                match best.get_mut(i) {
                    None => best.push(c),
                    Some(b) if better(&c, b) => *b = c,
                    Some(_) => {}
                }
            }
        }
        best
    }
}

/// Assert every direction passes, printing all of them on failure; and that the check had
/// teeth: at least 80 % of the directions resolve an error of `10·tol` above the rounding noise
/// (the rest are small or structurally zero gradients, such as the key bias of attention).
pub fn assert_checks(label: &str, checks: &[DirCheck], tol: f64) {
    assert_checks_with(label, checks, tol, 0.8, &[]);
}

/// [`assert_checks`] with the fraction of directions that must resolve `10·tol`, and directions
/// that must resolve it whatever the rest do.
pub fn assert_checks_with(
    label: &str,
    checks: &[DirCheck],
    tol: f64,
    min_sharp: f64,
    must: &[&str],
) {
    assert!(!checks.is_empty(), "{label}: nothing was checked");
    let is_sharp = |c: &DirCheck| c.noise < 10.0 * tol * c.analytic.abs();
    let sharp = checks.iter().filter(|c| is_sharp(c)).count();
    eprintln!(
        "{label}: {} directions, {sharp} resolve {:.0e}",
        checks.len(),
        10.0 * tol
    );
    assert!(
        sharp as f64 >= min_sharp * checks.len() as f64,
        "{label}: only {sharp} of {} directions resolve a {:.0e} error: {checks:#?}",
        checks.len(),
        10.0 * tol
    );
    for name in must {
        let c = checks
            .iter()
            .find(|c| c.what == *name)
            .unwrap_or_else(|| panic!("{label}: {name} not checked"));
        assert!(
            is_sharp(c),
            "{label}: {name} does not resolve a {:.0e} error: {c:?}",
            10.0 * tol
        );
    }
    let bad: Vec<&DirCheck> = checks.iter().filter(|c| !c.passes(tol)).collect();
    assert!(
        bad.is_empty(),
        "{label}: {} of {} directional derivatives disagree:\n{:#?}",
        bad.len(),
        checks.len(),
        bad
    );
}
