//! Antialiased bicubic resize against PyTorch (`interpolate(mode="bicubic", antialias=True)`):
//! the shared golden cases, extra PyTorch references (`tests/data/gen_resize_extra.py`), an
//! independent non-separable f64 implementation, the adjoint identity and finite differences.

use medvae_kernels::cpu::resize::{resize_backward, resize_forward, ResizePlan};
use medvae_kernels::KernelError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

fn golden_dir() -> PathBuf {
    let dir = std::env::var_os("MEDVAE_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"));
    assert!(
        dir.is_dir(),
        "golden directory {} not found: set MEDVAE_GOLDEN to the shared golden folder",
        dir.display()
    );
    dir
}

/// A tensor read from a safetensors file: shape and f32 values.
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn tensor(st: &SafeTensors, name: &str) -> Tensor {
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name} missing: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} is not f32");
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor {
        shape: view.shape().to_vec(),
        data,
    }
}

/// NCHW -> NHWC (channels-last), widened to `f64`.
fn nchw_to_nhwc(t: &Tensor) -> Vec<f64> {
    let [n, c, h, w] = <[usize; 4]>::try_from(t.shape.as_slice()).expect("4-D tensor");
    let mut out = vec![0.0; t.data.len()];
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    out[((ni * h + hi) * w + wi) * c + ci] =
                        t.data[((ni * c + ci) * h + hi) * w + wi] as f64;
                }
            }
        }
    }
    out
}

fn rel_err(a: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(a.len(), reference.len());
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = a.iter().zip(reference).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = reference.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Run forward and backward in f32 and f64 against one reference case; returns the worst error.
fn check_case(
    label: &str,
    x: &Tensor,
    y: &Tensor,
    gout: &Tensor,
    grad: &Tensor,
    size: [usize; 2],
) -> f64 {
    let [n, c, h, w] = <[usize; 4]>::try_from(x.shape.as_slice()).expect("4-D input");
    assert_eq!(
        y.shape,
        vec![n, c, size[0], size[1]],
        "{label}: output shape"
    );
    let plan = ResizePlan::bicubic_aa([h, w], size).expect("plan");
    let (x64, y_ref) = (nchw_to_nhwc(x), nchw_to_nhwc(y));
    let (g64, dx_ref) = (nchw_to_nhwc(gout), nchw_to_nhwc(grad));

    let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
    let g32: Vec<f32> = g64.iter().map(|&v| v as f32).collect();
    let mut y32 = vec![f32::NAN; y_ref.len()];
    let mut dx32 = vec![f32::NAN; dx_ref.len()];
    resize_forward(&plan, n, c, &x32, &mut y32).expect("forward f32");
    resize_backward(&plan, n, c, &g32, &mut dx32).expect("backward f32");
    let widen = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let (ef, eb) = (
        rel_err(&widen(&y32), &y_ref),
        rel_err(&widen(&dx32), &dx_ref),
    );

    let mut y64 = vec![f64::NAN; y_ref.len()];
    let mut dx64 = vec![f64::NAN; dx_ref.len()];
    resize_forward(&plan, n, c, &x64, &mut y64).expect("forward f64");
    resize_backward(&plan, n, c, &g64, &mut dx64).expect("backward f64");
    let (ef64, eb64) = (rel_err(&y64, &y_ref), rel_err(&dx64, &dx_ref));
    println!(
        "{label}: [{n},{c},{h},{w}] -> {size:?}: f32 fwd {ef:.2e} bwd {eb:.2e}; f64 fwd {ef64:.2e} bwd {eb64:.2e}"
    );
    for (what, e) in [
        ("f32 fwd", ef),
        ("f32 bwd", eb),
        ("f64 fwd", ef64),
        ("f64 bwd", eb64),
    ] {
        assert!(e <= TOL, "{label}: {what} relative error {e:.3e} > {TOL:e}");
    }
    ef.max(eb)
}

fn golden_case(file: &str) {
    let path = golden_dir().join("ops").join(file);
    let bytes = read_file(&path);
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let case = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("case"))
        .expect("metadata key `case`");
    let case: serde_json::Value = serde_json::from_str(case).expect("case JSON");
    assert_eq!(case["op"], "resize");
    assert_eq!(case["mode"], "bicubic");
    assert_eq!(case["antialias"], true);
    assert_eq!(case["align_corners"], false);
    let size: Vec<usize> = serde_json::from_value(case["size"].clone()).expect("size");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    check_case(
        file,
        &tensor(&st, "in.x"),
        &tensor(&st, "out.y"),
        &tensor(&st, "gout.y"),
        &tensor(&st, "grad.in.x"),
        [size[0], size[1]],
    );
}

#[test]
fn golden_downscale() {
    golden_case("resize_bicubic_aa_down.safetensors");
}

#[test]
fn golden_upscale() {
    golden_case("resize_bicubic_aa_up.safetensors");
}

