//! Golden tests of the CPU op kernels (every `ops/` case except convolution and resize):
//! float32 forward and backward against PyTorch's float64 results, converted to
//! channels-last at this boundary.

mod ops_support;

use medvae_kernels::cpu::activation::*;
use medvae_kernels::cpu::batch_norm::*;
use medvae_kernels::cpu::group_norm::*;
use medvae_kernels::cpu::layer_norm::*;
use medvae_kernels::cpu::linear::*;
use medvae_kernels::cpu::loss::*;
use medvae_kernels::cpu::softmax::*;
use medvae_kernels::cpu::upsample::*;
use ops_support::{assert_golden, ncdhw, Golden};

fn group_norm_case(name: &str) {
    let g = Golden::load(name);
    let (n, c, sp) = ncdhw(&g.get("in.x").shape);
    let d = GroupNormDims {
        n,
        spatial: sp.iter().product(),
        channels: c,
        groups: g.case_f64("groups") as usize,
        eps: g.case_f64("eps"),
    };
    let x = g.channels_last("in.x");
    let (gamma, beta) = (g.raw("param.weight"), g.raw("param.bias"));
    let gout = g.channels_last("gout.y");
    let mut y = vec![0.0f32; x.len()];
    let (mut mean, mut rstd) = (vec![0.0f32; d.stats_len()], vec![0.0f32; d.stats_len()]);
    let affine = Affine {
        gamma: &gamma,
        beta: &beta,
    };
    let stats = NormStatsMut {
        mean: &mut mean,
        rstd: &mut rstd,
    };
    group_norm_forward(&d, &x, affine, &mut y, stats).unwrap();
    assert_golden(name, "y", &y, &g.channels_last("out.y"));

    let mut dx = vec![f32::NAN; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0f32; c], vec![0.0f32; c]);
    let stats = NormStats {
        mean: &mean,
        rstd: &rstd,
    };
    let grads = AffineGrads {
        dgamma: &mut dgamma,
        dbeta: &mut dbeta,
    };
    group_norm_backward(&d, &x, &gamma, stats, &gout, &mut dx, grads).unwrap();
    assert_golden(name, "dx", &dx, &g.channels_last("grad.in.x"));
    assert_golden(name, "dweight", &dgamma, &g.raw("grad.param.weight"));
    assert_golden(name, "dbias", &dbeta, &g.raw("grad.param.bias"));
}

#[test]
fn golden_group_norm_2d() {
    group_norm_case("group_norm_2d");
}

#[test]
fn golden_group_norm_3d() {
    group_norm_case("group_norm_3d");
}

#[test]
fn golden_batch_norm_2d_train() {
    let name = "batch_norm_2d_train";
    let g = Golden::load(name);
    assert_eq!(g.case["training"], serde_json::Value::Bool(true));
    let (n, c, sp) = ncdhw(&g.get("in.x").shape);
    let d = BatchNormDims {
        n,
        spatial: sp.iter().product(),
        channels: c,
        eps: g.case_f64("eps"),
        momentum: g.case_f64("momentum"),
    };
    let x = g.channels_last("in.x");
    let (gamma, beta) = (g.raw("param.weight"), g.raw("param.bias"));
    let (mut rm, mut rv) = (g.raw("param.running_mean"), g.raw("param.running_var"));
    let mut y = vec![0.0f32; x.len()];
    let (mut mean, mut rstd) = (vec![0.0f32; c], vec![0.0f32; c]);
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
            mean: &mut mean,
            rstd: &mut rstd,
        },
    )
    .unwrap();
    assert_golden(name, "y", &y, &g.channels_last("out.y"));
    assert_golden(name, "running_mean", &rm, &g.raw("buf.running_mean"));
    assert_golden(name, "running_var", &rv, &g.raw("buf.running_var"));

    let gout = g.channels_last("gout.y");
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0f32; c], vec![0.0f32; c]);
    batch_norm_train_backward(
        &d,
        &x,
        &gamma,
        NormStats {
            mean: &mean,
            rstd: &rstd,
        },
        &gout,
        &mut dx,
        AffineGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        },
    )
    .unwrap();
    assert_golden(name, "dx", &dx, &g.channels_last("grad.in.x"));
    assert_golden(name, "dweight", &dgamma, &g.raw("grad.param.weight"));
    assert_golden(name, "dbias", &dbeta, &g.raw("grad.param.bias"));
}

