//! Op kernels on shapes large enough to take their blocked / parallel paths, against naive
//! f64 reference implementations written out here; and f32 runs against the same references
//! (the f32 fast paths: polynomial exp in SiLU and softmax, f64 accumulation of statistics).

mod ops_support;

use medvae_kernels::cpu::activation::*;
use medvae_kernels::cpu::batch_norm::*;
use medvae_kernels::cpu::group_norm::*;
use medvae_kernels::cpu::layer_norm::*;
use medvae_kernels::cpu::linear::*;
use medvae_kernels::cpu::pool::*;
use medvae_kernels::cpu::reduce::*;
use medvae_kernels::cpu::softmax::*;
use medvae_kernels::cpu::upsample::*;
use ops_support::{rng, to_f32, uniform};

fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

fn rel32(a: &[f32], b: &[f64]) -> f64 {
    rel(&a.iter().map(|&v| v as f64).collect::<Vec<_>>(), b)
}

fn assert_rel(what: &str, e: f64, tol: f64) {
    println!("{what}: rel err {e:.3e}");
    assert!(e <= tol, "{what}: rel err {e:.3e} > {tol:e}");
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

// ------------------------------------------------------------------ naive references

struct NaiveGn {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

/// GroupNorm (optionally + SiLU) forward and backward, one group at a time.
fn naive_group_norm(d: &GroupNormDims, silu: bool, x: &[f64], gamma: &[f64], beta: &[f64], dy: &[f64]) -> NaiveGn {
    let (s, c, g) = (d.spatial, d.channels, d.groups);
    let cg = c / g;
    let mut out = NaiveGn {
        y: vec![0.0; x.len()],
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
    };
    for n in 0..d.n {
        for gi in 0..g {
            let idx: Vec<usize> = (0..s)
                .flat_map(|si| (gi * cg..(gi + 1) * cg).map(move |ch| (n * s + si) * c + ch))
                .collect();
            let m = idx.len() as f64;
            let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
            let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
            let rstd = 1.0 / (var + d.eps).sqrt();
            let mut dh = vec![0.0; idx.len()];
            for (k, &i) in idx.iter().enumerate() {
                let ch = i % c;
                let h = (x[i] - mean) * rstd * gamma[ch] + beta[ch];
                if silu {
                    let sg = sigmoid(h);
                    out.y[i] = h * sg;
                    dh[k] = dy[i] * sg * (1.0 + h * (1.0 - sg));
                } else {
                    out.y[i] = h;
                    dh[k] = dy[i];
                }
            }
            let mut mean_dxhat = 0.0;
            let mut mean_dxhat_xhat = 0.0;
            for (k, &i) in idx.iter().enumerate() {
                let ch = i % c;
                let xhat = (x[i] - mean) * rstd;
                mean_dxhat += dh[k] * gamma[ch] / m;
                mean_dxhat_xhat += dh[k] * gamma[ch] * xhat / m;
                out.dgamma[ch] += dh[k] * xhat;
                out.dbeta[ch] += dh[k];
            }
            for (k, &i) in idx.iter().enumerate() {
                let ch = i % c;
                let xhat = (x[i] - mean) * rstd;
                out.dx[i] = rstd * (dh[k] * gamma[ch] - mean_dxhat - xhat * mean_dxhat_xhat);
            }
        }
    }
    out
}

/// Run a GroupNorm kernel pair in precision `T` and return (y, dx, dgamma, dbeta) as f64.
fn run_group_norm<T: medvae_kernels::Real>(
    d: &GroupNormDims,
    silu: bool,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    dy: &[f64],
) -> [Vec<f64>; 4] {
    let cv = |v: &[f64]| v.iter().map(|&a| T::c(a)).collect::<Vec<T>>();
    let back = |v: &[T]| v.iter().map(|a| a.f64()).collect::<Vec<f64>>();
    let (x, gamma, beta, dy) = (cv(x), cv(gamma), cv(beta), cv(dy));
    let mut y = vec![T::zero(); x.len()];
    let (mut m, mut r) = (vec![T::zero(); d.stats_len()], vec![T::zero(); d.stats_len()]);
    let affine = Affine { gamma: &gamma, beta: &beta };
    let stats = NormStatsMut { mean: &mut m, rstd: &mut r };
    if silu {
        group_norm_silu_forward(d, &x, affine, &mut y, stats).unwrap();
    } else {
        group_norm_forward(d, &x, affine, &mut y, stats).unwrap();
    }
    let mut dx = vec![T::nan(); x.len()];
    let (mut dg, mut db) = (vec![T::zero(); d.channels], vec![T::zero(); d.channels]);
    let stats = NormStats { mean: &m, rstd: &r };
    let grads = AffineGrads { dgamma: &mut dg, dbeta: &mut db };
    if silu {
        group_norm_silu_backward(d, &x, affine, stats, &dy, &mut dx, grads).unwrap();
    } else {
        group_norm_backward(d, &x, &gamma, stats, &dy, &mut dx, grads).unwrap();
    }
    [back(&y), back(&dx), back(&dg), back(&db)]
}

fn group_norm_large(silu: bool, n: usize, spatial: usize, seed: u64) {
    let d = GroupNormDims { n, spatial, channels: 64, groups: 32, eps: 1e-6 };
    let mut r = rng(seed);
    // A large common offset: the statistics must not cancel it away.
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0).iter().map(|v| v + 20.0).collect();
    let gamma = uniform(&mut r, 64, 0.5, 1.5);
    let beta = uniform(&mut r, 64, -0.5, 0.5);
    let dy = uniform(&mut r, d.len(), -1.0, 1.0);
    let want = naive_group_norm(&d, silu, &x, &gamma, &beta, &dy);
    let wants = [&want.y, &want.dx, &want.dgamma, &want.dbeta];
    let names = ["y", "dx", "dgamma", "dbeta"];
    let tag = if silu { "gn_silu" } else { "gn" };
    for (prec, got, tol) in [
        ("f64", run_group_norm::<f64>(&d, silu, &x, &gamma, &beta, &dy), 1e-11),
        ("f32", run_group_norm::<f32>(&d, silu, &x, &gamma, &beta, &dy), 2e-5),
    ] {
        for ((name, g), w) in names.iter().zip(&got).zip(wants) {
            assert_rel(&format!("{tag} n={n} {prec} {name}"), rel(g, w), tol);
        }
    }
}

#[test]
fn group_norm_large_matches_naive() {
    group_norm_large(false, 2, 4096, 1);
    group_norm_large(false, 1, 3000, 2);
}

#[test]
fn group_norm_silu_large_matches_naive() {
    group_norm_large(true, 2, 4096, 3);
    group_norm_large(true, 1, 3001, 4);
}

#[test]
fn batch_norm_large_matches_naive() {
    // Training BatchNorm = GroupNorm over all N·S rows with one channel per group.
    let d = BatchNormDims { n: 4, spatial: 2048, channels: 16, eps: 1e-5, momentum: 0.1 };
    let mut r = rng(5);
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0).iter().map(|v| v - 7.0).collect();
    let gamma = uniform(&mut r, 16, 0.5, 1.5);
    let beta = uniform(&mut r, 16, -0.5, 0.5);
    let dy = uniform(&mut r, d.len(), -1.0, 1.0);
    let as_gn = GroupNormDims { n: 1, spatial: 4 * 2048, channels: 16, groups: 16, eps: 1e-5 };
    let want = naive_group_norm(&as_gn, false, &x, &gamma, &beta, &dy);
    let (mut rm, mut rv) = (vec![0.0; 16], vec![1.0; 16]);
    let (mut m, mut rs) = (vec![0.0; 16], vec![0.0; 16]);
    let mut y = vec![0.0; d.len()];
    batch_norm_train_forward(
        &d,
        &x,
        Affine { gamma: &gamma, beta: &beta },
        RunningStatsMut { mean: &mut rm, var: &mut rv },
        &mut y,
        NormStatsMut { mean: &mut m, rstd: &mut rs },
    )
    .unwrap();
    assert_rel("bn y", rel(&y, &want.y), 1e-11);
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (vec![0.0; 16], vec![0.0; 16]);
    batch_norm_train_backward(
        &d,
        &x,
        &gamma,
        NormStats { mean: &m, rstd: &rs },
        &dy,
        &mut dx,
        AffineGrads { dgamma: &mut dg, dbeta: &mut db },
    )
    .unwrap();
    assert_rel("bn dx", rel(&dx, &want.dx), 1e-11);
    assert_rel("bn dgamma", rel(&dg, &want.dgamma), 1e-11);
    assert_rel("bn dbeta", rel(&db, &want.dbeta), 1e-11);

    // Eval mode with the running statistics just computed, against the direct formula.
    let mut ye = vec![0.0; d.len()];
    let running = RunningStats { mean: &rm, var: &rv };
    batch_norm_eval_forward(&d, &x, Affine { gamma: &gamma, beta: &beta }, running, &mut ye).unwrap();
    let direct: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = i % 16;
            (v - rm[ch]) / (rv[ch] + 1e-5).sqrt() * gamma[ch] + beta[ch]
        })
        .collect();
    assert_rel("bn eval y", rel(&ye, &direct), 1e-12);
}

