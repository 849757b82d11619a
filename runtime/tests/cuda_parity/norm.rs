//! GroupNorm(+SiLU), BatchNorm and LayerNorm against the CPU kernels.

use crate::support::{assert_close, device, down, randn, rng, uniform, up};
use medvae_kernels::cpu::batch_norm::{
    batch_norm_eval_backward, batch_norm_eval_forward, batch_norm_train_backward,
    batch_norm_train_forward, BatchNormDims, RunningStats, RunningStatsMut,
};
use medvae_kernels::cpu::group_norm::{
    group_norm_backward, group_norm_forward, group_norm_silu_backward, group_norm_silu_forward,
    Affine, AffineGrads, GroupNormDims, NormStats, NormStatsMut,
};
use medvae_kernels::cpu::layer_norm::{layer_norm_backward, layer_norm_forward, LayerNormDims};
use medvae_runtime::cuda::ops::norm;

const TOL: f64 = 1e-4;

#[test]
fn group_norm_and_silu_match_cpu() {
    let Some(dev) = device() else { return };
    let mut r = rng(2);
    // (n, spatial, channels, groups, silu); 6 and 30 channels take the scalar (non-float4)
    // elementwise kernels.
    for &(n, spatial, channels, groups, silu) in &[
        (2usize, 20usize, 64usize, 32usize, false),
        (3, 12, 96, 32, true),
        (1, 4096, 128, 32, true),
        (2, 64 * 64, 512, 32, false),
        (1, 5 * 6 * 7, 32, 32, true),
        (2, 300, 6, 3, true),
        (3, 17 * 19, 30, 5, false),
    ] {
        let d = GroupNormDims {
            n,
            spatial,
            channels,
            groups,
            eps: 1e-6,
        };
        let len = d.len();
        let x: Vec<f32> = randn(&mut r, len, 2.0).iter().map(|v| v + 0.5).collect();
        let gamma: Vec<f32> = randn(&mut r, channels, 0.1)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let beta = randn(&mut r, channels, 0.1);
        let dy = randn(&mut r, len, 1.0);
        let (mut y, mut mean, mut rstd) = (
            vec![0.0; len],
            vec![0.0; d.stats_len()],
            vec![0.0; d.stats_len()],
        );
        let affine = Affine {
            gamma: &gamma,
            beta: &beta,
        };
        let stats = NormStatsMut {
            mean: &mut mean,
            rstd: &mut rstd,
        };
        if silu {
            group_norm_silu_forward(&d, &x, affine, &mut y, stats).expect("cpu");
        } else {
            group_norm_forward(&d, &x, affine, &mut y, stats).expect("cpu");
        }
        let (mut dx, mut dg, mut db) =
            (vec![0.0; len], vec![0.25; channels], vec![-0.25; channels]);
        let st = NormStats {
            mean: &mean,
            rstd: &rstd,
        };
        let grads = AffineGrads {
            dgamma: &mut dg,
            dbeta: &mut db,
        };
        if silu {
            group_norm_silu_backward(&d, &x, affine, st, &dy, &mut dx, grads).expect("cpu");
        } else {
            group_norm_backward(&d, &x, &gamma, st, &dy, &mut dx, grads).expect("cpu");
        }

        let (gx, gg, gb, gdy) = (up(dev, &x), up(dev, &gamma), up(dev, &beta), up(dev, &dy));
        let (gy, gm, gr) = (
            dev.alloc_f32(len).unwrap(),
            dev.alloc_f32(d.stats_len()).unwrap(),
            dev.alloc_f32(d.stats_len()).unwrap(),
        );
        norm::group_norm_forward(dev, &d, silu, &gx, Some(&gg), Some(&gb), &gy, &gm, &gr)
            .expect("gpu fwd");
        let tag = format!("group norm n{n} s{spatial} c{channels} silu={silu}");
        assert_close(&format!("{tag} y"), &down(dev, &gy, len), &y, TOL);
        assert_close(
            &format!("{tag} mean"),
            &down(dev, &gm, d.stats_len()),
            &mean,
            TOL,
        );
        assert_close(
            &format!("{tag} rstd"),
            &down(dev, &gr, d.stats_len()),
            &rstd,
            TOL,
        );
        let (gdx, gdg, gdb) = (
            dev.alloc_f32(len).unwrap(),
            up(dev, &vec![0.25; channels]),
            up(dev, &vec![-0.25; channels]),
        );
        norm::group_norm_backward(
            dev,
            &d,
            silu,
            &gx,
            Some(&gg),
            Some(&gb),
            &gm,
            &gr,
            &gdy,
            &gdx,
            Some(&gdg),
            Some(&gdb),
            0.0,
        )
        .expect("gpu bwd");
        assert_close(&format!("{tag} dx"), &down(dev, &gdx, len), &dx, TOL);
        assert_close(
            &format!("{tag} dgamma"),
            &down(dev, &gdg, channels),
            &dg,
            TOL,
        );
        assert_close(
            &format!("{tag} dbeta"),
            &down(dev, &gdb, channels),
            &db,
            TOL,
        );
        // In place, as the runtime runs an owned gradient: dy's buffer receives dx.
        let io = up(dev, &dy);
        norm::group_norm_backward(
            dev,
            &d,
            silu,
            &gx,
            Some(&gg),
            Some(&gb),
            &gm,
            &gr,
            &io,
            &io,
            None,
            None,
            0.0,
        )
        .expect("gpu bwd in place");
        assert_close(
            &format!("{tag} dx in place"),
            &down(dev, &io, len),
            &dx,
            TOL,
        );
    }
}

