//! f64 central-difference checks of every op backward (all inputs and parameters) on tiny
//! random shapes: the analytic gradient must match d/dθ Σ⟨out, gout⟩ for a random gout.
//! Parameter gradients start from random values to check that backward accumulates.
//! (Normalisations: `ops_grad_norm.rs`.)

mod ops_support;

use medvae_kernels::cpu::activation::*;
use medvae_kernels::cpu::linear::*;
use medvae_kernels::cpu::loss::*;
use medvae_kernels::cpu::pool::*;
use medvae_kernels::cpu::reduce::*;
use medvae_kernels::cpu::softmax::*;
use medvae_kernels::cpu::upsample::*;
use ops_support::{assert_grad, check_grad, dot, rng, uniform, uniform_avoiding};

/// `after − before`: what a backward added to an accumulating gradient.
fn added(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

// ------------------------------------------------------------------ the checker itself

#[test]
fn fd_checker_detects_wrong_gradients() {
    let mut r = rng(1);
    let x = uniform(&mut r, 12, -2.0, 2.0);
    let gout = uniform(&mut r, 12, -1.0, 1.0);
    let loss = |p: &[f64]| {
        let mut y = vec![0.0; p.len()];
        silu_forward(p, &mut y).unwrap();
        dot(&y, &gout)
    };
    let mut dx = vec![0.0; 12];
    silu_backward(&x, &gout, &mut dx).unwrap();
    assert!(check_grad("silu", &x, &dx, loss).is_ok());
    // 1% too large everywhere.
    let scaled: Vec<f64> = dx.iter().map(|v| v * 1.01).collect();
    assert!(check_grad("silu ×1.01", &x, &scaled, loss).is_err());
    // One element off by a little.
    let mut one = dx.clone();
    one[5] += 1e-4;
    assert!(check_grad("silu one element", &x, &one, loss).is_err());
    // Wrong sign of the whole thing, and an all-zero gradient.
    let neg: Vec<f64> = dx.iter().map(|v| -v).collect();
    assert!(check_grad("silu negated", &x, &neg, loss).is_err());
    assert!(check_grad("silu zero", &x, &[0.0; 12], loss).is_err());
    // A NaN never passes.
    let mut nan = dx.clone();
    nan[0] = f64::NAN;
    assert!(check_grad("silu nan", &x, &nan, loss).is_err());
}

// ------------------------------------------------------------------ activations, softmax

type Fwd = fn(&[f64], &mut [f64]) -> Result<(), medvae_kernels::KernelError>;
type Bwd = fn(&[f64], &[f64], &mut [f64]) -> Result<(), medvae_kernels::KernelError>;

fn pointwise_fd(name: &str, fwd: Fwd, bwd: Bwd, x: Vec<f64>, seed: u64) {
    let gout = uniform(&mut rng(seed), x.len(), -1.0, 1.0);
    let mut dx = vec![f64::NAN; x.len()];
    bwd(&x, &gout, &mut dx).unwrap();
    assert_grad(name, &x, &dx, |p| {
        let mut y = vec![0.0; p.len()];
        fwd(p, &mut y).unwrap();
        dot(&y, &gout)
    });
}

#[test]
fn fd_silu() {
    pointwise_fd(
        "silu",
        silu_forward,
        silu_backward,
        uniform(&mut rng(2), 40, -6.0, 6.0),
        3,
    );
}

#[test]
fn fd_relu() {
    let x = uniform_avoiding(&mut rng(4), 40, -3.0, 3.0, &[0.0], 1e-2);
    pointwise_fd("relu", relu_forward, relu_backward, x, 5);
}

#[test]
fn fd_leaky_relu() {
    let x = uniform_avoiding(&mut rng(6), 40, -3.0, 3.0, &[0.0], 1e-2);
    let gout = uniform(&mut rng(7), x.len(), -1.0, 1.0);
    let slope = 0.2;
    let mut dx = vec![f64::NAN; x.len()];
    leaky_relu_backward(&x, slope, &gout, &mut dx).unwrap();
    assert_grad("leaky_relu", &x, &dx, |p| {
        let mut y = vec![0.0; p.len()];
        leaky_relu_forward(p, slope, &mut y).unwrap();
        dot(&y, &gout)
    });
}

#[test]
fn fd_gelu() {
    // Include the tails (|x| > 0.46875·√2 and > 4·√2 use other branches of erfc).
    let mut x = uniform(&mut rng(8), 40, -7.0, 7.0);
    x.extend([0.1, -0.3, 0.6, -0.7, 5.8, -5.9, 2.0]);
    pointwise_fd("gelu", gelu_forward, gelu_backward, x, 9);
}

#[test]
fn fd_softmax() {
    let (rows, n) = (3, 5);
    let x = uniform(&mut rng(10), rows * n, -3.0, 3.0);
    let gout = uniform(&mut rng(11), rows * n, -1.0, 1.0);
    let mut y = vec![0.0; x.len()];
    softmax_forward(&x, rows, n, &mut y).unwrap();
    let mut dx = vec![f64::NAN; x.len()];
    softmax_backward(&y, &gout, rows, n, &mut dx).unwrap();
    assert_grad("softmax", &x, &dx, |p| {
        let mut y = vec![0.0; p.len()];
        softmax_forward(p, rows, n, &mut y).unwrap();
        dot(&y, &gout)
    });
}

// ------------------------------------------------------------------ linear

#[test]
fn fd_linear() {
    let d = LinearDims {
        rows: 3,
        in_features: 4,
        out_features: 2,
    };
    let mut r = rng(50);
    let x = uniform(&mut r, 12, -1.0, 1.0);
    let w = uniform(&mut r, 8, -1.0, 1.0);
    let b = uniform(&mut r, 2, -1.0, 1.0);
    let gout = uniform(&mut r, 6, -1.0, 1.0);
    let (dw0, db0) = (uniform(&mut r, 8, -1.0, 1.0), uniform(&mut r, 2, -1.0, 1.0));
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; 6];
        linear_forward(&d, x, w, Some(b), &mut y).unwrap();
        dot(&y, &gout)
    };
    let mut dx = vec![f64::NAN; 12];
    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    let grads = LinearGrads {
        dx: Some(&mut dx),
        dweight: Some(&mut dw),
        dbias: Some(&mut db),
    };
    linear_backward(&d, &x, &w, &gout, grads).unwrap();
    assert_grad("linear dx", &x, &dx, |p| loss(p, &w, &b));
    assert_grad("linear dweight", &w, &added(&dw, &dw0), |p| loss(&x, p, &b));
    assert_grad("linear dbias", &b, &added(&db, &db0), |p| loss(&x, &w, p));
}

