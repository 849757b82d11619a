//! Convolution kernels on the model's dominant shape (3×3, stride 1, padding 1, 128 → 128
//! channels on a 1×128×128 image), the encoder's downsample and a deep, small LPIPS shape
//! (channels-last, f32). Run with `RAYON_NUM_THREADS=2` to compare against
//! `scripts/torch_kernels_bench.py` (see `scripts/bench-kernels.sh`).

use criterion::{criterion_group, criterion_main, Criterion};
use medvae_kernels::cpu::conv::{
    conv_backward_data_with, conv_backward_weight_with, conv_forward_with, ConvGeometry,
    ConvScratch,
};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Forward, backward-data and backward-weight(+bias) of one geometry as bench ids
/// `forward`, `backward_data`, `backward_weight` and `fwd_bwd` (all three).
fn bench_geometry(c: &mut Criterion, group_name: &str, g: ConvGeometry) {
    let x = random(g.input_len(), 1);
    let w: Vec<f32> = random(g.weight_len(), 2).iter().map(|v| v * 0.03).collect();
    let b = random(g.cout, 3);
    let dy = random(g.output_len(), 4);
    let mut y = vec![0f32; g.output_len()];
    let mut dx = vec![0f32; g.input_len()];
    let mut dw = vec![0f32; g.weight_len()];
    let mut db = vec![0f32; g.cout];
    let mut scratch = ConvScratch::new();

    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            conv_forward_with(&mut scratch, &g, &x, &w, Some(&b), &mut y).unwrap();
            black_box(&y);
        })
    });
    group.bench_function("backward_data", |bench| {
        bench.iter(|| {
            conv_backward_data_with(&mut scratch, &g, &dy, &w, &mut dx).unwrap();
            black_box(&dx);
        })
    });
    group.bench_function("backward_weight", |bench| {
        bench.iter(|| {
            conv_backward_weight_with(&mut scratch, &g, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            black_box(&dw);
        })
    });
    group.bench_function("fwd_bwd", |bench| {
        bench.iter(|| {
            conv_forward_with(&mut scratch, &g, &x, &w, Some(&b), &mut y).unwrap();
            conv_backward_data_with(&mut scratch, &g, &dy, &w, &mut dx).unwrap();
            conv_backward_weight_with(&mut scratch, &g, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            black_box((&y, &dx, &dw));
        })
    });
    group.finish();
}

fn conv_benches(c: &mut Criterion) {
    bench_geometry(
        c,
        "conv3x3_128",
        ConvGeometry::conv2d(1, [128, 128], 128, 128, 3, 1, 1),
    );
    // Deep and small, like LPIPS' VGG16 conv4/conv5 at 128² (batch 2): here the weight's
    // Winograd transform costs as much as the GEMMs.
    bench_geometry(
        c,
        "conv3x3_512_16",
        ConvGeometry::conv2d(2, [16, 16], 512, 512, 3, 1, 1),
    );
    // The encoder's downsample: F.pad (0, 1, 0, 1) then 3×3 stride 2.
    let mut down = ConvGeometry::conv2d(1, [128, 128], 128, 128, 3, 2, 0);
    down.pad_hi = [0, 1, 1];
    bench_geometry(c, "conv3x3s2_128", down);
}

criterion_group!(benches, conv_benches);
criterion_main!(benches);
