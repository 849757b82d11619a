//! LPIPS' kernels (kernels/cuda/lpips.cu) against the CPU kernels: the per-layer distance
//! (forward and accumulating backward, both halves of one buffer or two buffers, zero-norm
//! pixels, channels 3 to 512) and the scaling layer; then the tensor-level ops LPIPS runs on
//! (distance, scaling, in-place ReLU and its mask, 2×2 max pool) on CUDA tensors against CPU
//! tensors.

use crate::support::{assert_close, device, down, randn, rng, uniform, up};
use medvae_kernels::cpu::lpips::{self as cpu, LpipsDims, LpipsScaling};
use medvae_runtime::cuda::ops::lpips::{self as lk, At};
use medvae_runtime::ops::activation::{relu_inplace, relu_mask_inplace};
use medvae_runtime::ops::perceptual::{
    lpips_distance_backward, lpips_distance_forward, lpips_scaling_backward, lpips_scaling_forward,
    GradSides, Samples,
};
use medvae_runtime::ops::resample::{max_pool2x2_backward, max_pool2x2_forward};
use medvae_runtime::{Device, Tensor};

const GPU: Device = Device::Cuda(0);
/// Forward values are sums of positive terms; backward values differ by summation order in
/// the norms and may cancel, so they get the suite's f32 tolerance.
const TOL: f64 = 1e-5;
const TOL_BWD: f64 = 1e-4;

const SCALING: LpipsScaling = LpipsScaling {
    shift: [-0.030, -0.088, -0.188],
    scale: [0.458, 0.448, 0.450],
};

/// ReLU-like features: non-negative, a quarter exact zeros, and pixel `zero_px` of every sample
/// all zero (the zero-norm convention).
fn features(seed: u64, d: &LpipsDims, zero_px: usize) -> Vec<f32> {
    let mut r = rng(seed);
    let mut f: Vec<f32> = randn(&mut r, d.len(), 1.0)
        .into_iter()
        .map(|v| v.max(-0.3) + 0.3)
        .collect();
    for s in 0..d.n {
        let at = (s * d.pixels + zero_px) * d.channels;
        f[at..at + d.channels].fill(0.0);
    }
    f
}

/// Random values (2 × the sample count of `d`) at the RMS of the backward's increments.
fn like_increments(
    seed: u64,
    d: &LpipsDims,
    fa: &[f32],
    fb: &[f32],
    w: &[f32],
    dp: &[f32],
) -> Vec<f32> {
    let mut inc = vec![0.0f32; d.len()];
    cpu::lpips_distance_backward(d, fa, fb, w, dp, Some(&mut inc), None).unwrap();
    let rms = (inc.iter().map(|v| (v * v) as f64).sum::<f64>() / inc.len().max(1) as f64).sqrt();
    randn(&mut rng(seed), 2 * d.len(), rms as f32)
}

