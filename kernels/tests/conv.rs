//! Convolution kernels against PyTorch golden files, f64 finite differences, and a naive
//! direct convolution written independently of the implicit-GEMM code.

use medvae_kernels::cpu::conv::{
    conv_backward_data, conv_backward_data_with, conv_backward_weight, conv_backward_weight_with,
    conv_forward, conv_forward_with, weight_from_torch, weight_to_torch, ConvAlgorithm,
    ConvGeometry, ConvScratch,
};
use medvae_kernels::{KernelError, Real};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Independent references

/// Visit every `(y pixel, weight tap, x pixel)` triple of a convolution (pixel indices
/// without channels), straight from the definition of a strided, zero-padded correlation.
fn for_each_pair(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let (o, k) = (g.out_spatial(), g.kernel);
    for ypix in 0..g.batch * o.iter().product::<usize>() {
        let n = ypix / (o[0] * o[1] * o[2]);
        let out = [ypix / (o[1] * o[2]) % o[0], ypix / o[2] % o[1], ypix % o[2]];
        'taps: for tap in 0..k.iter().product() {
            let kk = [tap / (k[1] * k[2]), tap / k[2] % k[1], tap % k[2]];
            let mut xpix = n;
            for i in 0..3 {
                let c = (out[i] * g.stride[i] + kk[i]) as isize - g.pad_lo[i] as isize;
                if c < 0 || c >= g.in_spatial[i] as isize {
                    continue 'taps;
                }
                xpix = xpix * g.in_spatial[i] + c as usize;
            }
            f(ypix, tap, xpix);
        }
    }
}

/// Output and gradients of one run, widened to f64.
struct Grads {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
}

fn naive(g: &ConvGeometry, x: &[f64], w: &[f64], b: &[f64], dy: &[f64]) -> Grads {
    let (ci_n, co_n) = (g.cin, g.cout);
    let mut r = Grads {
        y: vec![0.0; g.output_len()],
        dx: vec![0.0; g.input_len()],
        dw: vec![0.0; g.weight_len()],
        db: vec![0.0; co_n],
    };
    for (p, v) in r.y.iter_mut().enumerate() {
        *v = b[p % co_n];
    }
    for_each_pair(g, |yp, tap, xp| {
        for ci in 0..ci_n {
            let xv = x[xp * ci_n + ci];
            for co in 0..co_n {
                let wi = (tap * ci_n + ci) * co_n + co;
                r.y[yp * co_n + co] += xv * w[wi];
                r.dx[xp * ci_n + ci] += dy[yp * co_n + co] * w[wi];
                r.dw[wi] += xv * dy[yp * co_n + co];
            }
        }
    });
    for (p, v) in dy.iter().enumerate() {
        r.db[p % co_n] += v;
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn rel_err(a: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(a.len(), reference.len(), "length mismatch");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite value");
    let num: f64 = a.iter().zip(reference).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = reference.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn cast<T: Real>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::c(x)).collect()
}

fn widen<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.f64()).collect()
}

/// Both algorithms: `Auto` runs Winograd where it applies, `ImplicitGemm` never does.
const ALGORITHMS: [ConvAlgorithm; 2] = [ConvAlgorithm::Auto, ConvAlgorithm::ImplicitGemm];

/// Run the kernels under test in precision T. `dw0` is the initial weight-gradient
/// accumulator (the bias one starts at 0.5, removed again before returning).
fn run_kernels<T: Real>(
    g: &ConvGeometry,
    algorithm: ConvAlgorithm,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    dy: &[f64],
    dw0: &[f64],
) -> Grads {
    let (x, w, b, dy) = (cast::<T>(x), cast::<T>(w), cast::<T>(b), cast::<T>(dy));
    let mut scratch = ConvScratch::with_algorithm(algorithm);
    let mut y = vec![T::c(f64::NAN); g.output_len()];
    conv_forward_with(&mut scratch, g, &x, &w, Some(&b), &mut y).expect("forward");
    let mut dx = vec![T::c(f64::NAN); g.input_len()];
    conv_backward_data_with(&mut scratch, g, &dy, &w, &mut dx).expect("backward data");
    let mut dw = cast::<T>(dw0);
    let mut db = vec![T::c(0.5); g.cout];
    conv_backward_weight_with(&mut scratch, g, &x, &dy, &mut dw, Some(&mut db))
        .expect("backward weight");
    Grads {
        y: widen(&y),
        dx: widen(&dx),
        dw: widen(&dw),
        db: widen(&db).iter().map(|v| v - 0.5).collect(),
    }
}

