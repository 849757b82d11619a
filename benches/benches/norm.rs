//! Fused GroupNorm + SiLU on the CPU, at the size of an early decoder ResnetBlock slice:
//! batch 1, 128×128 spatial, 128 channels, 32 groups, f32 (run with RAYON_NUM_THREADS=2 to
//! compare with the PyTorch numbers of scripts/torch_kernels_bench.py).

use criterion::{criterion_group, criterion_main, Criterion};
use medvae_kernels::cpu::group_norm::{
    group_norm_silu_backward, group_norm_silu_forward, Affine, AffineGrads, GroupNormDims,
    NormStats, NormStatsMut,
};
use rand::{Rng, SeedableRng};
use std::hint::black_box;

fn bench_gn_silu(c: &mut Criterion) {
    let d = GroupNormDims {
        n: 1,
        spatial: 128 * 128,
        channels: 128,
        groups: 32,
        eps: 1e-6,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut random = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(lo..hi)).collect()
    };
    let x = random(d.len(), -2.0, 2.0);
    let dy = random(d.len(), -1.0, 1.0);
    let gamma = random(d.channels, 0.5, 1.5);
    let beta = random(d.channels, -0.5, 0.5);
    let mut y = vec![0.0f32; d.len()];
    let mut dx = vec![0.0f32; d.len()];
    let (mut mean, mut rstd) = (vec![0.0f32; d.stats_len()], vec![0.0f32; d.stats_len()]);
    let (mut dgamma, mut dbeta) = (vec![0.0f32; d.channels], vec![0.0f32; d.channels]);
    let affine = Affine {
        gamma: &gamma,
        beta: &beta,
    };

    let mut group = c.benchmark_group("gn_silu");
    group.bench_function("forward", |b| {
        b.iter(|| {
            let stats = NormStatsMut {
                mean: &mut mean,
                rstd: &mut rstd,
            };
            group_norm_silu_forward(&d, black_box(&x), affine, &mut y, stats)
                .expect("valid geometry");
            black_box(&y);
        })
    });
    group.bench_function("fwd_bwd", |b| {
        b.iter(|| {
            let stats = NormStatsMut {
                mean: &mut mean,
                rstd: &mut rstd,
            };
            group_norm_silu_forward(&d, black_box(&x), affine, &mut y, stats)
                .expect("valid geometry");
            let stats = NormStats {
                mean: &mean,
                rstd: &rstd,
            };
            let grads = AffineGrads {
                dgamma: &mut dgamma,
                dbeta: &mut dbeta,
            };
            group_norm_silu_backward(&d, &x, affine, stats, black_box(&dy), &mut dx, grads)
                .expect("valid geometry");
            black_box(&dx);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_gn_silu);
criterion_main!(benches);
