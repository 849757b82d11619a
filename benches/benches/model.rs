//! medvae_4_1_2d (random weights) at 1×1×128×128 on the CPU: encode, and the autoencoder
//! forward + L1 + backward — the workloads of `medvae-fast bench` and of
//! shared/bench/torch_baseline.py (run with RAYON_NUM_THREADS=2 to compare with its
//! `--threads 2`; scripts/bench-model.sh runs both side by side).

use criterion::{criterion_group, criterion_main, Criterion};
use medvae_model::workloads::AeWorkload;
use medvae_model::zoo::zoo_config;
use std::hint::black_box;
use std::time::Duration;

fn bench_model(c: &mut Criterion) {
    let cfg = zoo_config("medvae_4_1_2d").expect("zoo config");
    let mut work = AeWorkload::new(&cfg, 1, 128, 0).expect("workload");
    let mut group = c.benchmark_group("medvae_4_1_2d_128");
    // Whole-model steps take seconds: few samples, long measurement.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("encode", |b| {
        b.iter(|| black_box(work.encode().expect("encode")))
    });
    group.bench_function("ae_fwd_bwd", |b| {
        b.iter(|| black_box(work.fwd_bwd().expect("fwd_bwd")))
    });
    group.finish();
}

criterion_group!(benches, bench_model);
criterion_main!(benches);