// ------------------------------------------------------------------ resampling

fn upsample_fd(scale: [usize; 3], seed: u64) {
    let d = UpsampleDims {
        n: 2,
        spatial: [2, 2, 3],
        channels: 2,
        scale,
    };
    let mut r = rng(seed);
    let x = uniform(&mut r, d.in_len(), -1.0, 1.0);
    let gout = uniform(&mut r, d.out_len(), -1.0, 1.0);
    let mut dx = vec![f64::NAN; d.in_len()];
    upsample_nearest_backward(&d, &gout, &mut dx).unwrap();
    assert_grad(&format!("upsample {scale:?}"), &x, &dx, |p| {
        let mut y = vec![0.0; d.out_len()];
        upsample_nearest_forward(&d, p, &mut y).unwrap();
        dot(&y, &gout)
    });
}

#[test]
fn fd_upsample_nearest() {
    upsample_fd([1, 2, 2], 60);
    upsample_fd([2, 2, 2], 61);
    upsample_fd([1, 3, 2], 62);
}

#[test]
fn fd_max_pool() {
    // Odd H and W (dropped last row/column), two depth slices, distinct values (no ties
    // within 1e-3, far more than the difference step).
    let d = MaxPoolDims {
        n: 2,
        spatial: [2, 5, 7],
        channels: 3,
    };
    let mut r = rng(70);
    let mut x: Vec<f64> = Vec::new();
    while x.len() < d.in_len() {
        let v = uniform(&mut r, 1, -3.0, 3.0)[0];
        if x.iter().all(|u: &f64| (u - v).abs() > 1e-3) {
            x.push(v);
        }
    }
    let gout = uniform(&mut r, d.out_len(), -1.0, 1.0);
    let mut y = vec![0.0; d.out_len()];
    let mut arg = vec![0u8; d.out_len()];
    max_pool2x2_forward(&d, &x, &mut y, &mut arg).unwrap();
    let mut dx = vec![f64::NAN; d.in_len()];
    max_pool2x2_backward(&d, &arg, &gout, &mut dx).unwrap();
    assert_grad("max_pool2x2", &x, &dx, |p| {
        let mut y = vec![0.0; d.out_len()];
        let mut a = vec![0u8; d.out_len()];
        max_pool2x2_forward(&d, p, &mut y, &mut a).unwrap();
        dot(&y, &gout)
    });
}

