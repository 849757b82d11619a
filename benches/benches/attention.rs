//! Attention kernel (single head over all spatial positions, MedVAE's `AttnBlock` core), f32,
//! batch 1: 4,096 tokens × 128 channels (a 64² map) and 9,216 tokens × 512 channels (the mid
//! block of a 4× model at 384² input: 96² latent-resolution features, 512 channels). Run with
//! `RAYON_NUM_THREADS=2` to compare against `scripts/torch_attention_bench.py`. The default
//! engine is the AVX2 one where the CPU has it; the smaller shape also times the portable
//! engine (`*_portable`) for comparison.

use criterion::{criterion_group, criterion_main, Criterion};
use medvae_kernels::cpu::attention::{
    attention_backward_with, attention_forward_with, AttentionDims, AttentionPlan, Engine,
};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// `forward` and `fwd_bwd` (forward, then backward to q, k, v) of one geometry, also on the
/// portable engine when `with_portable`.
fn bench_shape(
    c: &mut Criterion,
    group_name: &str,
    tokens: usize,
    dim: usize,
    with_portable: bool,
) {
    let d = AttentionDims {
        batch: 1,
        tokens,
        dim,
        scale: (dim as f64).powf(-0.5),
    };
    let (q, k, v, d_o) = (
        random(d.len(), 1),
        random(d.len(), 2),
        random(d.len(), 3),
        random(d.len(), 4),
    );
    let (mut o, mut lse) = (vec![0f32; d.len()], vec![0f32; d.lse_len()]);
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; d.len()],
        vec![0f32; d.len()],
        vec![0f32; d.len()],
    );

    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(if tokens * tokens * dim > 1 << 34 {
        40
    } else {
        8
    }));
    let engines: &[(&str, Engine)] = if with_portable {
        &[("", Engine::Auto), ("_portable", Engine::Portable)]
    } else {
        &[("", Engine::Auto)]
    };
    for &(suffix, engine) in engines {
        let plan = AttentionPlan {
            engine,
            ..AttentionPlan::default()
        };
        group.bench_function(format!("forward{suffix}"), |bench| {
            bench.iter(|| {
                attention_forward_with(&plan, &d, &q, &k, &v, &mut o, &mut lse).unwrap();
                black_box(&o);
            })
        });
        group.bench_function(format!("fwd_bwd{suffix}"), |bench| {
            bench.iter(|| {
                attention_forward_with(&plan, &d, &q, &k, &v, &mut o, &mut lse).unwrap();
                attention_backward_with(
                    &plan, &d, &q, &k, &v, &o, &lse, &d_o, &mut dq, &mut dk, &mut dv,
                )
                .unwrap();
                black_box((&dq, &dk, &dv));
            })
        });
    }
    group.finish();
}

fn attention_benches(c: &mut Criterion) {
    bench_shape(c, "attention_t4096_c128", 4096, 128, true);
    bench_shape(c, "attention_t9216_c512", 9216, 512, false);
}

criterion_group!(benches, attention_benches);
criterion_main!(benches);
