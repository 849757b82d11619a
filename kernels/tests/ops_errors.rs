//! Bad arguments give `KernelError` values, never panics, and change nothing.

use medvae_kernels::cpu::activation::*;
use medvae_kernels::cpu::batch_norm::*;
use medvae_kernels::cpu::group_norm::*;
use medvae_kernels::cpu::layer_norm::*;
use medvae_kernels::cpu::linear::*;
use medvae_kernels::cpu::loss::*;
use medvae_kernels::cpu::pool::*;
use medvae_kernels::cpu::reduce::*;
use medvae_kernels::cpu::softmax::*;
use medvae_kernels::cpu::upsample::*;
use medvae_kernels::KernelError;

fn is_length(r: Result<(), KernelError>) -> bool {
    matches!(r, Err(KernelError::Length { .. }))
}

fn is_geometry<T: std::fmt::Debug>(r: Result<T, KernelError>) -> bool {
    matches!(r, Err(KernelError::Geometry { .. }))
}

#[test]
fn pointwise_and_softmax_lengths() {
    let x = [0.5f32; 6];
    let mut short = [0.0f32; 5];
    assert!(is_length(silu_forward(&x, &mut short)));
    assert!(is_length(relu_forward(&x, &mut short)));
    assert!(is_length(gelu_forward(&x, &mut short)));
    assert!(is_length(leaky_relu_forward(&x, 0.2, &mut short)));
    let mut dx = [0.0f32; 6];
    assert!(is_length(silu_backward(&x, &short, &mut dx)));
    assert!(is_length(gelu_backward(&x, &x, &mut short)));
    assert!(is_length(relu_backward(&x, &short, &mut dx)));
    assert!(is_length(leaky_relu_backward(&x, 0.2, &x, &mut short)));
    assert!(is_length(softmax_forward(&x, 2, 4, &mut dx)));
    assert!(is_length(softmax_backward(&x, &x, 2, 3, &mut short)));
    let mut y = [0.0f32; 6];
    assert!(is_length(softmax_inplace(&mut y, 7, 1)));
}

#[test]
fn group_norm_lengths_and_geometry() {
    let d = GroupNormDims {
        n: 2,
        spatial: 3,
        channels: 4,
        groups: 2,
        eps: 1e-6,
    };
    let x = vec![1.0f32; d.len()];
    let (gamma, beta) = (vec![1.0f32; 4], vec![0.0f32; 4]);
    let mut y = vec![0.0f32; d.len()];
    let (mut m, mut r) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let mut short_m = vec![0.0f32; 3];
    // Wrong stats length.
    let res = group_norm_forward(
        &d,
        &x,
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        &mut y,
        NormStatsMut {
            mean: &mut short_m,
            rstd: &mut r,
        },
    );
    assert!(is_length(res));
    // Wrong gamma length.
    let res = group_norm_silu_forward(
        &d,
        &x,
        Affine {
            gamma: &gamma[..3],
            beta: &beta,
        },
        &mut y,
        NormStatsMut {
            mean: &mut m,
            rstd: &mut r,
        },
    );
    assert!(is_length(res));
    // Channels not divisible by groups; zero groups.
    for bad in [
        GroupNormDims { groups: 3, ..d },
        GroupNormDims { groups: 0, ..d },
    ] {
        let res = group_norm_forward(
            &bad,
            &x,
            Affine {
                gamma: &gamma,
                beta: &beta,
            },
            &mut y,
            NormStatsMut {
                mean: &mut m,
                rstd: &mut r,
            },
        );
        assert!(is_geometry(res));
    }
    // Backward: short dx; missing beta for the fused kernel.
    let (mut dg, mut db) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let mut dx = vec![0.0f32; d.len() - 1];
    let res = group_norm_backward(
        &d,
        &x,
        &gamma,
        NormStats { mean: &m, rstd: &r },
        &x,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    );
    assert!(is_length(res));
    let mut dx = vec![0.0f32; d.len()];
    let res = group_norm_silu_backward(
        &d,
        &x,
        Affine {
            gamma: &gamma,
            beta: &beta[..2],
        },
        NormStats { mean: &m, rstd: &r },
        &x,
        &mut dx,
        AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        },
    );
    assert!(is_length(res));
    assert!(
        dg.iter().chain(&db).all(|&v| v == 0.0),
        "a refused call must not touch gradients"
    );
}

#[test]
fn batch_and_layer_norm_lengths() {
    let d = BatchNormDims {
        n: 2,
        spatial: 3,
        channels: 4,
        eps: 1e-5,
        momentum: 0.1,
    };
    let x = vec![1.0f32; d.len()];
    let (gamma, beta) = (vec![1.0f32; 4], vec![0.0f32; 4]);
    let (mut rm, mut rv) = (vec![0.0f32; 4], vec![1.0f32; 3]);
    let (mut m, mut r) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let mut y = vec![0.0f32; d.len()];
    let res = batch_norm_train_forward(
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
            rstd: &mut r,
        },
    );
    assert!(is_length(res));
    assert!(
        rm.iter().all(|&v| v == 0.0),
        "running stats changed by a refused call"
    );
    // One value per channel cannot train (unbiased variance).
    let one = BatchNormDims {
        n: 1,
        spatial: 1,
        ..d
    };
    let mut rv4 = vec![1.0f32; 4];
    let res = batch_norm_train_forward(
        &one,
        &x[..4],
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        RunningStatsMut {
            mean: &mut rm,
            var: &mut rv4,
        },
        &mut y[..4],
        NormStatsMut {
            mean: &mut m,
            rstd: &mut r,
        },
    );
    assert!(is_geometry(res));
    let res = batch_norm_eval_forward(
        &d,
        &x[1..],
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        RunningStats {
            mean: &rm,
            var: &rv4,
        },
        &mut y[1..],
    );
    assert!(is_length(res));

    let ld = LayerNormDims {
        rows: 3,
        dim: 4,
        eps: 1e-6,
    };
    let res = layer_norm_forward(
        &ld,
        &x[..12],
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        &mut y[..12],
        NormStatsMut {
            mean: &mut m[..2],
            rstd: &mut r[..3],
        },
    );
    assert!(is_length(res));
    let res = layer_norm_forward(
        &LayerNormDims { dim: 0, ..ld },
        &[],
        Affine {
            gamma: &[],
            beta: &[],
        },
        &mut [],
        NormStatsMut {
            mean: &mut m[..3],
            rstd: &mut r[..3],
        },
    );
    assert!(is_geometry(res));
}