#[test]
fn lpips_distance_kernels_match_cpu() {
    let Some(dev) = device() else { return };
    for (k, &(n, pixels, channels)) in [
        (2usize, 37usize, 3usize),
        (3, 64, 64),
        (2, 50, 512),
        (1, 300, 17),
    ]
    .iter()
    .enumerate()
    {
        let d = LpipsDims {
            n,
            pixels,
            channels,
        };
        let len = d.len();
        // One buffer holding a ‖ b (the joint batch), so the offsets are exercised.
        // Pixel 0 has a zero norm in a only, pixel 1 in b only.
        let (fa, fb) = (
            features(10 + k as u64, &d, 0),
            features(20 + k as u64, &d, 1),
        );
        let joint: Vec<f32> = fa.iter().chain(&fb).copied().collect();
        let w = uniform(&mut rng(30 + k as u64), channels, 0.0, 0.2);
        let dp = randn(&mut rng(40 + k as u64), n, 1.0);
        let what = format!("lpips distance n{n} px{pixels} c{channels}");

        let mut acc = vec![0.5f32; n];
        cpu::lpips_distance_forward(&d, &fa, &fb, &w, &mut acc).unwrap();
        let (gj, gw) = (up(dev, &joint), up(dev, &w));
        let gacc = up(dev, &vec![0.5f32; n]);
        lk::distance_forward(dev, &d, At::new(&gj, 0), At::new(&gj, len), &gw, &gacc).unwrap();
        assert_close(&format!("{what} forward"), &down(dev, &gacc, n), &acc, TOL);
        // Separate buffers give the same.
        let gacc2 = up(dev, &vec![0.5f32; n]);
        let (ga_in, gb_in) = (up(dev, &fa), up(dev, &fb));
        lk::distance_forward(dev, &d, At::new(&ga_in, 0), At::new(&gb_in, 0), &gw, &gacc2).unwrap();
        assert_close(
            &format!("{what} forward, two buffers"),
            &down(dev, &gacc2, n),
            &acc,
            TOL,
        );

        // Backward accumulates into what is there (values of the increments' size, so both
        // count): both halves of one buffer, then one side.
        let g0 = like_increments(50 + k as u64, &d, &fa, &fb, &w, &dp);
        let (mut ga, mut gb) = (g0[..len].to_vec(), g0[len..].to_vec());
        cpu::lpips_distance_backward(&d, &fa, &fb, &w, &dp, Some(&mut ga), Some(&mut gb)).unwrap();
        let (gg, gdp) = (up(dev, &g0), up(dev, &dp));
        let (a, b) = (At::new(&gj, 0), At::new(&gj, len));
        let sides = (Some(At::new(&gg, 0)), Some(At::new(&gg, len)));
        lk::distance_backward(dev, &d, a, b, &gw, &gdp, sides.0, sides.1).unwrap();
        let got = down(dev, &gg, 2 * len);
        assert_close(&format!("{what} backward a"), &got[..len], &ga, TOL_BWD);
        assert_close(&format!("{what} backward b"), &got[len..], &gb, TOL_BWD);
        for side in [0, 1] {
            let mut g = g0[..len].to_vec();
            let (sa, sb) = if side == 0 {
                (Some(&mut g[..]), None)
            } else {
                (None, Some(&mut g[..]))
            };
            cpu::lpips_distance_backward(&d, &fa, &fb, &w, &dp, sa, sb).unwrap();
            let gone = up(dev, &g0[..len]);
            let at = Some(At::new(&gone, 0));
            let (sa, sb) = if side == 0 { (at, None) } else { (None, at) };
            lk::distance_backward(
                dev,
                &d,
                At::new(&ga_in, 0),
                At::new(&gb_in, 0),
                &gw,
                &gdp,
                sa,
                sb,
            )
            .unwrap();
            assert_close(
                &format!("{what} backward {} only", ["a", "b"][side]),
                &down(dev, &gone, len),
                &g,
                TOL_BWD,
            );
        }
    }
}

