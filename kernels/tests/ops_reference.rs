//! Op kernels on shapes large enough to take their blocked / parallel paths, against naive
//! f64 reference implementations written out here; and f32 runs against the same references
//! (the f32 fast paths: polynomial exp in SiLU and softmax, the gemm crate). Normalisations:
//! `ops_reference_norm.rs`.

mod ops_support;

use medvae_kernels::cpu::activation::*;
use medvae_kernels::cpu::linear::*;
use medvae_kernels::cpu::pool::*;
use medvae_kernels::cpu::reduce::*;
use medvae_kernels::cpu::softmax::*;
use medvae_kernels::cpu::upsample::*;
use ops_support::{assert_rel, rel, rel32, rng, sigmoid, to_f32, uniform};

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
    let want: Vec<f64> = x32
        .iter()
        .map(|&v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt())))
        .collect();
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
                let av = if g.trans_a {
                    a[p * g.m + i]
                } else {
                    a[i * g.k + p]
                };
                let bv = if g.trans_b {
                    b[j * g.k + p]
                } else {
                    b[p * g.n + j]
                };
                acc += av * bv;
            }
            let prev = if g.beta == 0.0 {
                0.0
            } else {
                g.beta * c[i * g.n + j]
            };
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
                    let g = Gemm {
                        m,
                        n,
                        k,
                        trans_a: ta,
                        trans_b: tb,
                        alpha,
                        beta,
                    };
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
                    assert!(
                        e < 1e-13
                            || (want.iter().all(|&v| v == 0.0) && c.iter().all(|&v| v == 0.0)),
                        "{g:?}: rel err {e:e}"
                    );
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
        let g = Gemm {
            trans_b: true,
            ..Gemm::new(m, n, k)
        };
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
            assert!(
                rel(&c[i * m * n..(i + 1) * m * n], &want) < 1e-13,
                "batch entry {i}"
            );
        }
        // One B shared by every entry (stride 0).
        let shared = &b[..k * n];
        let strides = BatchStrides {
            a: m * k,
            b: 0,
            c: m * n,
        };
        bmm_strided(&g, batch, strides, &a, shared, &mut c).unwrap();
        for i in 0..batch {
            let want = naive_matmul(&g, &a[i * m * k..(i + 1) * m * k], shared, &[]);
            assert!(
                rel(&c[i * m * n..(i + 1) * m * n], &want) < 1e-13,
                "shared entry {i}"
            );
        }
    }
}

#[test]
fn linear_large_f32_matches_naive() {
    let d = LinearDims {
        rows: 197,
        in_features: 256,
        out_features: 384,
    };
    let mut r = rng(13);
    let x = uniform(&mut r, d.rows * 256, -1.0, 1.0);
    let w = uniform(&mut r, 384 * 256, -0.1, 0.1);
    let b = uniform(&mut r, 384, -1.0, 1.0);
    let dy = uniform(&mut r, d.rows * 384, -1.0, 1.0);
    let mut want = vec![0.0; d.rows * 384];
    for i in 0..d.rows {
        for o in 0..384 {
            want[i * 384 + o] = b[o]
                + (0..256)
                    .map(|p| x[i * 256 + p] * w[o * 256 + p])
                    .sum::<f64>();
        }
    }
    let (x32, w32, b32, dy32) = (to_f32(&x), to_f32(&w), to_f32(&b), to_f32(&dy));
    let mut y = vec![f32::NAN; d.rows * 384];
    linear_forward(&d, &x32, &w32, Some(&b32), &mut y).unwrap();
    assert_rel("linear f32 y", rel32(&y, &want), 1e-6);
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = vec![0.0f32; w.len()];
    let grads = LinearGrads {
        dx: Some(&mut dx),
        dweight: Some(&mut dw),
        dbias: None,
    };
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
    let d = UpsampleDims {
        n: 2,
        spatial: [3, 17, 19],
        channels: 5,
        scale: [2, 2, 2],
    };
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

    let p = MaxPoolDims {
        n: 2,
        spatial: [1, 33, 30],
        channels: 7,
    };
    let x = uniform(&mut rng(15), p.in_len(), -1.0, 1.0);
    let mut y = vec![0.0; p.out_len()];
    let mut arg = vec![0u8; p.out_len()];
    max_pool2x2_forward(&p, &x, &mut y, &mut arg).unwrap();
    let [_, oh, ow] = p.out_spatial();
    for n in 0..2 {
        for h in 0..oh {
            for w in 0..ow {
                for c in 0..7 {
                    let at =
                        |dh: usize, dw: usize| x[((n * 33 + 2 * h + dh) * 30 + 2 * w + dw) * 7 + c];
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
    let p = MaxPoolDims {
        n: 1,
        spatial: [1, 2, 2],
        channels: 2,
    };
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
