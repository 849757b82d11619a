//! Streaming throughput of the shard loader:
//! * 2D: 384 × 384 × 1 f16 images, whole-sample batches;
//! * 3D: f16 volumes of 160 × 192 × 160 (a typical brain MRI), random 64³ crops.
//!
//! Writes a temporary shard set, runs a few epochs per configuration and prints samples/s.
//! Usage: `cargo run -p medvae-runtime --release --example loader_throughput [workers]`

use medvae_runtime::data::loader::{Loader, LoaderConfig};
use medvae_runtime::data::shard::{ShardDtype, SplitWriter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2);
    let dir = std::env::temp_dir().join(format!("medvae-loader-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);

    // 2D: 512 images of 384² (≈ 150 MB as f16)
    let mut w = SplitWriter::create(&dir, "train", ShardDtype::F16, 64, 1 << 30)?;
    let image: Vec<f32> = (0..384 * 384).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for i in 0..512 {
        w.append(&[384, 384, 1], &image, &format!("img{i}"), 0)?;
    }
    w.finish()?;
    // 3D: 24 volumes of 160 × 192 × 160 (≈ 236 MB as f16)
    let mut w = SplitWriter::create(&dir, "val", ShardDtype::F16, 64, 1 << 30)?;
    let volume: Vec<f32> = (0..160 * 192 * 160)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    for i in 0..24 {
        w.append(&[160, 192, 160, 1], &volume, &format!("vol{i}"), 0)?;
    }
    w.finish()?;

    let run =
        |split: &str, cfg: LoaderConfig, epochs: u64| -> Result<f64, Box<dyn std::error::Error>> {
            let loader = Loader::open(&dir, split, cfg)?;
            // warm-up epoch (page cache, buffers)
            for b in loader.epoch(0) {
                b?;
            }
            let t = Instant::now();
            let mut n = 0usize;
            let mut checksum = 0.0f64;
            for e in 1..=epochs {
                for b in loader.epoch(e) {
                    let b = b?;
                    n += b.len();
                    checksum += b.data()[b.data().len() / 2] as f64;
                }
            }
            let rate = n as f64 / t.elapsed().as_secs_f64();
            println!("  ({n} samples, checksum {checksum:.3})");
            Ok(rate)
        };

    let cfg2d = LoaderConfig {
        workers,
        ..LoaderConfig::images(16, 7)
    };
    let r2 = run("train", cfg2d, 6)?;
    println!("2D 384x384 f16 -> f32, batch 16, {workers} workers: {r2:.0} samples/s");
    let cfg3d = LoaderConfig {
        workers,
        ..LoaderConfig::volumes(2, 7)
    };
    let r3 = run("val", cfg3d, 40)?;
    println!("3D 160x192x160 f16, random 64^3 crops, batch 2, {workers} workers: {r3:.0} crops/s");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
