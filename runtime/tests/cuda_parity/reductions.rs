//! Whole-tensor reductions read back to the host, the split hinge loss, filled tensors and the
//! tensor-level Adam update: CUDA tensors against the same calls on CPU tensors.

use super::support::{assert_close, device, tensor_pair, GPU};
use medvae_runtime::ops::loss::{hinge_half_backward, hinge_half_forward};
use medvae_runtime::ops::optim::{AdamSettings, AdamUpdate};
use medvae_runtime::ops::reduce::{
    abs_diff_sum, count_non_finite, count_non_finite_total, full, sum, sum_squares,
};
use medvae_runtime::Tensor;

fn close(what: &str, got: f64, want: f64, tol: f64) {
    let e = (got - want).abs() / want.abs().max(1e-30);
    println!("{what}: {got:.9e} vs {want:.9e} (rel {e:.2e})");
    assert!(e < tol, "{what}: {got} vs {want}");
}

#[test]
fn sums_norms_and_finiteness_match_cpu() {
    if device().is_none() {
        return;
    }
    for n in [1usize, 1000, 300_007] {
        let (a, ga) = tensor_pair(&[n], 1 + n as u64, 2.0);
        let (b, gb) = tensor_pair(&[n], 2 + n as u64, 1.0);
        close(
            &format!("sum n{n}"),
            sum(&ga).unwrap(),
            sum(&a).unwrap(),
            1e-4,
        );
        close(
            &format!("sum_squares n{n}"),
            sum_squares(&ga).unwrap(),
            sum_squares(&a).unwrap(),
            1e-5,
        );
        close(
            &format!("abs_diff_sum n{n}"),
            abs_diff_sum(&ga, &gb).unwrap(),
            abs_diff_sum(&a, &b).unwrap(),
            1e-5,
        );
        assert_eq!(count_non_finite(&ga).unwrap(), 0);
        let mut v = a.to_f32_vec();
        v[n / 2] = f32::NAN;
        v[n - 1] = f32::INFINITY;
        let bad = Tensor::from_vec(&[n], v).unwrap().to_device(GPU).unwrap();
        let want = if n == 1 { 1 } else { 2 };
        assert_eq!(count_non_finite(&bad).unwrap(), want, "n{n}");
        assert!(bad.has_non_finite() && !ga.has_non_finite());
    }
    // The batched count (one read-back for all device tensors), over device and host tensors.
    let mut tensors = Vec::new();
    let mut want = 0;
    for (i, n) in [7usize, 1000, 300_007, 1].into_iter().enumerate() {
        let (a, ga) = tensor_pair(&[n], 40 + i as u64, 1.0);
        tensors.push(ga);
        tensors.push(a.clone());
        let mut v = a.to_f32_vec();
        for j in (0..n).step_by(997) {
            v[j] = if j % 2 == 0 {
                f32::NAN
            } else {
                f32::NEG_INFINITY
            };
            want += 2; // in the device copy and the host copy below
        }
        let bad = Tensor::from_vec(&[n], v).unwrap();
        tensors.push(bad.to_device(GPU).unwrap());
        tensors.push(bad);
    }
    assert_eq!(count_non_finite_total(&tensors).unwrap(), want);
    let finite: Vec<Tensor> = tensors.iter().step_by(4).cloned().collect();
    assert_eq!(count_non_finite_total(&finite).unwrap(), 0);
    let f = full(&[3, 5], -0.125, GPU).unwrap();
    assert_eq!(f.device(), GPU);
    assert_eq!(f.to_f32_vec(), vec![-0.125; 15]);
}

#[test]
fn split_hinge_matches_cpu() {
    if device().is_none() {
        return;
    }
    for n in [7usize, 2 * 30 * 30, 100_001] {
        let (x, gx) = tensor_pair(&[n], 30 + n as u64, 1.5);
        for sign in [-1.0f32, 1.0] {
            close(
                &format!("hinge half sign {sign} n{n}"),
                hinge_half_forward(&gx, sign).unwrap(),
                hinge_half_forward(&x, sign).unwrap(),
                1e-5,
            );
            let g = 0.5 / n as f32;
            assert_close(
                &format!("hinge half backward sign {sign} n{n}"),
                &hinge_half_backward(&gx, sign, g).unwrap().to_f32_vec(),
                &hinge_half_backward(&x, sign, g).unwrap().to_f32_vec(),
                1e-7,
            );
        }
    }
}

#[test]
fn tensor_adam_matches_cpu_over_steps() {
    if device().is_none() {
        return;
    }
    let settings = AdamSettings {
        lr: 1e-3,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-8,
        grad_scale: 0.5,
    };
    let sizes = [5usize, 16_384, 40_000];
    let mut cpu: Vec<[Tensor; 4]> = Vec::new();
    let mut gpu: Vec<[Tensor; 4]> = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let s = 100 + 10 * i as u64;
        let (p, gp) = tensor_pair(&[n], s, 1.0);
        let (g, gg) = tensor_pair(&[n], s + 1, 1.0);
        let z = Tensor::zeros(&[n]);
        let gz = z.to_device(GPU).unwrap();
        cpu.push([p, g, z.clone(), z]);
        gpu.push([gp, gg, gz.clone(), gz]);
    }
    // The moments start as clones of one zero buffer: copy-on-write must split them.
    for step in 1..=3u64 {
        for set in [&mut cpu, &mut gpu] {
            let mut up = AdamUpdate::new(settings);
            for t in set.iter_mut() {
                let [p, g, m, v] = t;
                up.add(p, g, m, v, step).unwrap();
            }
            up.finish().unwrap();
        }
    }
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        for (k, what) in ["param", "grad", "exp_avg", "exp_avg_sq"]
            .iter()
            .enumerate()
        {
            assert_close(
                &format!("adam {what} {i}"),
                &g[k].to_f32_vec(),
                &c[k].to_f32_vec(),
                1e-6,
            );
        }
    }
}