#[test]
fn extra_pytorch_references() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/resize_extra.safetensors");
    let bytes = read_file(&path);
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let cases = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cases"))
        .expect("metadata key `cases`");
    let cases: Vec<serde_json::Value> = serde_json::from_str(cases).expect("cases JSON");
    assert_eq!(cases.len(), 10);
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let size: Vec<usize> = serde_json::from_value(case["size"].clone()).expect("size");
        let t = |k: &str| tensor(&st, &format!("{name}.{k}"));
        check_case(
            name,
            &t("in.x"),
            &t("out.y"),
            &t("gout.y"),
            &t("grad.in.x"),
            [size[0], size[1]],
        );
    }
}

fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Independent reference: the antialiased bicubic map written out directly as a 2D sum over
/// every input pixel, from the formula (no tables, no index ranges, no separable passes).
/// PyTorch's tap range `[trunc(c - s + 0.5), trunc(c + s + 0.5))` is exactly the set of pixels
/// whose centre lies within the support `s` of `c`, where the stretched kernel is nonzero, so
/// summing the kernel over all pixels of the image is the same map.
fn naive_resize(x: &[f64], n: usize, c: usize, in_hw: [usize; 2], out_hw: [usize; 2]) -> Vec<f64> {
    fn keys(t: f64) -> f64 {
        let t = t.abs();
        match t {
            t if t < 1.0 => 1.5 * t.powi(3) - 2.5 * t.powi(2) + 1.0,
            t if t < 2.0 => -0.5 * t.powi(3) + 2.5 * t.powi(2) - 4.0 * t + 2.0,
            _ => 0.0,
        }
    }
    let axis = |len_in: usize, len_out: usize| -> Vec<Vec<f64>> {
        let scale = len_in as f64 / len_out as f64;
        let stretch = scale.max(1.0);
        (0..len_out)
            .map(|o| {
                let center = scale * (o as f64 + 0.5);
                let raw: Vec<f64> = (0..len_in)
                    .map(|i| keys((i as f64 + 0.5 - center) / stretch))
                    .collect();
                let total: f64 = raw.iter().sum();
                raw.iter().map(|w| w / total).collect()
            })
            .collect()
    };
    let (wh, ww) = (axis(in_hw[0], out_hw[0]), axis(in_hw[1], out_hw[1]));
    let mut y = vec![0.0; n * out_hw[0] * out_hw[1] * c];
    for ni in 0..n {
        for oh in 0..out_hw[0] {
            for ow in 0..out_hw[1] {
                for ci in 0..c {
                    let mut acc = 0.0;
                    for ih in 0..in_hw[0] {
                        for iw in 0..in_hw[1] {
                            acc += wh[oh][ih]
                                * ww[ow][iw]
                                * x[((ni * in_hw[0] + ih) * in_hw[1] + iw) * c + ci];
                        }
                    }
                    y[((ni * out_hw[0] + oh) * out_hw[1] + ow) * c + ci] = acc;
                }
            }
        }
    }
    y
}

const SHAPES: [(usize, usize, [usize; 2], [usize; 2]); 8] = [
    (1, 1, [9, 7], [4, 3]),
    (2, 3, [5, 6], [11, 13]),
    (1, 2, [1, 1], [3, 2]),
    (1, 1, [8, 5], [1, 1]),
    (3, 1, [7, 7], [7, 3]),
    (1, 4, [4, 9], [10, 9]),
    (2, 2, [16, 3], [5, 8]),
    (1, 1, [30, 30], [7, 11]),
];

#[test]
fn matches_independent_naive_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (n, c, in_hw, out_hw) in SHAPES {
        let plan = ResizePlan::bicubic_aa(in_hw, out_hw).expect("plan");
        let x = random(n * in_hw[0] * in_hw[1] * c, &mut rng);
        let mut y = vec![f64::NAN; n * out_hw[0] * out_hw[1] * c];
        resize_forward(&plan, n, c, &x, &mut y).expect("forward");
        let e = rel_err(&y, &naive_resize(&x, n, c, in_hw, out_hw));
        println!("naive {n}x{c} {in_hw:?}->{out_hw:?}: {e:.2e}");
        assert!(e < 1e-12, "{in_hw:?}->{out_hw:?}: {e:.3e}");
    }
}