#[test]
fn layer_norm_many_rows_matches_naive() {
    let d = LayerNormDims { rows: 3000, dim: 48, eps: 1e-6 };
    let mut r = rng(6);
    let x = uniform(&mut r, d.len(), -3.0, 3.0);
    let gamma = uniform(&mut r, 48, 0.5, 1.5);
    let beta = uniform(&mut r, 48, -0.5, 0.5);
    let dy = uniform(&mut r, d.len(), -1.0, 1.0);
    // LayerNorm = GroupNorm with one group over one "spatial" row of dim channels per sample.
    let as_gn = GroupNormDims { n: 3000, spatial: 1, channels: 48, groups: 1, eps: 1e-6 };
    let want = naive_group_norm(&as_gn, false, &x, &gamma, &beta, &dy);
    let mut y = vec![0.0; d.len()];
    let (mut m, mut rs) = (vec![0.0; 3000], vec![0.0; 3000]);
    let stats = NormStatsMut { mean: &mut m, rstd: &mut rs };
    layer_norm_forward(&d, &x, Affine { gamma: &gamma, beta: &beta }, &mut y, stats).unwrap();
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (vec![0.0; 48], vec![0.0; 48]);
    layer_norm_backward(
        &d,
        &x,
        &gamma,
        NormStats { mean: &m, rstd: &rs },
        &dy,
        &mut dx,
        AffineGrads { dgamma: &mut dg, dbeta: &mut db },
    )
    .unwrap();
    assert_rel("ln y", rel(&y, &want.y), 1e-12);
    assert_rel("ln dx", rel(&dx, &want.dx), 1e-12);
    assert_rel("ln dgamma", rel(&dg, &want.dgamma), 1e-12);
    assert_rel("ln dbeta", rel(&db, &want.dbeta), 1e-12);
}