// ------------------------------------------------------------------ losses, reductions

fn kl_fd(keep_last_axis: bool, logvar_lo: f64, logvar_hi: f64, seed: u64) -> Vec<f64> {
    let d = KlDims {
        n: 2,
        spatial: [2, 2, 3],
        z_channels: 2,
        keep_last_axis,
    };
    let mut r = rng(seed);
    let mut m = uniform(&mut r, d.moments_len(), -2.0, 2.0);
    // Log-variance channels (the last z_channels of each cell).
    for cell in m.chunks_exact_mut(4) {
        for lv in &mut cell[2..] {
            *lv = uniform(&mut r, 1, logvar_lo, logvar_hi)[0];
        }
    }
    let gout = uniform(&mut r, d.out_len(), -1.0, 1.0);
    let mut dm = vec![f64::NAN; m.len()];
    kl_diag_gaussian_backward(&d, &m, &gout, &mut dm).unwrap();
    assert_grad(
        &format!("kl keep={keep_last_axis} lv∈[{logvar_lo},{logvar_hi}]"),
        &m,
        &dm,
        |p| {
            let mut kl = vec![0.0; d.out_len()];
            kl_diag_gaussian_forward(&d, p, &mut kl).unwrap();
            dot(&kl, &gout)
        },
    );
    dm
}

#[test]
fn fd_kl_diag_gaussian() {
    kl_fd(false, -3.0, 3.0, 80);
    kl_fd(true, -3.0, 3.0, 81);
    // Below the clamp range [-30, 20] the log-variance gradient is exactly zero.
    let dm = kl_fd(false, -40.0, -31.0, 82);
    for cell in dm.chunks_exact(4) {
        assert_eq!(
            &cell[2..],
            &[0.0, 0.0],
            "clamped log-variance must get no gradient"
        );
    }
}

#[test]
fn kl_above_clamp_range_has_no_logvar_gradient() {
    // Above the range exp(20) ≈ 5e8 per element swamps central differences, so check the
    // definition directly: the output does not move with the log-variance at all, and the
    // mean gradient is dkl·μ.
    let d = KlDims {
        n: 2,
        spatial: [1, 2, 3],
        z_channels: 2,
        keep_last_axis: false,
    };
    let mut r = rng(84);
    let mut m = uniform(&mut r, d.moments_len(), -2.0, 2.0);
    for cell in m.chunks_exact_mut(4) {
        cell[2] = uniform(&mut r, 1, 21.0, 25.0)[0];
        cell[3] = uniform(&mut r, 1, 21.0, 25.0)[0];
    }
    let forward = |m: &[f64]| {
        let mut kl = vec![0.0; 2];
        kl_diag_gaussian_forward(&d, m, &mut kl).unwrap();
        kl
    };
    let base = forward(&m);
    for i in (0..m.len()).filter(|i| i % 4 >= 2) {
        let mut p = m.clone();
        p[i] += 0.5;
        assert_eq!(forward(&p), base, "KL moved with a clamped log-variance");
    }
    let gout = [0.3, -1.1];
    let mut dm = vec![f64::NAN; m.len()];
    kl_diag_gaussian_backward(&d, &m, &gout, &mut dm).unwrap();
    for (i, (&g, &v)) in dm.iter().zip(&m).enumerate() {
        let want = if i % 4 >= 2 { 0.0 } else { gout[i / 24] * v };
        assert_eq!(g, want, "element {i}");
    }
}

