//! Normalisation kernels (GroupNorm, fused GroupNorm + SiLU, BatchNorm, LayerNorm) on shapes
//! large enough to take their blocked / parallel paths, in f64 and f32, against a naive f64
//! GroupNorm written out here (BatchNorm and LayerNorm are GroupNorms of other shapes).

mod ops_support;

use medvae_kernels::cpu::batch_norm::*;
use medvae_kernels::cpu::group_norm::*;
use medvae_kernels::cpu::layer_norm::*;
use ops_support::{assert_rel, rel, rng, sigmoid, uniform};

// ------------------------------------------------------------------ naive references

struct NaiveGn {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

/// GroupNorm (optionally + SiLU) forward and backward, one group at a time.
fn naive_group_norm(
    d: &GroupNormDims,
    silu: bool,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    dy: &[f64],
) -> NaiveGn {
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
    let (mut m, mut r) = (
        vec![T::zero(); d.stats_len()],
        vec![T::zero(); d.stats_len()],
    );
    let affine = Affine {
        gamma: &gamma,
        beta: &beta,
    };
    let stats = NormStatsMut {
        mean: &mut m,
        rstd: &mut r,
    };
    if silu {
        group_norm_silu_forward(d, &x, affine, &mut y, stats).unwrap();
    } else {
        group_norm_forward(d, &x, affine, &mut y, stats).unwrap();
    }
    let mut dx = vec![T::nan(); x.len()];
    let (mut dg, mut db) = (vec![T::zero(); d.channels], vec![T::zero(); d.channels]);
    let stats = NormStats { mean: &m, rstd: &r };
    let grads = AffineGrads {
        dgamma: &mut dg,
        dbeta: &mut db,
    };
    if silu {
        group_norm_silu_backward(d, &x, affine, stats, &dy, &mut dx, grads).unwrap();
    } else {
        group_norm_backward(d, &x, &gamma, stats, &dy, &mut dx, grads).unwrap();
    }
    // The in-place kernels do the same arithmetic in the same order: identical results.
    let mut grad = dy.clone();
    let (mut dg_ip, mut db_ip) = (vec![T::zero(); d.channels], vec![T::zero(); d.channels]);
    let grads = AffineGrads {
        dgamma: &mut dg_ip,
        dbeta: &mut db_ip,
    };
    if silu {
        group_norm_silu_backward_in_place(d, &x, affine, stats, &mut grad, grads).unwrap();
    } else {
        group_norm_backward_in_place(d, &x, &gamma, stats, &mut grad, grads).unwrap();
    }
    let tag = format!("in place, silu={silu}, n={} s={}", d.n, d.spatial);
    assert_eq!(back(&grad), back(&dx), "{tag}: dx");
    assert_eq!(back(&dg_ip), back(&dg), "{tag}: dgamma");
    assert_eq!(back(&db_ip), back(&db), "{tag}: dbeta");
    [back(&y), back(&dx), back(&dg), back(&db)]
}

fn group_norm_large(silu: bool, n: usize, spatial: usize, seed: u64) {
    group_norm_large_with(silu, n, spatial, (64, 32), seed);
}

/// `(channels, groups)`: 64 channels take only the 8-channel register tiles of the row loops,
/// 20 channels two tiles plus 4 leftover channels.
fn group_norm_large_with(
    silu: bool,
    n: usize,
    spatial: usize,
    (channels, groups): (usize, usize),
    seed: u64,
) {
    let d = GroupNormDims {
        n,
        spatial,
        channels,
        groups,
        eps: 1e-6,
    };
    let mut r = rng(seed);
    // A large common offset: the statistics must not cancel it away.
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0)
        .iter()
        .map(|v| v + 20.0)
        .collect();
    let gamma = uniform(&mut r, channels, 0.5, 1.5);
    let beta = uniform(&mut r, channels, -0.5, 0.5);
    let dy = uniform(&mut r, d.len(), -1.0, 1.0);
    let want = naive_group_norm(&d, silu, &x, &gamma, &beta, &dy);
    let wants = [&want.y, &want.dx, &want.dgamma, &want.dbeta];
    let names = ["y", "dx", "dgamma", "dbeta"];
    let tag = if silu { "gn_silu" } else { "gn" };
    for (prec, got, tol) in [
        (
            "f64",
            run_group_norm::<f64>(&d, silu, &x, &gamma, &beta, &dy),
            1e-11,
        ),
        (
            "f32",
            run_group_norm::<f32>(&d, silu, &x, &gamma, &beta, &dy),
            2e-5,
        ),
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
fn group_norm_partial_channel_tile_matches_naive() {
    group_norm_large_with(false, 2, 2500, (20, 4), 7);
    group_norm_large_with(true, 2, 2500, (20, 4), 8);
}

#[test]
fn batch_norm_large_matches_naive() {
    // Training BatchNorm = GroupNorm over all N·S rows with one channel per group.
    let d = BatchNormDims {
        n: 4,
        spatial: 2048,
        channels: 16,
        eps: 1e-5,
        momentum: 0.1,
    };
    let mut r = rng(5);
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0)
        .iter()
        .map(|v| v - 7.0)
        .collect();
    let gamma = uniform(&mut r, 16, 0.5, 1.5);
    let beta = uniform(&mut r, 16, -0.5, 0.5);
    let dy = uniform(&mut r, d.len(), -1.0, 1.0);
    let as_gn = GroupNormDims {
        n: 1,
        spatial: 4 * 2048,
        channels: 16,
        groups: 16,
        eps: 1e-5,
    };
    let want = naive_group_norm(&as_gn, false, &x, &gamma, &beta, &dy);
    let (mut rm, mut rv) = (vec![0.0; 16], vec![1.0; 16]);
    let (mut m, mut rs) = (vec![0.0; 16], vec![0.0; 16]);
    let mut y = vec![0.0; d.len()];
    batch_norm_train_forward(
        &d,
        &x,
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        RunningStatsMut {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut y,
        NormStatsMut {
            mean: &mut m,
            rstd: &mut rs,
        },
    )
    .unwrap();
    assert_rel("bn y", rel(&y, &want.y), 1e-11);
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (vec![0.0; 16], vec![0.0; 16]);
    batch_norm_train_backward(
        &d,
        &x,
        &gamma,
        NormStats {
            mean: &m,
            rstd: &rs,
        },
        &dy,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    )
    .unwrap();
    assert_rel("bn dx", rel(&dx, &want.dx), 1e-11);
    assert_rel("bn dgamma", rel(&dg, &want.dgamma), 1e-11);
    assert_rel("bn dbeta", rel(&db, &want.dbeta), 1e-11);

    // Eval mode with the running statistics just computed, against the direct formula.
    let mut ye = vec![0.0; d.len()];
    let running = RunningStats {
        mean: &rm,
        var: &rv,
    };
    batch_norm_eval_forward(
        &d,
        &x,
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        running,
        &mut ye,
    )
    .unwrap();
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
    let d = LayerNormDims {
        rows: 3000,
        dim: 48,
        eps: 1e-6,
    };
    let mut r = rng(6);
    let x = uniform(&mut r, d.len(), -3.0, 3.0);
    let gamma = uniform(&mut r, 48, 0.5, 1.5);
    let beta = uniform(&mut r, 48, -0.5, 0.5);
    let dy = uniform(&mut r, d.len(), -1.0, 1.0);
    // LayerNorm = GroupNorm with one group over one "spatial" row of dim channels per sample.
    let as_gn = GroupNormDims {
        n: 3000,
        spatial: 1,
        channels: 48,
        groups: 1,
        eps: 1e-6,
    };
    let want = naive_group_norm(&as_gn, false, &x, &gamma, &beta, &dy);
    let mut y = vec![0.0; d.len()];
    let (mut m, mut rs) = (vec![0.0; 3000], vec![0.0; 3000]);
    let stats = NormStatsMut {
        mean: &mut m,
        rstd: &mut rs,
    };
    layer_norm_forward(
        &d,
        &x,
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        &mut y,
        stats,
    )
    .unwrap();
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (vec![0.0; 48], vec![0.0; 48]);
    layer_norm_backward(
        &d,
        &x,
        &gamma,
        NormStats {
            mean: &m,
            rstd: &rs,
        },
        &dy,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    )
    .unwrap();
    assert_rel("ln y", rel(&y, &want.y), 1e-12);
    assert_rel("ln dx", rel(&dx, &want.dx), 1e-12);
    assert_rel("ln dgamma", rel(&dg, &want.dgamma), 1e-12);
    assert_rel("ln dbeta", rel(&db, &want.dbeta), 1e-12);
}