/// `geom(batch, input, [cin, cout], [kernel, stride, pad_lo, pad_hi])`.
fn geom(
    batch: usize,
    input: [usize; 3],
    [cin, cout]: [usize; 2],
    [kernel, stride, pad_lo, pad_hi]: [[usize; 3]; 4],
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_spatial: input,
        cin,
        cout,
        kernel,
        stride,
        pad_lo,
        pad_hi,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Golden files

fn golden_dir() -> PathBuf {
    match std::env::var_os("MEDVAE_GOLDEN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"),
    }
}

struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn load(st: &safetensors::SafeTensors, name: &str, file: &str) -> Tensor {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{file}: tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{file}: {name} not f32");
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect();
    Tensor {
        shape: t.shape().to_vec(),
        data,
    }
}

/// NC(D)HW -> N(D)HWC, returning the data and [n, d, h, w, c].
fn to_channels_last(t: &Tensor) -> (Vec<f64>, [usize; 5]) {
    let s = &t.shape;
    let (n, c, d, h, w) = match s.len() {
        4 => (s[0], s[1], 1, s[2], s[3]),
        5 => (s[0], s[1], s[2], s[3], s[4]),
        _ => panic!("unexpected rank {s:?}"),
    };
    let sp = d * h * w;
    let mut out = vec![0.0; t.data.len()];
    for ni in 0..n {
        for ci in 0..c {
            for p in 0..sp {
                out[(ni * sp + p) * c + ci] = t.data[(ni * c + ci) * sp + p];
            }
        }
    }
    (out, [n, d, h, w, c])
}

fn golden_geometry(case: &serde_json::Value, x: [usize; 5], cout: usize) -> ConvGeometry {
    let num = |k: &str| case[k].as_u64().expect("case field") as usize;
    let (s, p, k) = (num("stride"), num("padding"), num("kernel"));
    let is3d = case["op"] == "conv3d";
    let mut g = if is3d {
        ConvGeometry::conv3d(x[0], [x[1], x[2], x[3]], x[4], cout, k, s, p)
    } else {
        ConvGeometry::conv2d(x[0], [x[2], x[3]], x[4], cout, k, s, p)
    };
    let key = if is3d {
        "pre_pad_lrtbfb"
    } else {
        "pre_pad_lrtb"
    };
    if let Some(pp) = case[key].as_array() {
        let pp: Vec<usize> = pp.iter().map(|v| v.as_u64().unwrap() as usize).collect();
        // (left, right, top, bottom[, front, back]) = (w_lo, w_hi, h_lo, h_hi[, d_lo, d_hi]).
        for (dim, pair) in [(2, 0), (1, 1), (0, 2)] {
            if 2 * pair + 1 < pp.len() {
                g.pad_lo[dim] += pp[2 * pair];
                g.pad_hi[dim] += pp[2 * pair + 1];
            }
        }
    }
    g
}