// ------------------------------------------------------------------ pointwise, softmax

#[test]
fn pointwise_f32_long_matches_f64() {
    // Long enough for the parallel chunks; wide range for the polynomial exp.
    let x = uniform(&mut rng(7), 200_000, -95.0, 95.0);
    let xf = to_f32(&x);
    let x32: Vec<f64> = xf.iter().map(|&v| v as f64).collect();
    let silu: Vec<f64> = x32.iter().map(|&v| v * sigmoid(v)).collect();
    let mut y = vec![0.0f32; x.len()];
    silu_forward(&xf, &mut y).unwrap();
    assert_rel("silu f32", rel32(&y, &silu), 1e-6);
    // Element-wise, relative to each value (no large value hides a bad small one) where the
    // result is not negligibly small.
    for (&g, &w) in y.iter().zip(&silu) {
        if w.abs() > 1e-30 {
            assert!(((g as f64 - w) / w).abs() < 1e-5, "silu {g} vs {w}");
        }
    }
    let dy = to_f32(&uniform(&mut rng(8), x.len(), -1.0, 1.0));
    let mut dx = vec![0.0f32; x.len()];
    silu_backward(&xf, &dy, &mut dx).unwrap();
    let want: Vec<f64> = x32
        .iter()
        .zip(&dy)
        .map(|(&v, &g)| {
            let s = sigmoid(v);
            g as f64 * s * (1.0 + v * (1.0 - s))
        })
        .collect();
    assert_rel("silu' f32", rel32(&dx, &want), 1e-6);
    let mut gl = vec![0.0f32; x.len()];
    gelu_forward(&xf, &mut gl).unwrap();
    let want: Vec<f64> = x32.iter().map(|&v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()))).collect();
    assert_rel("gelu f32", rel32(&gl, &want), 1e-7);
}