#[test]
fn lpips_scaling_kernels_match_cpu() {
    let Some(dev) = device() else { return };
    for cin in [1usize, 3] {
        let pixels = 2 * 19 * 23;
        let x = randn(&mut rng(60 + cin as u64), pixels * cin, 1.0);
        let dy = randn(&mut rng(70 + cin as u64), pixels * 3, 1.0);
        let (mut y, mut dx) = (vec![0.0; pixels * 3], vec![0.0; pixels * cin]);
        cpu::lpips_scaling_forward(&SCALING, pixels, cin, &x, &mut y).unwrap();
        cpu::lpips_scaling_backward(&SCALING, pixels, cin, &dy, &mut dx).unwrap();
        // Written at an offset of 7 elements, read back from one of 5.
        let gy = up(dev, &vec![9.0; pixels * 3 + 7]);
        lk::scaling_forward(dev, &SCALING, pixels, cin, &up(dev, &x), At::new(&gy, 7)).unwrap();
        let got = down(dev, &gy, pixels * 3 + 7);
        assert_close(&format!("lpips scaling {cin}ch"), &got[7..], &y, 1e-6);
        assert_eq!(got[..7], [9.0; 7], "scaling wrote before its offset");
        let padded: Vec<f32> = [0.0; 5].iter().chain(&dy).copied().collect();
        let gdx = dev.alloc_f32(pixels * cin).unwrap();
        lk::scaling_backward(
            dev,
            &SCALING,
            pixels,
            cin,
            At::new(&up(dev, &padded), 5),
            &gdx,
        )
        .unwrap();
        assert_close(
            &format!("lpips scaling backward {cin}ch"),
            &down(dev, &gdx, pixels * cin),
            &dx,
            1e-6,
        );
    }
    // Geometry the kernels cannot take is refused before launch.
    let b = dev.alloc_f32(64).unwrap();
    assert!(lk::scaling_forward(dev, &SCALING, 4, 2, &b, At::new(&b, 0)).is_err());
    let d = LpipsDims {
        n: 2,
        pixels: 4,
        channels: 4,
    };
    let (a, bb) = (At::new(&b, 0), At::new(&b, 32));
    let overlap = (Some(At::new(&b, 0)), Some(At::new(&b, 16)));
    assert!(lk::distance_backward(dev, &d, a, bb, &b, &b, overlap.0, overlap.1).is_err());
}

fn both(shape: &[usize], seed: u64, relu: bool) -> (Tensor, Tensor) {
    let n = shape.iter().product();
    let mut v = randn(&mut rng(seed), n, 1.0);
    if relu {
        v.iter_mut().for_each(|x| *x = x.max(0.0));
    }
    let cpu = Tensor::from_vec(shape, v).expect("tensor");
    let gpu = cpu.to_device(GPU).expect("upload");
    (cpu, gpu)
}

/// A gradient to accumulate into, small enough (1e-5) that the increments are not lost in it.
fn small(shape: &[usize], seed: u64) -> (Tensor, Tensor) {
    let n = shape.iter().product();
    let cpu = Tensor::from_vec(shape, randn(&mut rng(seed), n, 1e-5)).expect("tensor");
    let gpu = cpu.to_device(GPU).expect("upload");
    (cpu, gpu)
}