#[test]
fn fd_kl_matches_direct_formula() {
    // Per-sample KL against the textbook formula (independent of the kernel's loop order).
    let d = KlDims {
        n: 2,
        spatial: [1, 2, 3],
        z_channels: 1,
        keep_last_axis: false,
    };
    let m = uniform(&mut rng(83), d.moments_len(), -2.0, 2.0);
    let mut kl = vec![0.0; 2];
    kl_diag_gaussian_forward(&d, &m, &mut kl).unwrap();
    for s in 0..2 {
        let want: f64 = (0..6)
            .map(|cell| {
                let (mu, lv) = (m[s * 12 + cell * 2], m[s * 12 + cell * 2 + 1]);
                0.5 * (mu * mu + lv.exp() - 1.0 - lv)
            })
            .sum();
        assert!(
            (kl[s] - want).abs() < 1e-13,
            "sample {s}: {} vs {want}",
            kl[s]
        );
    }
}

#[test]
fn fd_hinge_loss() {
    let mut r = rng(90);
    let real = uniform_avoiding(&mut r, 10, -2.5, 2.5, &[1.0, -1.0], 1e-2);
    let fake = uniform_avoiding(&mut r, 7, -2.5, 2.5, &[1.0, -1.0], 1e-2);
    let g = 0.7;
    let (mut dr, mut df) = (vec![f64::NAN; 10], vec![f64::NAN; 7]);
    hinge_d_loss_backward(&real, &fake, g, &mut dr, &mut df).unwrap();
    assert_grad("hinge dreal", &real, &dr, |p| {
        g * hinge_d_loss_forward(p, &fake).unwrap()
    });
    assert_grad("hinge dfake", &fake, &df, |p| {
        g * hinge_d_loss_forward(&real, p).unwrap()
    });
}

#[test]
fn fd_l1() {
    let mut r = rng(100);
    let b = uniform(&mut r, 15, -1.0, 1.0);
    // a − b bounded away from zero (the kink of |·|).
    let a: Vec<f64> = b
        .iter()
        .zip(uniform_avoiding(&mut r, 15, -1.0, 1.0, &[0.0], 1e-2))
        .map(|(x, d)| x + d)
        .collect();
    let g = 1.3;
    let mut da = vec![f64::NAN; 15];
    l1_mean_backward(&a, &b, g, &mut da).unwrap();
    assert_grad("l1_mean da", &a, &da, |p| {
        g * l1_mean_forward(p, &b).unwrap()
    });
    l1_sum_backward(&a, &b, g, &mut da).unwrap();
    assert_grad("l1_sum da", &a, &da, |p| g * l1_sum_forward(p, &b).unwrap());
}

#[test]
fn fd_reductions() {
    let mut r = rng(110);
    let x = uniform(&mut r, 12, -1.0, 1.0);
    let g = -0.4;
    let mut dx = vec![f64::NAN; 12];
    sum_backward(g, &mut dx);
    assert_grad("sum", &x, &dx, |p| g * sum(p));
    mean_backward(g, &mut dx);
    assert_grad("mean", &x, &dx, |p| g * mean(p).unwrap());
    let gout = uniform(&mut r, 3, -1.0, 1.0);
    sum_per_sample_backward(&gout, 3, &mut dx).unwrap();
    assert_grad("sum_per_sample", &x, &dx, |p| {
        let mut out = vec![0.0; 3];
        sum_per_sample(p, 3, &mut out).unwrap();
        dot(&out, &gout)
    });
}
