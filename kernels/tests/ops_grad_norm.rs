//! f64 central-difference checks of the normalisation backwards (GroupNorm, fused
//! GroupNorm + SiLU, BatchNorm in training and eval mode, LayerNorm): every input and
//! parameter gradient against d/dθ Σ⟨out, gout⟩ for a random gout. Parameter gradients start
//! from random values to check that backward accumulates.

mod ops_support;

use medvae_kernels::cpu::batch_norm::*;
use medvae_kernels::cpu::group_norm::*;
use medvae_kernels::cpu::layer_norm::*;
use ops_support::{assert_grad, dot, rng, uniform};

/// `after − before`: what a backward added to an accumulating gradient.
fn added(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

// ------------------------------------------------------------------ normalisations

fn gn_loss(
    d: &GroupNormDims,
    silu: bool,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    gout: &[f64],
) -> f64 {
    let mut y = vec![0.0; x.len()];
    let (mut m, mut r) = (vec![0.0; d.stats_len()], vec![0.0; d.stats_len()]);
    let affine = Affine { gamma, beta };
    let stats = NormStatsMut {
        mean: &mut m,
        rstd: &mut r,
    };
    if silu {
        group_norm_silu_forward(d, x, affine, &mut y, stats).unwrap();
    } else {
        group_norm_forward(d, x, affine, &mut y, stats).unwrap();
    }
    dot(&y, gout)
}

fn gn_fd(silu: bool, seed: u64) {
    let name = if silu {
        "group_norm_silu"
    } else {
        "group_norm"
    };
    let d = GroupNormDims {
        n: 2,
        spatial: 3,
        channels: 6,
        groups: 3,
        eps: 1e-5,
    };
    let mut r = rng(seed);
    // An offset mean checks the shifted accumulation too.
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0)
        .iter()
        .map(|v| v + 3.0)
        .collect();
    let gamma = uniform(&mut r, 6, 0.5, 1.5);
    let beta = uniform(&mut r, 6, -0.5, 0.5);
    let gout = uniform(&mut r, d.len(), -1.0, 1.0);
    let (dg0, db0) = (uniform(&mut r, 6, -1.0, 1.0), uniform(&mut r, 6, -1.0, 1.0));

    let mut y = vec![0.0; d.len()];
    let (mut m, mut rs) = (vec![0.0; d.stats_len()], vec![0.0; d.stats_len()]);
    let stats = NormStatsMut {
        mean: &mut m,
        rstd: &mut rs,
    };
    if silu {
        group_norm_silu_forward(
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
    } else {
        group_norm_forward(
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
    }
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (dg0.clone(), db0.clone());
    let stats = NormStats {
        mean: &m,
        rstd: &rs,
    };
    let grads = AffineGrads {
        dgamma: &mut dg,
        dbeta: &mut db,
    };
    if silu {
        let affine = Affine {
            gamma: &gamma,
            beta: &beta,
        };
        group_norm_silu_backward(&d, &x, affine, stats, &gout, &mut dx, grads).unwrap();
    } else {
        group_norm_backward(&d, &x, &gamma, stats, &gout, &mut dx, grads).unwrap();
    }
    assert_grad(&format!("{name} dx"), &x, &dx, |p| {
        gn_loss(&d, silu, p, &gamma, &beta, &gout)
    });
    assert_grad(&format!("{name} dgamma"), &gamma, &added(&dg, &dg0), |p| {
        gn_loss(&d, silu, &x, p, &beta, &gout)
    });
    assert_grad(&format!("{name} dbeta"), &beta, &added(&db, &db0), |p| {
        gn_loss(&d, silu, &x, &gamma, p, &gout)
    });
}

#[test]
fn fd_group_norm() {
    gn_fd(false, 20);
}

#[test]
fn fd_group_norm_silu() {
    gn_fd(true, 21);
}

fn bn_train_loss(d: &BatchNormDims, x: &[f64], gamma: &[f64], beta: &[f64], gout: &[f64]) -> f64 {
    let c = d.channels;
    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    let (mut m, mut r) = (vec![0.0; c], vec![0.0; c]);
    let mut y = vec![0.0; x.len()];
    batch_norm_train_forward(
        d,
        x,
        Affine { gamma, beta },
        RunningStatsMut {
            mean: &mut rm,
            var: &mut rv,
        },
        &mut y,
        NormStatsMut {
            mean: &mut m,
            rstd: &mut r,
        },
    )
    .unwrap();
    dot(&y, gout)
}

#[test]
fn fd_batch_norm_train() {
    let d = BatchNormDims {
        n: 2,
        spatial: 3,
        channels: 3,
        eps: 1e-5,
        momentum: 0.1,
    };
    let mut r = rng(30);
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0)
        .iter()
        .map(|v| v - 1.5)
        .collect();
    let gamma = uniform(&mut r, 3, 0.5, 1.5);
    let beta = uniform(&mut r, 3, -0.5, 0.5);
    let gout = uniform(&mut r, d.len(), -1.0, 1.0);
    let (dg0, db0) = (uniform(&mut r, 3, -1.0, 1.0), uniform(&mut r, 3, -1.0, 1.0));
    let (rm0, rv0) = (uniform(&mut r, 3, -0.2, 0.2), uniform(&mut r, 3, 0.8, 1.2));
    let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
    let (mut m, mut rs) = (vec![0.0; 3], vec![0.0; 3]);
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
    // Running statistics against a direct computation (unbiased variance).
    for ch in 0..3 {
        let vals: Vec<f64> = (0..6).map(|row| x[row * 3 + ch]).collect();
        let mean = vals.iter().sum::<f64>() / 6.0;
        let var_unbiased = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((rm[ch] - (0.9 * rm0[ch] + 0.1 * mean)).abs() < 1e-14);
        assert!((rv[ch] - (0.9 * rv0[ch] + 0.1 * var_unbiased)).abs() < 1e-14);
    }
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (dg0.clone(), db0.clone());
    batch_norm_train_backward(
        &d,
        &x,
        &gamma,
        NormStats {
            mean: &m,
            rstd: &rs,
        },
        &gout,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    )
    .unwrap();
    assert_grad("batch_norm_train dx", &x, &dx, |p| {
        bn_train_loss(&d, p, &gamma, &beta, &gout)
    });
    assert_grad("batch_norm_train dgamma", &gamma, &added(&dg, &dg0), |p| {
        bn_train_loss(&d, &x, p, &beta, &gout)
    });
    assert_grad("batch_norm_train dbeta", &beta, &added(&db, &db0), |p| {
        bn_train_loss(&d, &x, &gamma, p, &gout)
    });
}

#[test]
fn fd_batch_norm_eval() {
    let d = BatchNormDims {
        n: 2,
        spatial: 2,
        channels: 3,
        eps: 1e-5,
        momentum: 0.1,
    };
    let mut r = rng(31);
    let x = uniform(&mut r, d.len(), -2.0, 2.0);
    let gamma = uniform(&mut r, 3, 0.5, 1.5);
    let beta = uniform(&mut r, 3, -0.5, 0.5);
    let rm = uniform(&mut r, 3, -0.5, 0.5);
    let rv = uniform(&mut r, 3, 0.5, 2.0);
    let gout = uniform(&mut r, d.len(), -1.0, 1.0);
    let (dg0, db0) = (uniform(&mut r, 3, -1.0, 1.0), uniform(&mut r, 3, -1.0, 1.0));
    let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
        let mut y = vec![0.0; x.len()];
        let running = RunningStats {
            mean: &rm,
            var: &rv,
        };
        batch_norm_eval_forward(&d, x, Affine { gamma, beta }, running, &mut y).unwrap();
        dot(&y, &gout)
    };
    let mut dx = vec![f64::NAN; d.len()];
    let (mut dg, mut db) = (dg0.clone(), db0.clone());
    batch_norm_eval_backward(
        &d,
        &x,
        &gamma,
        RunningStats {
            mean: &rm,
            var: &rv,
        },
        &gout,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    )
    .unwrap();
    assert_grad("batch_norm_eval dx", &x, &dx, |p| loss(p, &gamma, &beta));
    assert_grad("batch_norm_eval dgamma", &gamma, &added(&dg, &dg0), |p| {
        loss(&x, p, &beta)
    });
    assert_grad("batch_norm_eval dbeta", &beta, &added(&db, &db0), |p| {
        loss(&x, &gamma, p)
    });
}

