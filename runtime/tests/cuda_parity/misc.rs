//! Elementwise ops, softmax, upsampling, pooling, resize, reductions, losses, Adam and the
//! memory pool, against the CPU kernels or f64 references.

use crate::support::{assert_close, device, down, randn, rng, uniform, up};
use medvae_kernels::cpu::{activation, loss as cpu_loss, pool, resize, softmax, upsample};
use medvae_runtime::cuda::ops::adam::{adam_step, AdamHyper, AdamParam};
use medvae_runtime::cuda::ops::elementwise::{self as ew, Activation};
use medvae_runtime::cuda::ops::{loss, sample};

#[test]
fn activations_match_cpu() {
    let Some(dev) = device() else { return };
    let mut r = rng(7);
    for n in [1000usize, 100_003] {
        let x = randn(&mut r, n, 3.0);
        let dy = randn(&mut r, n, 1.0);
        let (gx, gdy, gy, gdx) = (
            up(dev, &x),
            up(dev, &dy),
            dev.alloc_f32(n).unwrap(),
            dev.alloc_f32(n).unwrap(),
        );
        let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
        for act in [
            Activation::Silu,
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Gelu,
        ] {
            match act {
                Activation::Silu => {
                    activation::silu_forward(&x, &mut y).unwrap();
                    activation::silu_backward(&x, &dy, &mut dx).unwrap();
                }
                Activation::Relu => {
                    activation::relu_forward(&x, &mut y).unwrap();
                    activation::relu_backward(&x, &dy, &mut dx).unwrap();
                }
                Activation::LeakyRelu(s) => {
                    activation::leaky_relu_forward(&x, s, &mut y).unwrap();
                    activation::leaky_relu_backward(&x, s, &dy, &mut dx).unwrap();
                }
                Activation::Gelu => {
                    activation::gelu_forward(&x, &mut y).unwrap();
                    activation::gelu_backward(&x, &dy, &mut dx).unwrap();
                }
            }
            ew::activation_forward(dev, act, &gx, &gy, n).unwrap();
            ew::activation_backward(dev, act, &gx, &gdy, &gdx, n).unwrap();
            assert_close(
                &format!("{act:?} forward n{n}"),
                &down(dev, &gy, n),
                &y,
                1e-6,
            );
            assert_close(
                &format!("{act:?} backward n{n}"),
                &down(dev, &gdx, n),
                &dx,
                1e-6,
            );
        }
    }
}

#[test]
fn arithmetic_and_transpose() {
    let Some(dev) = device() else { return };
    let mut r = rng(8);
    let n = 5000;
    let (a, b) = (randn(&mut r, n, 1.0), randn(&mut r, n, 1.0));
    let (ga, gb, gy) = (up(dev, &a), up(dev, &b), dev.alloc_f32(n).unwrap());
    ew::add_scaled(dev, &ga, &gb, &gy, n, 2.0, -0.5).unwrap();
    let e: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 2.0 * x - 0.5 * y).collect();
    assert_close("add_scaled", &down(dev, &gy, n), &e, 1e-7);
    ew::axpy(dev, &ga, &gy, n, 0.5).unwrap();
    let e: Vec<f32> = e.iter().zip(&a).map(|(y, x)| y + 0.5 * x).collect();
    assert_close("axpy", &down(dev, &gy, n), &e, 1e-7);
    ew::mul(dev, &ga, &gb, &gy, n).unwrap();
    let e: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_close("mul", &down(dev, &gy, n), &e, 1e-7);
    ew::fill(dev, &gy, n, 3.5).unwrap();
    assert_close("fill", &down(dev, &gy, n), &vec![3.5; n], 0.0);
    let (rows, cols) = (50usize, 100usize);
    let bias = randn(&mut r, cols, 1.0);
    ew::add_channel_bias(dev, &gy, &up(dev, &bias), rows, cols).unwrap();
    let e: Vec<f32> = (0..n).map(|i| 3.5 + bias[i % cols]).collect();
    assert_close("add_channel_bias", &down(dev, &gy, n), &e, 1e-7);
    let (bt, rr, cc) = (3usize, 37usize, 45usize);
    let m = randn(&mut r, bt * rr * cc, 1.0);
    let gt = dev.alloc_f32(m.len()).unwrap();
    ew::transpose_2d(dev, &up(dev, &m), &gt, bt, rr, cc).unwrap();
    let mut e = vec![0.0; m.len()];
    for b in 0..bt {
        for i in 0..rr {
            for j in 0..cc {
                e[b * rr * cc + j * rr + i] = m[b * rr * cc + i * cc + j];
            }
        }
    }
    assert_close("transpose_2d", &down(dev, &gt, m.len()), &e, 0.0);
}