#[test]
fn golden_layer_norm() {
    let name = "layer_norm";
    let g = Golden::load(name);
    let shape = &g.get("in.x").shape;
    let dim = *shape.last().unwrap();
    let rows = shape.iter().product::<usize>() / dim;
    let d = LayerNormDims {
        rows,
        dim,
        eps: g.case_f64("eps"),
    };
    // LayerNorm acts on the last axis: the stored layout is already the kernel's.
    let x = g.raw("in.x");
    let (gamma, beta) = (g.raw("param.weight"), g.raw("param.bias"));
    let mut y = vec![0.0f32; x.len()];
    let (mut mean, mut rstd) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    layer_norm_forward(
        &d,
        &x,
        Affine {
            gamma: &gamma,
            beta: &beta,
        },
        &mut y,
        NormStatsMut {
            mean: &mut mean,
            rstd: &mut rstd,
        },
    )
    .unwrap();
    assert_golden(name, "y", &y, &g.raw("out.y"));
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0f32; dim], vec![0.0f32; dim]);
    layer_norm_backward(
        &d,
        &x,
        &gamma,
        NormStats {
            mean: &mean,
            rstd: &rstd,
        },
        &g.raw("gout.y"),
        &mut dx,
        AffineGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        },
    )
    .unwrap();
    assert_golden(name, "dx", &dx, &g.raw("grad.in.x"));
    assert_golden(name, "dweight", &dgamma, &g.raw("grad.param.weight"));
    assert_golden(name, "dbias", &dbeta, &g.raw("grad.param.bias"));
}

#[test]
fn golden_linear() {
    let name = "linear";
    let g = Golden::load(name);
    let wshape = &g.get("param.weight").shape;
    let (fout, fin) = (wshape[0], wshape[1]);
    let x = g.raw("in.x");
    let d = LinearDims {
        rows: x.len() / fin,
        in_features: fin,
        out_features: fout,
    };
    let (w, b) = (g.raw("param.weight"), g.raw("param.bias"));
    let mut y = vec![f32::NAN; d.rows * fout];
    linear_forward(&d, &x, &w, Some(&b), &mut y).unwrap();
    assert_golden(name, "y", &y, &g.raw("out.y"));
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dw, mut db) = (vec![0.0f32; w.len()], vec![0.0f32; fout]);
    let grads = LinearGrads {
        dx: Some(&mut dx),
        dweight: Some(&mut dw),
        dbias: Some(&mut db),
    };
    linear_backward(&d, &x, &w, &g.raw("gout.y"), grads).unwrap();
    assert_golden(name, "dx", &dx, &g.raw("grad.in.x"));
    assert_golden(name, "dweight", &dw, &g.raw("grad.param.weight"));
    assert_golden(name, "dbias", &db, &g.raw("grad.param.bias"));
}

type Fwd = fn(&[f32], &mut [f32]) -> Result<(), medvae_kernels::KernelError>;
type Bwd = fn(&[f32], &[f32], &mut [f32]) -> Result<(), medvae_kernels::KernelError>;

/// Elementwise ops: the layout does not matter, the stored order is used as is.
fn pointwise_case(name: &str, fwd: Fwd, bwd: Bwd) {
    let g = Golden::load(name);
    let x = g.raw("in.x");
    let mut y = vec![f32::NAN; x.len()];
    fwd(&x, &mut y).unwrap();
    assert_golden(name, "y", &y, &g.raw("out.y"));
    let mut dx = vec![f32::NAN; x.len()];
    bwd(&x, &g.raw("gout.y"), &mut dx).unwrap();
    assert_golden(name, "dx", &dx, &g.raw("grad.in.x"));
}

#[test]
fn golden_silu() {
    pointwise_case("silu", silu_forward, silu_backward);
}

#[test]
fn golden_gelu() {
    let g = Golden::load("gelu");
    assert_eq!(g.case["approximate"], "none");
    pointwise_case("gelu", gelu_forward, gelu_backward);
}

#[test]
fn golden_leaky_relu() {
    let name = "leaky_relu";
    let g = Golden::load(name);
    let slope = g.case_f64("negative_slope") as f32;
    let x = g.raw("in.x");
    let mut y = vec![f32::NAN; x.len()];
    leaky_relu_forward(&x, slope, &mut y).unwrap();
    assert_golden(name, "y", &y, &g.raw("out.y"));
    let mut dx = vec![f32::NAN; x.len()];
    leaky_relu_backward(&x, slope, &g.raw("gout.y"), &mut dx).unwrap();
    assert_golden(name, "dx", &dx, &g.raw("grad.in.x"));
}