#[test]
fn softmax_long_rows_match_naive() {
    let (rows, n) = (37, 2304);
    let x = uniform(&mut rng(9), rows * n, -20.0, 20.0);
    let dy = uniform(&mut rng(10), rows * n, -1.0, 1.0);
    let mut want = vec![0.0; x.len()];
    let mut want_dx = vec![0.0; x.len()];
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for j in 0..n {
            want[r * n + j] = (row[j] - m).exp() / s;
        }
        let dot: f64 = (0..n).map(|j| want[r * n + j] * dy[r * n + j]).sum();
        for j in 0..n {
            want_dx[r * n + j] = want[r * n + j] * (dy[r * n + j] - dot);
        }
    }
    let mut y = vec![0.0; x.len()];
    softmax_forward(&x, rows, n, &mut y).unwrap();
    assert_rel("softmax f64", rel(&y, &want), 1e-13);
    let mut dx = vec![0.0; x.len()];
    softmax_backward(&y, &dy, rows, n, &mut dx).unwrap();
    assert_rel("softmax' f64", rel(&dx, &want_dx), 1e-13);
    let mut yf = to_f32(&x);
    softmax_inplace(&mut yf, rows, n).unwrap();
    assert_rel("softmax f32", rel32(&yf, &want), 1e-6);
}

// ------------------------------------------------------------------ matmul

fn naive_matmul(g: &Gemm, a: &[f64], b: &[f64], c: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; g.m * g.n];
    for i in 0..g.m {
        for j in 0..g.n {
            let mut acc = 0.0;
            for p in 0..g.k {
                let av = if g.trans_a { a[p * g.m + i] } else { a[i * g.k + p] };
                let bv = if g.trans_b { b[j * g.k + p] } else { b[p * g.n + j] };
                acc += av * bv;
            }
            let prev = if g.beta == 0.0 { 0.0 } else { g.beta * c[i * g.n + j] };
            out[i * g.n + j] = g.alpha * acc + prev;
        }
    }
    out
}

#[test]
fn matmul_all_layouts_match_naive() {
    let mut r = rng(11);
    for (m, n, k) in [(5, 7, 3), (1, 1, 1), (64, 96, 80), (3, 200, 130), (4, 5, 0)] {
        for ta in [false, true] {
            for tb in [false, true] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                    let g = Gemm { m, n, k, trans_a: ta, trans_b: tb, alpha, beta };
                    let a = uniform(&mut r, m * k, -1.0, 1.0);
                    let b = uniform(&mut r, k * n, -1.0, 1.0);
                    let mut c = uniform(&mut r, m * n, -1.0, 1.0);
                    if beta == 0.0 {
                        // beta = 0 must not read C: NaNs there must not leak out.
                        c.iter_mut().for_each(|v| *v = f64::NAN);
                    }
                    let want = naive_matmul(&g, &a, &b, &c);
                    matmul(&g, &a, &b, &mut c).unwrap();
                    let e = rel(&c, &want);
                    assert!(e < 1e-13 || (want.iter().all(|&v| v == 0.0) && c.iter().all(|&v| v == 0.0)), "{g:?}: rel err {e:e}");
                    let a32 = to_f32(&a);
                    let b32 = to_f32(&b);
                    let mut c32 = vec![0.0f32; m * n];
                    let g0 = Gemm { beta: 0.0, ..g };
                    matmul(&g0, &a32, &b32, &mut c32).unwrap();
                    let want0 = naive_matmul(&g0, &a, &b, &c);
                    if want0.iter().any(|&v| v != 0.0) {
                        assert!(rel32(&c32, &want0) < 1e-5, "{g0:?} f32");
                    }
                }
            }
        }
    }
}