#[test]
fn softmax_upsample_pool_resize_match_cpu() {
    let Some(dev) = device() else { return };
    let mut r = rng(9);
    for &(rows, n) in &[(5usize, 9usize), (64, 4096)] {
        let x = randn(&mut r, rows * n, 3.0);
        let dy = randn(&mut r, rows * n, 1.0);
        let (mut y, mut dx) = (vec![0.0; rows * n], vec![0.0; rows * n]);
        softmax::softmax_forward(&x, rows, n, &mut y).unwrap();
        softmax::softmax_backward(&y, &dy, rows, n, &mut dx).unwrap();
        let (gy, gdx) = (
            dev.alloc_f32(rows * n).unwrap(),
            dev.alloc_f32(rows * n).unwrap(),
        );
        sample::softmax_forward(dev, &up(dev, &x), &gy, rows, n).unwrap();
        sample::softmax_backward(dev, &gy, &up(dev, &dy), &gdx, rows, n, 0.0).unwrap();
        assert_close(
            &format!("softmax {rows}x{n}"),
            &down(dev, &gy, rows * n),
            &y,
            1e-5,
        );
        assert_close(
            &format!("softmax backward {rows}x{n}"),
            &down(dev, &gdx, rows * n),
            &dx,
            1e-5,
        );
    }
    for d in [
        upsample::UpsampleDims {
            n: 2,
            spatial: [1, 5, 7],
            channels: 3,
            scale: [1, 2, 2],
        },
        upsample::UpsampleDims {
            n: 1,
            spatial: [3, 4, 5],
            channels: 8,
            scale: [2, 2, 2],
        },
    ] {
        let x = randn(&mut r, d.in_len(), 1.0);
        let dy = randn(&mut r, d.out_len(), 1.0);
        let (mut y, mut dx) = (vec![0.0; d.out_len()], vec![0.0; d.in_len()]);
        upsample::upsample_nearest_forward(&d, &x, &mut y).unwrap();
        upsample::upsample_nearest_backward(&d, &dy, &mut dx).unwrap();
        let (gy, gdx) = (
            dev.alloc_f32(d.out_len()).unwrap(),
            dev.alloc_f32(d.in_len()).unwrap(),
        );
        sample::upsample_nearest_forward(dev, &d, &up(dev, &x), &gy).unwrap();
        sample::upsample_nearest_backward(dev, &d, &up(dev, &dy), &gdx, 0.0).unwrap();
        assert_close(
            &format!("upsample {:?}", d.scale),
            &down(dev, &gy, d.out_len()),
            &y,
            0.0,
        );
        assert_close(
            &format!("upsample backward {:?}", d.scale),
            &down(dev, &gdx, d.in_len()),
            &dx,
            1e-6,
        );
    }
    for d in [
        pool::MaxPoolDims {
            n: 2,
            spatial: [1, 9, 7],
            channels: 5,
        },
        pool::MaxPoolDims {
            n: 1,
            spatial: [1, 64, 64],
            channels: 64,
        },
    ] {
        let mut x = randn(&mut r, d.in_len(), 1.0);
        for v in x.iter_mut().step_by(7) {
            *v = 0.5; // ties
        }
        let dy = randn(&mut r, d.out_len(), 1.0);
        let (mut y, mut arg, mut dx) = (
            vec![0.0; d.out_len()],
            vec![0u8; d.out_len()],
            vec![0.0; d.in_len()],
        );
        pool::max_pool2x2_forward(&d, &x, &mut y, &mut arg).unwrap();
        pool::max_pool2x2_backward(&d, &arg, &dy, &mut dx).unwrap();
        let (gx, gy, gdx) = (
            up(dev, &x),
            dev.alloc_f32(d.out_len()).unwrap(),
            dev.alloc_f32(d.in_len()).unwrap(),
        );
        sample::max_pool2x2_forward(dev, &d, &gx, &gy).unwrap();
        sample::max_pool2x2_backward(dev, &d, &gx, &up(dev, &dy), &gdx, 0.0).unwrap();
        assert_close(
            &format!("max pool {:?}", d.spatial),
            &down(dev, &gy, d.out_len()),
            &y,
            0.0,
        );
        assert_close(
            &format!("max pool backward {:?}", d.spatial),
            &down(dev, &gdx, d.in_len()),
            &dx,
            0.0,
        );
    }
    for &(n, c, ih, iw, oh, ow) in &[
        (2usize, 1usize, 131usize, 77usize, 48usize, 48usize),
        (1, 3, 17, 23, 50, 41),
        (1, 3, 40, 40, 40, 20),
    ] {
        let plan = resize::ResizePlan::bicubic_aa([ih, iw], [oh, ow]).unwrap();
        let x = randn(&mut r, n * ih * iw * c, 1.0);
        let dy = randn(&mut r, n * oh * ow * c, 1.0);
        let (mut y, mut dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
        resize::resize_forward(&plan, n, c, &x, &mut y).unwrap();
        resize::resize_backward(&plan, n, c, &dy, &mut dx).unwrap();
        let gp = sample::GpuResizePlan::new(dev, &plan).unwrap();
        let (gy, gdx) = (
            dev.alloc_f32(dy.len()).unwrap(),
            dev.alloc_f32(x.len()).unwrap(),
        );
        sample::resize_forward(dev, &gp, n, c, &up(dev, &x), &gy).unwrap();
        sample::resize_backward(dev, &gp, n, c, &up(dev, &dy), &gdx).unwrap();
        let tag = format!("resize {ih}x{iw} -> {oh}x{ow} c{c}");
        assert_close(&tag, &down(dev, &gy, dy.len()), &y, 1e-5);
        assert_close(
            &format!("{tag} backward"),
            &down(dev, &gdx, x.len()),
            &dx,
            1e-5,
        );
    }
}

#[test]
fn reductions_and_losses_match() {
    let Some(dev) = device() else { return };
    let mut r = rng(10);
    let n = 123_457;
    let (a, b) = (randn(&mut r, n, 1.0), randn(&mut r, n, 1.0));
    let (ga, gb, out) = (up(dev, &a), up(dev, &b), dev.alloc_f32(1).unwrap());
    loss::sum(dev, &ga, n, &out, 1.0 / n as f32, false).unwrap();
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert_close("mean", &down(dev, &out, 1), &[mean as f32], 1e-5);
    loss::sum_squares(dev, &ga, n, &out).unwrap();
    let sq = a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    assert_close("sum of squares", &down(dev, &out, 1), &[sq as f32], 1e-5);
    loss::l1_forward(dev, &ga, &gb, n, &out, 1.0 / n as f32).unwrap();
    assert_close(
        "l1 mean",
        &down(dev, &out, 1),
        &[cpu_loss::l1_mean_forward(&a, &b).unwrap()],
        1e-5,
    );
    let mut da = vec![0.0; n];
    cpu_loss::l1_mean_backward(&a, &b, 2.0, &mut da).unwrap();
    let (gda, gs) = (dev.alloc_f32(n).unwrap(), up(dev, &[2.0]));
    loss::l1_backward(dev, &ga, &gb, &gda, n, 1.0 / n as f32, Some(&gs), 0.0).unwrap();
    assert_close(
        "l1 mean backward (device scale)",
        &down(dev, &gda, n),
        &da,
        1e-6,
    );
    // row / column sums
    let (rows, cols) = (300usize, 70usize);
    let m = randn(&mut r, rows * cols, 1.0);
    let gm = up(dev, &m);
    let (rs, cs) = (dev.alloc_f32(rows).unwrap(), up(dev, &vec![1.0; cols]));
    loss::reduce_rows(dev, &gm, rows, cols, &rs, 1.0, false).unwrap();
    loss::reduce_cols_acc(dev, &gm, rows, cols, &cs).unwrap();
    let er: Vec<f32> = (0..rows)
        .map(|i| m[i * cols..(i + 1) * cols].iter().sum())
        .collect();
    let ec: Vec<f32> = (0..cols)
        .map(|j| 1.0 + (0..rows).map(|i| m[i * cols + j]).sum::<f32>())
        .collect();
    assert_close("reduce rows", &down(dev, &rs, rows), &er, 1e-5);
    assert_close("reduce cols (accumulate)", &down(dev, &cs, cols), &ec, 1e-5);
    // hinge
    let (real, fake) = (
        randn(&mut r, 2 * 30 * 30, 1.5),
        randn(&mut r, 2 * 30 * 30, 1.5),
    );
    let (gr, gf) = (up(dev, &real), up(dev, &fake));
    loss::hinge_forward(dev, &gr, real.len(), &gf, fake.len(), &out).unwrap();
    assert_close(
        "hinge",
        &down(dev, &out, 1),
        &[cpu_loss::hinge_d_loss_forward(&real, &fake).unwrap()],
        1e-5,
    );
    let (mut dr, mut df) = (vec![0.0; real.len()], vec![0.0; fake.len()]);
    cpu_loss::hinge_d_loss_backward(&real, &fake, 1.0, &mut dr, &mut df).unwrap();
    let (gdr, gdf) = (
        dev.alloc_f32(real.len()).unwrap(),
        dev.alloc_f32(fake.len()).unwrap(),
    );
    loss::hinge_backward(
        dev,
        &gr,
        real.len(),
        &gf,
        fake.len(),
        &gdr,
        &gdf,
        1.0,
        None,
        0.0,
    )
    .unwrap();
    assert_close("hinge d real", &down(dev, &gdr, real.len()), &dr, 1e-6);
    assert_close("hinge d fake", &down(dev, &gdf, fake.len()), &df, 1e-6);
    // KL per sample and per (sample, w)
    for keep in [false, true] {
        let d = cpu_loss::KlDims {
            n: 2,
            spatial: [3, 6, 5],
            z_channels: 2,
            keep_last_axis: keep,
        };
        let mut mom = randn(&mut r, d.moments_len(), 3.0);
        mom[2] = 25.0; // outside the clamp
        let dkl = randn(&mut r, d.out_len(), 1.0);
        let (mut kl, mut dm) = (vec![0.0; d.out_len()], vec![0.0; d.moments_len()]);
        cpu_loss::kl_diag_gaussian_forward(&d, &mom, &mut kl).unwrap();
        cpu_loss::kl_diag_gaussian_backward(&d, &mom, &dkl, &mut dm).unwrap();
        let (gmom, gkl, gdm) = (
            up(dev, &mom),
            dev.alloc_f32(d.out_len()).unwrap(),
            dev.alloc_f32(d.moments_len()).unwrap(),
        );
        loss::kl_forward(dev, &d, &gmom, &gkl).unwrap();
        loss::kl_backward(dev, &d, &gmom, Some(&up(dev, &dkl)), &gdm, 1.0, None, 0.0).unwrap();
        assert_close(
            &format!("kl keep_last_axis={keep}"),
            &down(dev, &gkl, d.out_len()),
            &kl,
            1e-5,
        );
        assert_close(
            &format!("kl backward keep_last_axis={keep}"),
            &down(dev, &gdm, d.moments_len()),
            &dm,
            1e-5,
        );
    }
    // reparameterised sample
    let (pixels, zc) = (4 * 5 * 6, 3usize);
    let mom = randn(&mut r, pixels * 2 * zc, 2.0);
    let eps = randn(&mut r, pixels * zc, 1.0);
    let dz = randn(&mut r, pixels * zc, 1.0);
    let (gz, gdm) = (
        dev.alloc_f32(pixels * zc).unwrap(),
        dev.alloc_f32(pixels * 2 * zc).unwrap(),
    );
    let (gmom, geps) = (up(dev, &mom), up(dev, &eps));
    loss::gaussian_sample_forward(dev, pixels, zc, &gmom, &geps, &gz).unwrap();
    loss::gaussian_sample_backward(dev, pixels, zc, &gmom, &geps, &up(dev, &dz), &gdm, 0.0)
        .unwrap();
    let (mut ez, mut edm) = (vec![0.0; pixels * zc], vec![0.0; pixels * 2 * zc]);
    for p in 0..pixels {
        for c in 0..zc {
            let lv = (mom[p * 2 * zc + zc + c] as f64).clamp(-30.0, 20.0);
            let sd = (0.5 * lv).exp();
            ez[p * zc + c] = (mom[p * 2 * zc + c] as f64 + sd * eps[p * zc + c] as f64) as f32;
            edm[p * 2 * zc + c] = dz[p * zc + c];
            edm[p * 2 * zc + zc + c] =
                (dz[p * zc + c] as f64 * eps[p * zc + c] as f64 * 0.5 * sd) as f32;
        }
    }
    assert_close("gaussian sample", &down(dev, &gz, pixels * zc), &ez, 1e-6);
    assert_close(
        "gaussian sample backward",
        &down(dev, &gdm, pixels * 2 * zc),
        &edm,
        1e-6,
    );
}

#[test]
fn adam_matches_torch_formula() {
    let Some(dev) = device() else { return };
    let mut r = rng(11);
    let sizes = [5usize, 70_000, 37];
    let h = AdamHyper {
        lr: 1e-3,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let host: Vec<[Vec<f32>; 4]> = sizes
        .iter()
        .map(|&n| {
            [
                randn(&mut r, n, 1.0),
                randn(&mut r, n, 1.0),
                randn(&mut r, n, 0.1),
                uniform(&mut r, n, 0.0, 0.1),
            ]
        })
        .collect();
    let bufs: Vec<[_; 4]> = host
        .iter()
        .map(|t| {
            [
                up(dev, &t[0]),
                up(dev, &t[1]),
                up(dev, &t[2]),
                up(dev, &t[3]),
            ]
        })
        .collect();
    let params: Vec<AdamParam> = bufs
        .iter()
        .zip(&sizes)
        .map(|(b, &len)| AdamParam {
            param: &b[0],
            grad: &b[1],
            m: &b[2],
            v: &b[3],
            len,
        })
        .collect();
    let step = 3u64;
    adam_step(dev, &params, &h, step, 0.5).unwrap();
    let (bc1, bc2) = (1.0 - 0.5f64.powi(3), 1.0 - 0.9f64.powi(3));
    for (i, t) in host.iter().enumerate() {
        let n = sizes[i];
        let (mut ep, mut em, mut ev) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for j in 0..n {
            let g = t[1][j] as f64 * 0.5;
            let m = 0.5 * t[2][j] as f64 + 0.5 * g;
            let v = 0.9 * t[3][j] as f64 + 0.1 * g * g;
            em[j] = m as f32;
            ev[j] = v as f32;
            ep[j] = (t[0][j] as f64 - 1e-3 / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-8)) as f32;
        }
        assert_close(
            &format!("adam param {i}"),
            &down(dev, &bufs[i][0], n),
            &ep,
            1e-6,
        );
        assert_close(
            &format!("adam m {i}"),
            &down(dev, &bufs[i][2], n),
            &em,
            1e-6,
        );
        assert_close(
            &format!("adam v {i}"),
            &down(dev, &bufs[i][3], n),
            &ev,
            1e-6,
        );
    }
}

#[test]
fn pool_reuses_freed_blocks() {
    let Some(dev) = device() else { return };
    let before = dev.memory();
    for _ in 0..3 {
        let a = dev.alloc_f32(1 << 20).unwrap();
        let b = dev.alloc_f32(1000).unwrap();
        drop((a, b));
    }
    let after = dev.memory();
    assert!(
        after.driver_allocations - before.driver_allocations <= 2,
        "{before:?} -> {after:?}"
    );
    assert!(after.peak_bytes >= (4 << 20));
    let x = dev.upload(&[1.0f32, 2.0, 3.0]).unwrap();
    let mut back = [0.0f32; 3];
    dev.download(&x, &mut back).unwrap();
    assert_eq!(back, [1.0, 2.0, 3.0]);
    let mut pinned = dev.pinned_f32(4).unwrap();
    pinned.as_mut_slice().copy_from_slice(&[4.0, 5.0, 6.0, 7.0]);
    let g = dev.alloc_f32(4).unwrap();
    dev.upload_pinned(&pinned, &g).unwrap();
    assert_eq!(dev.to_vec_f32(&g).unwrap(), vec![4.0, 5.0, 6.0, 7.0]);
}