#[test]
fn batch_norm_matches_cpu_in_train_and_eval() {
    let Some(dev) = device() else { return };
    let mut r = rng(3);
    for &(n, spatial, channels) in &[
        (2usize, 25usize, 16usize),
        (3, 24, 8),
        (8, 31 * 31, 64),
        (2, 21, 6),
    ] {
        let d = BatchNormDims {
            n,
            spatial,
            channels,
            eps: 1e-5,
            momentum: 0.1,
        };
        let len = d.len();
        let x: Vec<f32> = randn(&mut r, len, 2.0).iter().map(|v| v + 1.0).collect();
        let gamma: Vec<f32> = randn(&mut r, channels, 0.1)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let beta = randn(&mut r, channels, 0.1);
        let dy = randn(&mut r, len, 1.0);
        let rm0 = randn(&mut r, channels, 0.1);
        let rv0 = uniform(&mut r, channels, 0.5, 1.5);
        // training
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let (mut y, mut mean, mut rstd) =
            (vec![0.0; len], vec![0.0; channels], vec![0.0; channels]);
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
        .expect("cpu");
        let (mut dx, mut dg, mut db) = (vec![0.0; len], vec![0.0; channels], vec![0.0; channels]);
        batch_norm_train_backward(
            &d,
            &x,
            &gamma,
            NormStats {
                mean: &mean,
                rstd: &rstd,
            },
            &dy,
            &mut dx,
            AffineGrads {
                dgamma: &mut dg,
                dbeta: &mut db,
            },
        )
        .expect("cpu");
        let (gx, gg, gb, gdy) = (up(dev, &x), up(dev, &gamma), up(dev, &beta), up(dev, &dy));
        let (grm, grv) = (up(dev, &rm0), up(dev, &rv0));
        let (gy, gm, gr) = (
            dev.alloc_f32(len).unwrap(),
            dev.alloc_f32(channels).unwrap(),
            dev.alloc_f32(channels).unwrap(),
        );
        norm::batch_norm_train_forward(dev, &d, &gx, &gg, &gb, &grm, &grv, &gy, &gm, &gr)
            .expect("gpu");
        let tag = format!("batch norm n{n} s{spatial} c{channels}");
        assert_close(&format!("{tag} train y"), &down(dev, &gy, len), &y, TOL);
        assert_close(
            &format!("{tag} running mean"),
            &down(dev, &grm, channels),
            &rm,
            TOL,
        );
        assert_close(
            &format!("{tag} running var"),
            &down(dev, &grv, channels),
            &rv,
            TOL,
        );
        let (gdx, gdg, gdb) = (
            dev.alloc_f32(len).unwrap(),
            dev.zeros_f32(channels).unwrap(),
            dev.zeros_f32(channels).unwrap(),
        );
        norm::batch_norm_train_backward(
            dev,
            &d,
            &gx,
            &gg,
            &gm,
            &gr,
            &gdy,
            &gdx,
            Some(&gdg),
            Some(&gdb),
        )
        .expect("gpu");
        assert_close(&format!("{tag} train dx"), &down(dev, &gdx, len), &dx, TOL);
        assert_close(
            &format!("{tag} train dgamma"),
            &down(dev, &gdg, channels),
            &dg,
            TOL,
        );
        assert_close(
            &format!("{tag} train dbeta"),
            &down(dev, &gdb, channels),
            &db,
            TOL,
        );
        // eval
        let running = RunningStats {
            mean: &rm0,
            var: &rv0,
        };
        let mut ye = vec![0.0; len];
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
        .expect("cpu");
        let (mut dxe, mut dge, mut dbe) =
            (vec![0.0; len], vec![0.0; channels], vec![0.0; channels]);
        batch_norm_eval_backward(
            &d,
            &x,
            &gamma,
            running,
            &dy,
            &mut dxe,
            AffineGrads {
                dgamma: &mut dge,
                dbeta: &mut dbe,
            },
        )
        .expect("cpu");
        let (grm, grv) = (up(dev, &rm0), up(dev, &rv0));
        norm::batch_norm_eval_forward(dev, &d, &gx, &gg, &gb, &grm, &grv, &gy).expect("gpu");
        assert_close(&format!("{tag} eval y"), &down(dev, &gy, len), &ye, TOL);
        let (gdg, gdb) = (
            dev.zeros_f32(channels).unwrap(),
            dev.zeros_f32(channels).unwrap(),
        );
        norm::batch_norm_eval_backward(
            dev,
            &d,
            &gx,
            &gg,
            &grm,
            &grv,
            &gdy,
            &gdx,
            Some(&gdg),
            Some(&gdb),
        )
        .expect("gpu");
        assert_close(&format!("{tag} eval dx"), &down(dev, &gdx, len), &dxe, TOL);
        assert_close(
            &format!("{tag} eval dgamma"),
            &down(dev, &gdg, channels),
            &dge,
            TOL,
        );
        assert_close(
            &format!("{tag} eval dbeta"),
            &down(dev, &gdb, channels),
            &dbe,
            TOL,
        );
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(dev) = device() else { return };
    let mut r = rng(4);
    for &(rows, dim) in &[(10usize, 48usize), (13, 70), (2 * 197, 768)] {
        let d = LayerNormDims {
            rows,
            dim,
            eps: 1e-6,
        };
        let len = rows * dim;
        let x: Vec<f32> = randn(&mut r, len, 2.0).iter().map(|v| v + 0.3).collect();
        let gamma: Vec<f32> = randn(&mut r, dim, 0.3).iter().map(|v| v + 1.0).collect();
        let beta = randn(&mut r, dim, 0.3);
        let dy = randn(&mut r, len, 1.0);
        let (mut y, mut mean, mut rstd) = (vec![0.0; len], vec![0.0; rows], vec![0.0; rows]);
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
        .expect("cpu");
        let (mut dx, mut dg, mut db) = (vec![0.0; len], vec![0.0; dim], vec![0.0; dim]);
        layer_norm_backward(
            &d,
            &x,
            &gamma,
            NormStats {
                mean: &mean,
                rstd: &rstd,
            },
            &dy,
            &mut dx,
            AffineGrads {
                dgamma: &mut dg,
                dbeta: &mut db,
            },
        )
        .expect("cpu");
        let (gx, gg, gb, gdy) = (up(dev, &x), up(dev, &gamma), up(dev, &beta), up(dev, &dy));
        let (gy, gm, gr) = (
            dev.alloc_f32(len).unwrap(),
            dev.alloc_f32(rows).unwrap(),
            dev.alloc_f32(rows).unwrap(),
        );
        norm::layer_norm_forward(dev, &d, &gx, Some(&gg), Some(&gb), &gy, &gm, &gr).expect("gpu");
        let tag = format!("layer norm {rows}x{dim}");
        assert_close(&format!("{tag} y"), &down(dev, &gy, len), &y, TOL);
        let (gdx, gdg, gdb) = (
            dev.alloc_f32(len).unwrap(),
            dev.zeros_f32(dim).unwrap(),
            dev.zeros_f32(dim).unwrap(),
        );
        norm::layer_norm_backward(
            dev,
            &d,
            &gx,
            Some(&gg),
            &gm,
            &gr,
            &gdy,
            &gdx,
            Some(&gdg),
            Some(&gdb),
            0.0,
        )
        .expect("gpu");
        assert_close(&format!("{tag} dx"), &down(dev, &gdx, len), &dx, TOL);
        assert_close(&format!("{tag} dgamma"), &down(dev, &gdg, dim), &dg, TOL);
        assert_close(&format!("{tag} dbeta"), &down(dev, &gdb, dim), &db, TOL);
    }
}