/// The op API on CUDA tensors: a joint batch (a ‖ b in one tensor, gradients into both
/// halves) and separate tensors (gradient into one), against the same calls on the CPU.
#[test]
fn lpips_tensor_ops_match_cpu() {
    if device().is_none() {
        return;
    }
    let n = 2;
    for c in [3usize, 64, 512] {
        let shape = [2 * n, 6, 5, c];
        let (f, gf) = both(&shape, 80 + c as u64, true);
        let (w, gw) = both(&[1, c, 1, 1], 81, true);
        let (dp, gdp) = both(&[n], 82, false);
        let (mut acc, mut gacc) = (Tensor::zeros(&[n]), Tensor::zeros_on(&[n], GPU).unwrap());
        lpips_distance_forward(Samples::new(&f, 0), Samples::new(&f, n), n, &w, &mut acc).unwrap();
        let (ga, gb) = (Samples::new(&gf, 0), Samples::new(&gf, n));
        lpips_distance_forward(ga, gb, n, &gw, &mut gacc).unwrap();
        let what = format!("lpips op c{c}");
        assert_close(
            &format!("{what} joint forward"),
            &gacc.to_f32_vec(),
            &acc.to_f32_vec(),
            TOL,
        );
        let sides = GradSides {
            a: Some(0),
            b: Some(n),
        };
        let (g0, gg0) = small(&shape, 83);
        let (mut g, mut gg) = (g0.clone(), gg0.clone());
        let (a, b) = (Samples::new(&f, 0), Samples::new(&f, n));
        lpips_distance_backward(a, b, n, &w, &dp, &mut g, sides).unwrap();
        lpips_distance_backward(ga, gb, n, &gw, &gdp, &mut gg, sides).unwrap();
        assert_close(
            &format!("{what} joint backward"),
            &gg.to_f32_vec(),
            &g.to_f32_vec(),
            TOL_BWD,
        );
        assert_eq!(
            gg0.to_f32_vec(),
            g0.to_f32_vec(),
            "the clone's buffer was written"
        );
        // Separate tensors, gradient into b only.
        let half = [n, 6, 5, c];
        let (fb, gfb) = both(&half, 84, true);
        let (h0, gh0) = small(&half, 85);
        let (mut h, mut gh) = (h0, gh0);
        let target = GradSides {
            a: None,
            b: Some(0),
        };
        let (a, b) = (Samples::new(&f, n), Samples::new(&fb, 0));
        lpips_distance_backward(a, b, n, &w, &dp, &mut h, target).unwrap();
        let (a, b) = (Samples::new(&gf, n), Samples::new(&gfb, 0));
        lpips_distance_backward(a, b, n, &gw, &gdp, &mut gh, target).unwrap();
        assert_close(
            &format!("{what} target-only backward"),
            &gh.to_f32_vec(),
            &h.to_f32_vec(),
            TOL_BWD,
        );
    }
    for cin in [1usize, 3] {
        let shape = [n, 7, 9, cin];
        let (x, gx) = both(&shape, 90, false);
        let (t, gt) = both(&shape, 91, false);
        let y = lpips_scaling_forward(&SCALING, &[&x, &t]).unwrap();
        let gy = lpips_scaling_forward(&SCALING, &[&gx, &gt]).unwrap();
        assert_eq!(gy.shape(), &[2 * n, 7, 9, 3]);
        assert_close(
            &format!("lpips scaling op {cin}ch"),
            &gy.to_f32_vec(),
            &y.to_f32_vec(),
            1e-6,
        );
        for first in [0, n] {
            let dx = lpips_scaling_backward(&SCALING, &y, first, &shape).unwrap();
            let gdx = lpips_scaling_backward(&SCALING, &gy, first, &shape).unwrap();
            assert_close(
                &format!("lpips scaling op backward {cin}ch from {first}"),
                &gdx.to_f32_vec(),
                &dx.to_f32_vec(),
                1e-6,
            );
        }
    }
}

#[test]
fn relu_inplace_and_max_pool_ops_match_cpu() {
    if device().is_none() {
        return;
    }
    for shape in [[2usize, 8, 6, 3], [1, 33, 17, 64]] {
        let (mut y, mut gy) = both(&shape, 95, false);
        let kept = gy.clone();
        relu_inplace(&mut y).unwrap();
        relu_inplace(&mut gy).unwrap();
        assert_close(
            &format!("relu in place {shape:?}"),
            &gy.to_f32_vec(),
            &y.to_f32_vec(),
            0.0,
        );
        assert!(
            kept.to_f32_vec().iter().any(|&v| v < 0.0),
            "a clone was overwritten"
        );
        let (mut g, mut gg) = both(&shape, 96, false);
        relu_mask_inplace(&mut g, &y).unwrap();
        relu_mask_inplace(&mut gg, &gy).unwrap();
        assert_close(
            &format!("relu mask {shape:?}"),
            &gg.to_f32_vec(),
            &g.to_f32_vec(),
            0.0,
        );
        let (p, arg) = max_pool2x2_forward(&y).unwrap();
        let (gp, garg) = max_pool2x2_forward(&gy).unwrap();
        assert_close(
            &format!("max pool op {shape:?}"),
            &gp.to_f32_vec(),
            &p.to_f32_vec(),
            0.0,
        );
        let (dp, gdp) = both(p.shape(), 97, false);
        let dx = max_pool2x2_backward(&arg, &dp).unwrap();
        let gdx = max_pool2x2_backward(&garg, &gdp).unwrap();
        assert_close(
            &format!("max pool op backward {shape:?}"),
            &gdx.to_f32_vec(),
            &dx.to_f32_vec(),
            0.0,
        );
        // A CPU argmax cannot serve a CUDA gradient, nor the other way round.
        assert!(max_pool2x2_backward(&arg, &gdp).is_err());
        assert!(max_pool2x2_backward(&garg, &dp).is_err());
    }
}
