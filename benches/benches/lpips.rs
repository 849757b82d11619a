//! LPIPS (full-width VGG16, random weights) forward + backward to the input at 2×1×128×128 on
//! the CPU: the perceptual term of the stage-1 loss, where only the reconstruction needs a
//! gradient (the target branch runs features-only). Run with RAYON_NUM_THREADS=2 to compare
//! with scripts/torch_lpips_bench.py (`--threads 2`), which times the same in PyTorch.

use criterion::{criterion_group, criterion_main, Criterion};
use medvae_model::layers::Init;
use medvae_model::losses::{Lpips, Need, VGG16_WIDTHS};
use medvae_runtime::ops::elementwise::standard_normal;
use medvae_runtime::Tensor;
use std::hint::black_box;
use std::time::Duration;

fn bench_lpips(c: &mut Criterion) {
    let lp = Lpips::new(VGG16_WIDTHS, &mut Init::random(0)).expect("lpips");
    let x = standard_normal(&[2, 128, 128, 1], 1).expect("x");
    let y = standard_normal(&[2, 128, 128, 1], 2).expect("y");
    let dp = [1.0f32, 1.0];
    let mut group = c.benchmark_group("lpips_vgg16_2x1x128x128");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("forward", |b| {
        b.iter(|| black_box(lp.distance(&x, &y, Need::NONE).expect("forward").0))
    });
    group.bench_function("fwd_bwd_input", |b| {
        b.iter(|| {
            let (p, state) = lp.distance(&x, &y, Need::INPUT).expect("forward");
            let g = lp
                .distance_backward(state.expect("state"), &dp)
                .expect("backward");
            black_box((p, g.input.unwrap_or_else(|| Tensor::zeros(&[1]))))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_lpips);
criterion_main!(benches);