#[test]
fn backward_is_the_adjoint_of_forward() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (n, c, in_hw, out_hw) in SHAPES {
        let plan = ResizePlan::bicubic_aa(in_hw, out_hw).expect("plan");
        let x = random(n * in_hw[0] * in_hw[1] * c, &mut rng);
        let g = random(n * out_hw[0] * out_hw[1] * c, &mut rng);
        let mut y = vec![0.0; g.len()];
        let mut dx = vec![0.0; x.len()];
        resize_forward(&plan, n, c, &x, &mut y).expect("forward");
        resize_backward(&plan, n, c, &g, &mut dx).expect("backward");
        let lhs: f64 = y.iter().zip(&g).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
        let e = (lhs - rhs).abs() / lhs.abs().max(rhs.abs()).max(1e-300);
        assert!(
            e < 1e-12,
            "{in_hw:?}->{out_hw:?}: <Rx,g>={lhs} <x,R^T g>={rhs}"
        );
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (n, c, in_hw, out_hw) in SHAPES.into_iter().take(6) {
        let plan = ResizePlan::bicubic_aa(in_hw, out_hw).expect("plan");
        let x = random(n * in_hw[0] * in_hw[1] * c, &mut rng);
        let g = random(n * out_hw[0] * out_hw[1] * c, &mut rng);
        let objective = |x: &[f64]| {
            let mut y = vec![0.0; g.len()];
            resize_forward(&plan, n, c, x, &mut y).expect("forward");
            y.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut dx = vec![0.0; x.len()];
        resize_backward(&plan, n, c, &g, &mut dx).expect("backward");
        let h = 1e-5;
        let fd: Vec<f64> = (0..x.len())
            .map(|i| {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += h;
                xm[i] -= h;
                (objective(&xp) - objective(&xm)) / (2.0 * h)
            })
            .collect();
        let e = rel_err(&dx, &fd);
        println!("fd {n}x{c} {in_hw:?}->{out_hw:?}: {e:.2e}");
        assert!(e < 1e-8, "{in_hw:?}->{out_hw:?}: {e:.3e}");
    }
}

#[test]
fn identity_size_is_exact_and_constants_are_preserved() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..2 * 6 * 5 * 3)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let plan = ResizePlan::bicubic_aa([6, 5], [6, 5]).expect("plan");
    let mut y = vec![0f32; x.len()];
    resize_forward(&plan, 2, 3, &x, &mut y).expect("forward");
    assert_eq!(x, y);
    resize_backward(&plan, 2, 3, &x, &mut y).expect("backward");
    assert_eq!(x, y);

    // Weights are renormalised after edge taps are dropped, so a constant stays constant.
    for (in_hw, out_hw) in [
        ([64, 64], [384, 384]),
        ([97, 50], [13, 384]),
        ([1, 1], [4, 4]),
    ] {
        let plan = ResizePlan::bicubic_aa(in_hw, out_hw).expect("plan");
        let x = vec![0.75f64; in_hw[0] * in_hw[1]];
        let mut y = vec![0.0; out_hw[0] * out_hw[1]];
        resize_forward(&plan, 1, 1, &x, &mut y).expect("forward");
        assert!(y.iter().all(|v| (v - 0.75).abs() < 1e-14));
    }
}

#[test]
fn plan_exposes_pytorch_supports() {
    // Downscaling by 3 stretches the support to ±6 input pixels: 12 taps in the interior.
    let plan = ResizePlan::bicubic_aa([30, 30], [10, 10]).expect("plan");
    assert_eq!(plan.height_weights().max_taps(), 12);
    // Upscaling keeps the 4-tap kernel; 1-pixel input collapses to one tap of weight 1.
    let plan = ResizePlan::bicubic_aa([8, 1], [20, 5]).expect("plan");
    assert_eq!(plan.height_weights().max_taps(), 4);
    let cols = plan.width_weights();
    assert_eq!(cols.max_taps(), 1);
    assert!(cols.weights().iter().all(|&w| w == 1.0));
    assert_eq!(plan.in_hw(), [8, 1]);
    assert_eq!(plan.out_hw(), [20, 5]);
}

#[test]
fn bad_arguments_are_errors() {
    assert!(matches!(
        ResizePlan::bicubic_aa([0, 4], [2, 2]),
        Err(KernelError::Geometry { .. })
    ));
    assert!(matches!(
        ResizePlan::bicubic_aa([4, 4], [2, 0]),
        Err(KernelError::Geometry { .. })
    ));
    let plan = ResizePlan::bicubic_aa([4, 4], [2, 3]).expect("plan");
    let x = vec![0f32; 2 * 16 * 3];
    let mut y = vec![0f32; 2 * 6 * 3];
    assert!(resize_forward(&plan, 2, 3, &x, &mut y).is_ok());
    assert!(matches!(
        resize_forward(&plan, 2, 3, &x[1..], &mut y),
        Err(KernelError::Length { what: "x", .. })
    ));
    assert!(matches!(
        resize_forward(&plan, 2, 3, &x, &mut y[1..]),
        Err(KernelError::Length { what: "y", .. })
    ));
    let mut dx = vec![0f32; 2 * 16 * 3];
    assert!(matches!(
        resize_backward(&plan, 2, 3, &y[1..], &mut dx),
        Err(KernelError::Length { what: "dy", .. })
    ));
    assert!(matches!(
        resize_backward(&plan, 1, 3, &y[..18], &mut dx),
        Err(KernelError::Length { what: "dx", .. })
    ));
    assert!(matches!(
        resize_forward(&plan, usize::MAX, 3, &x, &mut y),
        Err(KernelError::Geometry { .. })
    ));
}
