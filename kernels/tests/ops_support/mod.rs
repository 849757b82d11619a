//! Shared helpers for the op tests: golden-file loading, layout conversion, error norms,
//! a seeded RNG and the f64 central-difference gradient checker.
#![allow(dead_code)] // each test binary uses a different subset

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::PathBuf;

/// Tolerance of f32 ops against the golden files: ‖a − ref‖ / ‖ref‖.
pub const GOLDEN_TOL: f64 = 1e-4;

/// Tolerance of f64 analytic gradients against central differences.
pub const FD_TOL: f64 = 1e-7;

/// The golden directory: `$MEDVAE_GOLDEN`, or `shared/golden` next to the repository.
pub fn golden_dir() -> PathBuf {
    let dir = match std::env::var_os("MEDVAE_GOLDEN") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"),
    };
    assert!(
        dir.join("ops").is_dir(),
        "golden directory {} (with ops/) not found: set MEDVAE_GOLDEN to the folder holding the \
         golden reference files",
        dir.display()
    );
    dir
}

/// One tensor of a golden file: shape and float32 values.
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One golden case: its metadata and tensors.
pub struct Golden {
    pub name: String,
    pub case: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Golden {
    /// Load `ops/<name>.safetensors`; any problem fails the test with the reason.
    pub fn load(name: &str) -> Golden {
        let path = golden_dir().join("ops").join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read golden file {}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("{}: bad safetensors header: {e:?}", path.display()));
        let case_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("case"))
            .unwrap_or_else(|| panic!("{}: no `case` metadata", path.display()));
        let case: serde_json::Value = serde_json::from_str(case_json)
            .unwrap_or_else(|e| panic!("{}: case metadata is not JSON: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{}: cannot parse: {e:?}", path.display()));
        let mut tensors = HashMap::new();
        for (key, view) in st.tensors() {
            assert_eq!(
                view.dtype(),
                safetensors::Dtype::F32,
                "{}: tensor {key} is not float32",
                path.display()
            );
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(
                key,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Golden {
            name: name.to_string(),
            case,
            tensors,
        }
    }

    pub fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden case {} has no tensor {key}", self.name))
    }

    /// Values of a tensor as stored (NCHW / NCDHW or whatever the op's layout is).
    pub fn raw(&self, key: &str) -> Vec<f32> {
        self.get(key).data.clone()
    }

    /// Values of an `[N, C, spatial...]` tensor converted to channels-last `[N, spatial, C]`.
    pub fn channels_last(&self, key: &str) -> Vec<f32> {
        let t = self.get(key);
        to_channels_last(&t.shape, &t.data)
    }

    /// A number from the case metadata.
    pub fn case_f64(&self, key: &str) -> f64 {
        self.case
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| {
                panic!(
                    "golden case {}: no number `{key}` in {}",
                    self.name, self.case
                )
            })
    }
}

/// `[N, C, rest...]` → `[N, prod(rest), C]`.
pub fn to_channels_last(shape: &[usize], data: &[f32]) -> Vec<f32> {
    assert!(shape.len() >= 2, "shape {shape:?} has no channel axis");
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let mut out = vec![0.0f32; data.len()];
    for ni in 0..n {
        for ci in 0..c {
            for si in 0..s {
                out[(ni * s + si) * c + ci] = data[(ni * c + ci) * s + si];
            }
        }
    }
    out
}

/// `[N, C, D, H, W]` (or `[N, C, H, W]`) → `(n, c, [d, h, w])`.
pub fn ncdhw(shape: &[usize]) -> (usize, usize, [usize; 3]) {
    match shape {
        [n, c, h, w] => (*n, *c, [1, *h, *w]),
        [n, c, d, h, w] => (*n, *c, [*d, *h, *w]),
        _ => panic!("expected a 4D or 5D tensor, got {shape:?}"),
    }
}

/// ‖a − b‖ / ‖b‖ in f64; infinite if anything is not finite or lengths differ.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.iter().chain(b).any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Assert `got` matches the golden `want` within [`GOLDEN_TOL`].
pub fn assert_golden(case: &str, what: &str, got: &[f32], want: &[f32]) {
    let e = rel_err(got, want);
    println!("{case}: {what} rel err {e:.3e}");
    assert!(
        e <= GOLDEN_TOL,
        "{case}: {what} relative error {e:.3e} > {GOLDEN_TOL:e} (len {} vs {})",
        got.len(),
        want.len()
    );
}

/// A seeded RNG for reproducible test data.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` values uniform in `[lo, hi)`.
pub fn uniform(r: &mut ChaCha8Rng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| r.gen_range(lo..hi)).collect()
}

/// `len` values whose magnitude is at least `gap` away from each value of `avoid` (kinks,
/// clamp edges), drawn from `[lo, hi)`.
pub fn uniform_avoiding(
    r: &mut ChaCha8Rng,
    len: usize,
    lo: f64,
    hi: f64,
    avoid: &[f64],
    gap: f64,
) -> Vec<f64> {
    (0..len)
        .map(|_| loop {
            let v = r.gen_range(lo..hi);
            if avoid.iter().all(|a| (v - a).abs() > gap) {
                break v;
            }
        })
        .collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central-difference gradient of `f` at `x`, step `h` scaled by each coordinate's magnitude.
pub fn fd_gradient(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut p = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            p[i] = x[i] + h;
            let up = f(&p);
            p[i] = x[i] - h;
            let down = f(&p);
            p[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// ‖analytic − fd‖ / max(‖fd‖, 1e-12·len) — relative, but tolerant of an all-zero gradient.
pub fn grad_rel_err(analytic: &[f64], fd: &[f64]) -> f64 {
    if analytic.len() != fd.len() || analytic.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = analytic.iter().zip(fd).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = fd.iter().map(|b| b * b).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

/// Compare an analytic gradient with central differences of `f` at `x`.
pub fn check_grad(
    name: &str,
    x: &[f64],
    analytic: &[f64],
    f: impl Fn(&[f64]) -> f64,
) -> Result<f64, String> {
    let fd = fd_gradient(x, f);
    let e = grad_rel_err(analytic, &fd);
    if e <= FD_TOL {
        Ok(e)
    } else {
        Err(format!(
            "{name}: analytic gradient differs from central differences, rel err {e:.3e}\n  \
             analytic {analytic:?}\n  fd       {fd:?}"
        ))
    }
}

/// [`check_grad`], failing the test on a mismatch.
pub fn assert_grad(name: &str, x: &[f64], analytic: &[f64], f: impl Fn(&[f64]) -> f64) {
    match check_grad(name, x, analytic, f) {
        Ok(e) => println!("{name}: fd rel err {e:.3e}"),
        Err(msg) => panic!("{msg}"),
    }
}

/// ‖a − b‖ / ‖b‖ of f64 vectors; infinite if `a` has a non-finite value.
pub fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

/// [`rel`] of an f32 result against an f64 reference.
pub fn rel32(a: &[f32], b: &[f64]) -> f64 {
    rel(&a.iter().map(|&v| v as f64).collect::<Vec<_>>(), b)
}

/// Print and check a relative error.
pub fn assert_rel(what: &str, e: f64, tol: f64) {
    println!("{what}: rel err {e:.3e}");
    assert!(e <= tol, "{what}: rel err {e:.3e} > {tol:e}");
}

/// The logistic function in f64.
pub fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}