#[test]
fn golden_conv_cases() {
    let dir = golden_dir().join("ops");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "golden directory {} not readable ({e}); set MEDVAE_GOLDEN to the golden folder",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            (name.starts_with("conv2d_") || name.starts_with("conv3d_"))
                && name.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected 8 golden conv cases, found {}",
        files.len()
    );
    for path in &files {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).expect("read golden file");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("metadata");
        let case_text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("case"))
            .expect("case metadata");
        let case: serde_json::Value = serde_json::from_str(case_text).expect("case json");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let (x, xs) = to_channels_last(&load(&st, "in.x", &file));
        let wt = load(&st, "param.weight", &file);
        let (cout, cin) = (wt.shape[0], wt.shape[1]);
        let g = golden_geometry(&case, xs, cout);
        assert_eq!(cin, g.cin, "{file}");
        let w = weight_from_torch(&wt.data, cout, cin, g.kernel);
        let b = load(&st, "param.bias", &file).data;
        let (dy, ys) = to_channels_last(&load(&st, "gout.y", &file));
        assert_eq!(&ys[1..4], &g.out_spatial()[..], "{file}: output extent");
        let (y_ref, _) = to_channels_last(&load(&st, "out.y", &file));
        let (dx_ref, _) = to_channels_last(&load(&st, "grad.in.x", &file));
        let dw_ref = weight_from_torch(
            &load(&st, "grad.param.weight", &file).data,
            cout,
            cin,
            g.kernel,
        );
        let db_ref = load(&st, "grad.param.bias", &file).data;
        for alg in ALGORITHMS {
            let got = run_kernels::<f32>(&g, alg, &x, &w, &b, &dy, &vec![0.0; w.len()]);
            for (what, a, r) in [
                ("y", &got.y, &y_ref),
                ("dx", &got.dx, &dx_ref),
                ("dw", &got.dw, &dw_ref),
                ("db", &got.db, &db_ref),
            ] {
                let e = rel_err(a, r);
                println!("{file} {alg:?}: {what} rel err {e:.2e}");
                assert!(
                    e <= 1e-4,
                    "{file} {alg:?}: {what} relative error {e:.3e} > 1e-4"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Finite differences (f64)

/// Geometries exercised by the finite-difference and naive comparisons.
fn small_geometries() -> Vec<ConvGeometry> {
    vec![
        ConvGeometry::conv2d(2, [5, 6], 3, 4, 3, 1, 1),
        ConvGeometry::conv2d(2, [5, 4], 3, 2, 1, 1, 0),
        ConvGeometry::conv2d(2, [8, 7], 2, 3, 4, 2, 1),
        ConvGeometry::conv2d(2, [6, 6], 3, 2, 4, 1, 1),
        geom(
            2,
            [1, 7, 6],
            [3, 4],
            [[1, 3, 3], [1, 2, 2], [0, 0, 0], [0, 1, 1]],
        ),
        geom(
            2,
            [1, 5, 7],
            [2, 3],
            [[1, 2, 3], [1, 1, 2], [0, 2, 0], [0, 0, 3]],
        ),
        ConvGeometry::conv3d(2, [4, 3, 5], 2, 3, 3, 1, 1),
        ConvGeometry::conv3d(2, [3, 4, 2], 3, 2, 1, 1, 0),
        geom(
            2,
            [5, 4, 5],
            [2, 3],
            [[3, 3, 3], [2, 2, 2], [0, 0, 0], [1, 1, 1]],
        ),
        geom(
            2,
            [4, 5, 4],
            [2, 2],
            [[4, 4, 4], [2, 2, 2], [1, 1, 1], [1, 1, 1]],
        ),
        // Stride larger than the kernel, padding larger than the kernel.
        geom(
            2,
            [1, 7, 8],
            [2, 3],
            [[1, 1, 2], [1, 3, 3], [0, 2, 1], [0, 1, 2]],
        ),
        // Winograd-eligible: asymmetric pads, odd outputs, 1×3×3 on a 3D tensor.
        geom(
            2,
            [1, 7, 5],
            [3, 5],
            [[1, 3, 3], [1, 1, 1], [0, 2, 0], [0, 0, 1]],
        ),
        geom(
            1,
            [3, 6, 7],
            [5, 3],
            [[1, 3, 3], [1, 1, 1], [0, 1, 1], [0, 1, 1]],
        ),
    ]
}

fn loss(g: &ConvGeometry, x: &[f64], w: &[f64], b: &[f64], gout: &[f64]) -> f64 {
    let mut y = vec![0.0; g.output_len()];
    conv_forward(g, x, w, Some(b), &mut y).expect("forward");
    y.iter().zip(gout).map(|(a, b)| a * b).sum()
}

fn finite_difference(mut f: impl FnMut(&[f64]) -> f64, at: &[f64]) -> Vec<f64> {
    // The loss is linear in each argument: central differences are exact up to rounding.
    let h = 1e-2;
    let mut p = at.to_vec();
    (0..at.len())
        .map(|i| {
            p[i] = at[i] + h;
            let up = f(&p);
            p[i] = at[i] - h;
            let down = f(&p);
            p[i] = at[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for g in small_geometries() {
        let x = random(&mut rng, g.input_len());
        let w = random(&mut rng, g.weight_len());
        let b = random(&mut rng, g.cout);
        let gout = random(&mut rng, g.output_len());
        let fd_x = finite_difference(|p| loss(&g, p, &w, &b, &gout), &x);
        let fd_w = finite_difference(|p| loss(&g, &x, p, &b, &gout), &w);
        let fd_b = finite_difference(|p| loss(&g, &x, &w, p, &gout), &b);
        for alg in ALGORITHMS {
            let got = run_kernels::<f64>(&g, alg, &x, &w, &b, &gout, &vec![0.0; w.len()]);
            for (what, a, r) in [
                ("dx", &got.dx, &fd_x),
                ("dw", &got.dw, &fd_w),
                ("db", &got.db, &fd_b),
            ] {
                let e = rel_err(a, r);
                assert!(
                    e <= 1e-9,
                    "{g:?} {alg:?}: {what} vs finite differences: {e:.3e}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Against the naive direct convolution, with channel counts that exercise GEMM blocking

fn compare_with_naive<T: Real>(g: &ConvGeometry, tol: f64, rng: &mut ChaCha8Rng) {
    let x = random(rng, g.input_len());
    let w = random(rng, g.weight_len());
    let b = random(rng, g.cout);
    let dy = random(rng, g.output_len());
    let dw0 = random(rng, g.weight_len());
    let r = naive(g, &x, &w, &b, &dy);
    let dw_ref: Vec<f64> = r.dw.iter().zip(&dw0).map(|(a, b)| a + b).collect();
    for alg in ALGORITHMS {
        let got = run_kernels::<T>(g, alg, &x, &w, &b, &dy, &dw0);
        let dw_got: Vec<f64> = got.dw.iter().zip(&dw0).map(|(a, b)| a - b).collect();
        for (what, a, rf) in [
            ("y", &got.y, &r.y),
            ("dx", &got.dx, &r.dx),
            ("dw (accumulated)", &got.dw, &dw_ref),
            ("dw (increment)", &dw_got, &r.dw),
            ("db", &got.db, &r.db),
        ] {
            let e = rel_err(a, rf);
            let ty = std::any::type_name::<T>();
            assert!(e <= tol, "{g:?} ({ty}, {alg:?}): {what} rel err {e:.3e}");
        }
    }
}

fn larger_geometries() -> Vec<ConvGeometry> {
    vec![
        ConvGeometry::conv2d(1, [20, 18], 64, 48, 3, 1, 1),
        ConvGeometry::conv2d(2, [21, 19], 13, 29, 3, 1, 1),
        ConvGeometry::conv2d(2, [9, 11], 40, 72, 1, 1, 0),
        geom(
            2,
            [1, 16, 13],
            [48, 32],
            [[1, 3, 3], [1, 2, 2], [0, 0, 0], [0, 1, 1]],
        ),
        ConvGeometry::conv2d(1, [16, 16], 17, 40, 4, 2, 1),
        ConvGeometry::conv2d(1, [9, 10], 64, 1, 4, 1, 1),
        ConvGeometry::conv2d(1, [12, 12], 33, 65, 3, 1, 0),
        ConvGeometry::conv3d(1, [6, 7, 8], 24, 40, 3, 1, 1),
        geom(
            1,
            [7, 6, 9],
            [20, 16],
            [[3, 3, 3], [2, 2, 2], [0, 0, 0], [1, 1, 1]],
        ),
        ConvGeometry::conv3d(2, [3, 5, 4], 36, 20, 1, 1, 0),
        // Many chunks and Winograd blocks: boundaries and per-thread partial sums line up.
        ConvGeometry::conv2d(2, [40, 37], 32, 24, 3, 1, 1),
        geom(1, [9, 20, 21], [8, 16], [[3, 3, 3], [1; 3], [1; 3], [1; 3]]),
        geom(
            1,
            [5, 9, 7],
            [16, 24],
            [[2, 3, 1], [1, 2, 3], [1, 0, 2], [0, 2, 1]],
        ),
    ]
}

#[test]
fn fast_path_matches_naive_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for g in small_geometries().iter().chain(&larger_geometries()) {
        compare_with_naive::<f64>(g, 1e-12, &mut rng);
    }
}

#[test]
fn fast_path_matches_naive_f32() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for g in small_geometries().iter().chain(&larger_geometries()) {
        compare_with_naive::<f32>(g, 2e-6, &mut rng);
    }
}

/// One scratch reused across geometries, algorithms and thread pools of different sizes
/// (its per-thread buffers must never leak results from one call into the next).
#[test]
fn scratch_reuse_across_geometries_and_pools() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let mut scratch = ConvScratch::<f64>::new();
    let geometries = [
        larger_geometries()[0],
        larger_geometries()[3],
        small_geometries()[8],
    ];
    for threads in [3, 1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (i, g) in geometries.iter().enumerate() {
            let alg = ALGORITHMS[(i + threads) % 2];
            scratch.set_algorithm(alg);
            let (x, w, dy) = (
                random(&mut rng, g.input_len()),
                random(&mut rng, g.weight_len()),
                random(&mut rng, g.output_len()),
            );
            let r = naive(g, &x, &w, &vec![0.0; g.cout], &dy);
            let (mut y, mut dx, mut dw) = (
                vec![0.0; g.output_len()],
                vec![0.0; g.input_len()],
                vec![0.0; g.weight_len()],
            );
            pool.install(|| {
                conv_forward_with(&mut scratch, g, &x, &w, None, &mut y).unwrap();
                conv_backward_data_with(&mut scratch, g, &dy, &w, &mut dx).unwrap();
                conv_backward_weight_with(&mut scratch, g, &x, &dy, &mut dw, None).unwrap();
            });
            for (what, a, rf) in [("y", &y, &r.y), ("dx", &dx, &r.dx), ("dw", &dw, &r.dw)] {
                let e = rel_err(a, rf);
                assert!(
                    e <= 1e-12,
                    "{g:?} {alg:?} {threads} threads: {what} {e:.3e}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Refusals and weight layout

#[test]
fn bad_geometry_and_lengths_are_errors() {
    let g = ConvGeometry::conv2d(1, [4, 4], 2, 3, 3, 1, 1);
    let x = vec![0f32; g.input_len()];
    let w = vec![0f32; g.weight_len()];
    let mut y = vec![0f32; g.output_len()];
    let mut dx = vec![0f32; g.input_len()];
    let mut dw = vec![0f32; g.weight_len()];
    let is_len = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Length { .. }));
    let is_geom = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Geometry { .. }));
    assert!(conv_forward(&g, &x, &w, None, &mut y).is_ok());
    assert!(is_len(conv_forward(&g, &x[1..], &w, None, &mut y)));
    assert!(is_len(conv_forward(&g, &x, &w[1..], None, &mut y)));
    assert!(is_len(conv_forward(&g, &x, &w, None, &mut y[1..])));
    assert!(is_len(conv_forward(&g, &x, &w, Some(&[0.0; 2]), &mut y)));
    assert!(is_len(conv_backward_data(&g, &y[1..], &w, &mut dx)));
    assert!(is_len(conv_backward_data(&g, &y, &w, &mut dx[1..])));
    assert!(is_len(conv_backward_weight(&g, &x, &y, &mut dw[1..], None)));
    let mut db = [0f32; 2];
    assert!(is_len(conv_backward_weight(
        &g,
        &x,
        &y,
        &mut dw,
        Some(&mut db)
    )));

    let bad = [
        ConvGeometry { batch: 0, ..g },
        ConvGeometry { cin: 0, ..g },
        ConvGeometry { cout: 0, ..g },
        ConvGeometry {
            stride: [1, 0, 1],
            ..g
        },
        ConvGeometry {
            kernel: [1, 7, 3],
            ..g
        },
        ConvGeometry {
            in_spatial: [1, 0, 4],
            ..g
        },
        ConvGeometry {
            in_spatial: [1, usize::MAX, 4],
            ..g
        },
        ConvGeometry {
            pad_hi: [0, usize::MAX, 0],
            ..g
        },
        ConvGeometry::conv3d(1 << 20, [1 << 20, 1 << 20, 1 << 20], 64, 64, 3, 1, 1),
    ];
    for b in &bad {
        assert!(b.validate().is_err(), "{b:?} accepted");
        assert!(is_geom(conv_forward(b, &x, &w, None, &mut y)), "{b:?}");
        assert!(is_geom(conv_backward_data(b, &y, &w, &mut dx)), "{b:?}");
        assert!(
            is_geom(conv_backward_weight(b, &x, &y, &mut dw, None)),
            "{b:?}"
        );
    }
}

#[test]
fn weight_layout_round_trips() {
    let (cout, cin, k) = (3, 2, [2, 3, 4]);
    let torch: Vec<u32> = (0..(cout * cin * 24) as u32).collect();
    let ours = weight_from_torch(&torch, cout, cin, k);
    // ours[kz, ky, kx, i, o] == torch[o, i, kz, ky, kx]
    let (o, i, kz, ky, kx) = (2, 1, 1, 2, 3);
    assert_eq!(
        ours[(((kz * 3 + ky) * 4 + kx) * cin + i) * cout + o],
        torch[(((o * cin + i) * 2 + kz) * 3 + ky) * 4 + kx]
    );
    assert_eq!(weight_to_torch(&ours, cout, cin, k), torch);
}