#[test]
fn linear_and_matmul_lengths() {
    let d = LinearDims {
        rows: 2,
        in_features: 3,
        out_features: 4,
    };
    let x = vec![1.0f32; 6];
    let w = vec![1.0f32; 12];
    let mut y = vec![0.0f32; 8];
    assert!(is_length(linear_forward(&d, &x, &w[..11], None, &mut y)));
    assert!(is_length(linear_forward(
        &d,
        &x,
        &w,
        Some(&[0.0; 3]),
        &mut y
    )));
    let mut dx = vec![0.0f32; 6];
    let mut dw = vec![0.0f32; 11];
    let grads = LinearGrads {
        dx: Some(&mut dx),
        dweight: Some(&mut dw),
        dbias: None,
    };
    assert!(is_length(linear_backward(&d, &x, &w, &y, grads)));
    let g = Gemm::new(2, 3, 4);
    let mut c = vec![0.0f32; 6];
    assert!(is_length(matmul(&g, &[0.0; 8], &[0.0; 11], &mut c)));
    assert!(is_length(bmm(&g, 2, &[0.0; 16], &[0.0; 24], &mut c)));
    let overlapping = BatchStrides { a: 8, b: 12, c: 3 };
    assert!(is_geometry(bmm_strided(
        &g,
        2,
        overlapping,
        &[0.0; 16],
        &[0.0; 24],
        &mut [0.0f32; 9]
    )));
}

#[test]
fn resampling_loss_and_reduction_lengths() {
    let u = UpsampleDims {
        n: 1,
        spatial: [1, 2, 2],
        channels: 3,
        scale: [1, 2, 2],
    };
    let x = vec![0.0f32; u.in_len()];
    let mut y = vec![0.0f32; u.out_len() - 1];
    assert!(is_length(upsample_nearest_forward(&u, &x, &mut y)));
    let mut dx = vec![0.0f32; u.in_len()];
    assert!(is_length(upsample_nearest_backward(&u, &y, &mut dx)));
    let zero = UpsampleDims {
        scale: [1, 0, 2],
        ..u
    };
    assert!(is_geometry(upsample_nearest_forward(&zero, &x, &mut y)));

    let p = MaxPoolDims {
        n: 1,
        spatial: [1, 4, 4],
        channels: 2,
    };
    let x = vec![0.0f32; p.in_len()];
    let mut y = vec![0.0f32; p.out_len()];
    let mut arg = vec![0u8; p.out_len() + 1];
    assert!(is_length(max_pool2x2_forward(&p, &x, &mut y, &mut arg)));
    let mut dx = vec![0.0f32; p.in_len()];
    let bad_arg = vec![4u8; p.out_len()];
    assert!(is_geometry(max_pool2x2_backward(&p, &bad_arg, &y, &mut dx)));

    let k = KlDims {
        n: 2,
        spatial: [1, 2, 2],
        z_channels: 1,
        keep_last_axis: false,
    };
    let m = vec![0.0f32; k.moments_len()];
    assert!(is_length(kl_diag_gaussian_forward(
        &k,
        &m,
        &mut [0.0f32; 3]
    )));
    let kw = KlDims {
        keep_last_axis: true,
        ..k
    };
    assert!(is_length(kl_diag_gaussian_forward(
        &kw,
        &m,
        &mut [0.0f32; 2]
    )));
    assert!(is_length(kl_diag_gaussian_backward(
        &k,
        &m,
        &[0.0; 2],
        &mut [0.0f32; 3]
    )));

    assert!(is_geometry(hinge_d_loss_forward::<f32>(&[], &[1.0])));
    assert!(is_length(hinge_d_loss_backward(
        &[1.0f32],
        &[1.0],
        1.0,
        &mut [0.0; 2],
        &mut [0.0]
    )));
    assert!(matches!(
        l1_mean_forward(&[1.0f32, 2.0], &[1.0]),
        Err(KernelError::Length { .. })
    ));
    assert!(is_geometry(l1_mean_forward::<f32>(&[], &[])));
    assert!(is_length(l1_sum_backward(
        &[1.0f32],
        &[1.0],
        1.0,
        &mut [0.0; 2]
    )));
    assert!(is_geometry(mean::<f32>(&[])));
    assert!(is_geometry(sum_per_sample(&[1.0f32; 5], 2, &mut [0.0; 2])));
    assert!(is_length(sum_per_sample(&[1.0f32; 6], 2, &mut [0.0; 3])));
    assert!(is_length(sum_per_sample_backward(
        &[1.0f32; 3],
        2,
        &mut [0.0; 6]
    )));
}
