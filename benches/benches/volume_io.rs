//! The file side of 3D inference: reading and preprocessing a CT volume as `infer` does
//! (gunzip, RAS reorientation, CT window, foreground crop) and writing a float32 `.nii.gz` the
//! size of its reconstruction (`infer --decode`). On a GPU these, not the model, bound how fast
//! an archive is encoded.
//!
//! `MEDVAE_BENCH_VOLUME=scan.nii.gz` times that file (scripts/bench_volume_io.sh writes a
//! 512×512×300 int16 CT and times the reference's loader and nibabel on it in the same run);
//! without it a 320×320×160 CT-like float32 volume in LPS order is made here.

use criterion::{criterion_group, criterion_main, Criterion};
use medvae_runtime::data::volume3d::{
    load_inference, write_nifti, write_nifti_with_affine, Modality,
};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::path::{Path, PathBuf};

/// An ellipse of soft tissue with a bone ring in air, plus noise, in Hounsfield units.
fn ct_like(shape: [usize; 3]) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let [nx, ny, nz] = shape;
    let mut data = vec![0.0f32; nx * ny * nz];
    for x in 0..nx {
        for y in 0..ny {
            let (u, v) = (
                2.0 * x as f32 / nx as f32 - 1.0,
                2.0 * y as f32 / ny as f32 - 1.0,
            );
            let r = (u / 0.8).powi(2) + (v / 0.6).powi(2);
            for z in 0..nz {
                let hu = if r < 0.7 {
                    40.0 + 30.0 * (6.0 * u + z as f32 / 20.0).sin() * (5.0 * v).cos()
                } else if r < 0.78 {
                    700.0
                } else {
                    -1000.0
                };
                data[(x * ny + y) * nz + z] = hu + rng.gen_range(-20.0f32..20.0);
            }
        }
    }
    data
}

fn input_volume(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("MEDVAE_BENCH_VOLUME") {
        return PathBuf::from(p);
    }
    let shape = [320, 320, 160];
    let path = dir.join("ct_like_lps.nii.gz");
    // LPS, 0.7 × 0.7 × 1.25 mm: the reorientation flips two axes, as for most DICOM-derived CTs.
    let affine = [
        [-0.7, 0.0, 0.0, 0.0],
        [0.0, -0.7, 0.0, 0.0],
        [0.0, 0.0, 1.25, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    write_nifti_with_affine(&path, &shape, &ct_like(shape), "bench", &affine)
        .expect("write the bench volume");
    path
}

fn bench_volume_io(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("medvae-bench-volume-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let input = input_volume(&dir);
    let (volume, _) = load_inference(&input, Modality::Ct).expect("read the bench volume");
    eprintln!(
        "volume_io: {} -> preprocessed {:?}",
        input.display(),
        volume.shape
    );

    let mut group = c.benchmark_group("volume_io");
    group.sample_size(10);
    group.bench_function("load_inference_ct", |b| {
        b.iter(|| black_box(load_inference(black_box(&input), Modality::Ct).expect("read")))
    });
    for (name, file) in [("write_nii_gz", "out.nii.gz"), ("write_nii", "out.nii")] {
        let out = dir.join(file);
        group.bench_function(name, |b| {
            b.iter(|| {
                write_nifti(&out, &volume.shape, black_box(&volume.data), "bench").expect("write")
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_volume_io);
criterion_main!(benches);