#[test]
fn fd_layer_norm() {
    let d = LayerNormDims {
        rows: 3,
        dim: 5,
        eps: 1e-6,
    };
    let mut r = rng(40);
    let x: Vec<f64> = uniform(&mut r, d.len(), -2.0, 2.0)
        .iter()
        .map(|v| v + 0.7)
        .collect();
    let gamma = uniform(&mut r, 5, 0.5, 1.5);
    let beta = uniform(&mut r, 5, -0.5, 0.5);
    let gout = uniform(&mut r, d.len(), -1.0, 1.0);
    let (dg0, db0) = (uniform(&mut r, 5, -1.0, 1.0), uniform(&mut r, 5, -1.0, 1.0));
    let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
        let mut y = vec![0.0; x.len()];
        let (mut m, mut rs) = (vec![0.0; 3], vec![0.0; 3]);
        let stats = NormStatsMut {
            mean: &mut m,
            rstd: &mut rs,
        };
        layer_norm_forward(&d, x, Affine { gamma, beta }, &mut y, stats).unwrap();
        dot(&y, &gout)
    };
    let mut y = vec![0.0; d.len()];
    let (mut m, mut rs) = (vec![0.0; 3], vec![0.0; 3]);
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
    let (mut dg, mut db) = (dg0.clone(), db0.clone());
    layer_norm_backward(
        &d,
        &x,
        &gamma,
        NormStats {
            mean: &m,
            rstd: &rs,
        },
        &gout,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    )
    .unwrap();
    assert_grad("layer_norm dx", &x, &dx, |p| loss(p, &gamma, &beta));
    assert_grad("layer_norm dgamma", &gamma, &added(&dg, &dg0), |p| {
        loss(&x, p, &beta)
    });
    assert_grad("layer_norm dbeta", &beta, &added(&db, &db0), |p| {
        loss(&x, &gamma, p)
    });
}