#[test]
fn bmm_matches_naive() {
    let mut r = rng(12);
    // Many small products (parallel over the batch) and a few large ones (parallel gemm).
    for (batch, m, n, k) in [(12, 7, 5, 9), (2, 90, 70, 110)] {
        let g = Gemm { trans_b: true, ..Gemm::new(m, n, k) };
        let a = uniform(&mut r, batch * m * k, -1.0, 1.0);
        let b = uniform(&mut r, batch * k * n, -1.0, 1.0);
        let mut c = vec![0.0; batch * m * n];
        bmm(&g, batch, &a, &b, &mut c).unwrap();
        for i in 0..batch {
            let want = naive_matmul(
                &g,
                &a[i * m * k..(i + 1) * m * k],
                &b[i * k * n..(i + 1) * k * n],
                &[],
            );
            assert!(rel(&c[i * m * n..(i + 1) * m * n], &want) < 1e-13, "batch entry {i}");
        }
        // One B shared by every entry (stride 0).
        let shared = &b[..k * n];
        let strides = BatchStrides { a: m * k, b: 0, c: m * n };
        bmm_strided(&g, batch, strides, &a, shared, &mut c).unwrap();
        for i in 0..batch {
            let want = naive_matmul(&g, &a[i * m * k..(i + 1) * m * k], shared, &[]);
            assert!(rel(&c[i * m * n..(i + 1) * m * n], &want) < 1e-13, "shared entry {i}");
        }
    }
}

#[test]
fn linear_large_f32_matches_naive() {
    let d = LinearDims { rows: 197, in_features: 256, out_features: 384 };
    let mut r = rng(13);
    let x = uniform(&mut r, d.rows * 256, -1.0, 1.0);
    let w = uniform(&mut r, 384 * 256, -0.1, 0.1);
    let b = uniform(&mut r, 384, -1.0, 1.0);
    let dy = uniform(&mut r, d.rows * 384, -1.0, 1.0);
    let mut want = vec![0.0; d.rows * 384];
    for i in 0..d.rows {
        for o in 0..384 {
            want[i * 384 + o] = b[o] + (0..256).map(|p| x[i * 256 + p] * w[o * 256 + p]).sum::<f64>();
        }
    }
    let (x32, w32, b32, dy32) = (to_f32(&x), to_f32(&w), to_f32(&b), to_f32(&dy));
    let mut y = vec![f32::NAN; d.rows * 384];
    linear_forward(&d, &x32, &w32, Some(&b32), &mut y).unwrap();
    assert_rel("linear f32 y", rel32(&y, &want), 1e-6);
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = vec![0.0f32; w.len()];
    let grads = LinearGrads { dx: Some(&mut dx), dweight: Some(&mut dw), dbias: None };
    linear_backward(&d, &x32, &w32, &dy32, grads).unwrap();
    let mut want_dx = vec![0.0; x.len()];
    let mut want_dw = vec![0.0; w.len()];
    for i in 0..d.rows {
        for o in 0..384 {
            let g = dy32[i * 384 + o] as f64;
            for p in 0..256 {
                want_dx[i * 256 + p] += g * w32[o * 256 + p] as f64;
                want_dw[o * 256 + p] += g * x32[i * 256 + p] as f64;
            }
        }
    }
    assert_rel("linear f32 dx", rel32(&dx, &want_dx), 1e-6);
    assert_rel("linear f32 dw", rel32(&dw, &want_dw), 1e-6);
}