#[test]
fn golden_softmax_lastdim() {
    let name = "softmax_lastdim";
    let g = Golden::load(name);
    let shape = &g.get("in.x").shape;
    let n = *shape.last().unwrap();
    let x = g.raw("in.x");
    let rows = x.len() / n;
    let mut y = vec![f32::NAN; x.len()];
    softmax_forward(&x, rows, n, &mut y).unwrap();
    assert_golden(name, "y", &y, &g.raw("out.y"));
    let mut dx = vec![f32::NAN; x.len()];
    softmax_backward(&y, &g.raw("gout.y"), rows, n, &mut dx).unwrap();
    assert_golden(name, "dx", &dx, &g.raw("grad.in.x"));
}

fn upsample_case(name: &str) {
    let g = Golden::load(name);
    let (n, c, sp) = ncdhw(&g.get("in.x").shape);
    let (_, _, osp) = ncdhw(&g.get("out.y").shape);
    let scale = [osp[0] / sp[0], osp[1] / sp[1], osp[2] / sp[2]];
    let s = g.case_f64("scale") as usize;
    // 2D data has a unit depth that is not scaled.
    let want = if g.get("in.x").shape.len() == 4 {
        [1, s, s]
    } else {
        [s, s, s]
    };
    assert_eq!(scale, want, "{name}: shapes disagree with the case's scale");
    let d = UpsampleDims {
        n,
        spatial: sp,
        channels: c,
        scale,
    };
    let x = g.channels_last("in.x");
    let mut y = vec![f32::NAN; d.out_len()];
    upsample_nearest_forward(&d, &x, &mut y).unwrap();
    assert_golden(name, "y", &y, &g.channels_last("out.y"));
    let mut dx = vec![f32::NAN; x.len()];
    upsample_nearest_backward(&d, &g.channels_last("gout.y"), &mut dx).unwrap();
    assert_golden(name, "dx", &dx, &g.channels_last("grad.in.x"));
}

#[test]
fn golden_upsample_nearest_2d() {
    upsample_case("upsample_nearest_2d");
}

#[test]
fn golden_upsample_nearest_3d() {
    upsample_case("upsample_nearest_3d");
}

#[test]
fn golden_kl_diag_gaussian() {
    let name = "kl_diag_gaussian";
    let g = Golden::load(name);
    let (n, c2, sp) = ncdhw(&g.get("in.moments").shape);
    let d = KlDims {
        n,
        spatial: sp,
        z_channels: c2 / 2,
        keep_last_axis: false,
    };
    let moments = g.channels_last("in.moments");
    let mut kl = vec![f32::NAN; n];
    kl_diag_gaussian_forward(&d, &moments, &mut kl).unwrap();
    assert_golden(name, "kl", &kl, &g.raw("out.kl"));
    let mut dm = vec![f32::NAN; moments.len()];
    kl_diag_gaussian_backward(&d, &moments, &g.raw("gout.kl"), &mut dm).unwrap();
    assert_golden(name, "dmoments", &dm, &g.channels_last("grad.in.moments"));
}

#[test]
fn golden_hinge_loss() {
    let name = "hinge_loss";
    let g = Golden::load(name);
    let (real, fake) = (g.raw("in.logits_real"), g.raw("in.logits_fake"));
    let loss = hinge_d_loss_forward(&real, &fake).unwrap();
    assert_golden(name, "loss", &[loss], &g.raw("out.loss"));
    let gout = g.raw("gout.loss")[0];
    let (mut dr, mut df) = (vec![f32::NAN; real.len()], vec![f32::NAN; fake.len()]);
    hinge_d_loss_backward(&real, &fake, gout, &mut dr, &mut df).unwrap();
    assert_golden(name, "dreal", &dr, &g.raw("grad.in.logits_real"));
    assert_golden(name, "dfake", &df, &g.raw("grad.in.logits_fake"));
}

/// Every non-conv, non-resize golden op case has a test above: a new case added to the
/// folder must get one too.
#[test]
fn golden_cases_all_covered() {
    let covered = [
        "batch_norm_2d_train",
        "gelu",
        "group_norm_2d",
        "group_norm_3d",
        "hinge_loss",
        "kl_diag_gaussian",
        "layer_norm",
        "leaky_relu",
        "linear",
        "silu",
        "softmax_lastdim",
        "upsample_nearest_2d",
        "upsample_nearest_3d",
    ];
    let dir = ops_support::golden_dir().join("ops");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = file.strip_suffix(".safetensors") else {
            continue;
        };
        if stem.starts_with("conv") || stem.starts_with("resize") {
            continue;
        }
        if !covered.contains(&stem) {
            missing.push(stem.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "golden op cases without a test: {missing:?}"
    );
}