// ------------------------------------------------------------------ resampling, reductions

#[test]
fn upsample_and_pool_large_match_naive() {
    let d = UpsampleDims { n: 2, spatial: [3, 17, 19], channels: 5, scale: [2, 2, 2] };
    let x = uniform(&mut rng(14), d.in_len(), -1.0, 1.0);
    let mut y = vec![0.0; d.out_len()];
    upsample_nearest_forward(&d, &x, &mut y).unwrap();
    let [od, oh, ow] = d.out_spatial();
    let [_, ih, iw] = d.spatial;
    for n in 0..2 {
        for z in 0..od {
            for h in 0..oh {
                for w in 0..ow {
                    for c in 0..5 {
                        let o = (((n * od + z) * oh + h) * ow + w) * 5 + c;
                        let i = (((n * 3 + z / 2) * ih + h / 2) * iw + w / 2) * 5 + c;
                        assert_eq!(y[o], x[i]);
                    }
                }
            }
        }
    }
    let mut dx = vec![0.0; d.in_len()];
    upsample_nearest_backward(&d, &y, &mut dx).unwrap();
    // Every input cell was copied 8 times.
    assert!(dx.iter().zip(&x).all(|(g, v)| (g - 8.0 * v).abs() < 1e-12));

    let p = MaxPoolDims { n: 2, spatial: [1, 33, 30], channels: 7 };
    let x = uniform(&mut rng(15), p.in_len(), -1.0, 1.0);
    let mut y = vec![0.0; p.out_len()];
    let mut arg = vec![0u8; p.out_len()];
    max_pool2x2_forward(&p, &x, &mut y, &mut arg).unwrap();
    let [_, oh, ow] = p.out_spatial();
    for n in 0..2 {
        for h in 0..oh {
            for w in 0..ow {
                for c in 0..7 {
                    let at = |dh: usize, dw: usize| x[((n * 33 + 2 * h + dh) * 30 + 2 * w + dw) * 7 + c];
                    let m = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    assert_eq!(y[((n * oh + h) * ow + w) * 7 + c], m);
                }
            }
        }
    }
    let mut dx = vec![f64::NAN; p.in_len()];
    max_pool2x2_backward(&p, &arg, &y, &mut dx).unwrap();
    // The gradient lands exactly on the maxima; the dropped last row gets none.
    let nonzero = dx.iter().filter(|&&v| v != 0.0).count();
    assert_eq!(nonzero, p.out_len());
    assert!(dx.iter().all(|v| v.is_finite()));
}

#[test]
fn max_pool_propagates_nan_and_first_tie_wins() {
    let p = MaxPoolDims { n: 1, spatial: [1, 2, 2], channels: 2 };
    let x = [1.0f32, 2.0, 1.0, f32::NAN, 1.0, 2.0, 0.5, 3.0];
    let mut y = [0.0f32; 2];
    let mut arg = [9u8; 2];
    max_pool2x2_forward(&p, &x, &mut y, &mut arg).unwrap();
    assert_eq!((y[0], arg[0]), (1.0, 0));
    assert!(y[1].is_nan());
    assert_eq!(arg[1], 1);
}

#[test]
fn reductions_large_match_naive() {
    let x = uniform(&mut rng(16), 300_001, -1.0, 1.0);
    let want: f64 = x.iter().sum();
    assert!((sum(&x) - want).abs() < 1e-9);
    assert!((mean(&x).unwrap() - want / x.len() as f64).abs() < 1e-14);
    let x32 = to_f32(&x);
    let want32: f64 = x32.iter().map(|&v| v as f64).sum();
    assert!((sum_f64(&x32) - want32).abs() < 1e-9);
    let mut per = vec![0.0; 7];
    let x7 = &x[..7 * 40_000];
    sum_per_sample(x7, 7, &mut per).unwrap();
    for (i, &p) in per.iter().enumerate() {
        let w: f64 = x7[i * 40_000..(i + 1) * 40_000].iter().sum();
        assert!((p - w).abs() < 1e-10);
    }
}
