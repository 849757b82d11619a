//! The streaming loader: determinism across worker counts, crop windows and padding, buffer
//! reuse, whole-sample 2D batches.

use crate::{random_values, scratch};
use half::f16;
use medvae_runtime::data::loader::{Loader, LoaderConfig};
use medvae_runtime::data::shard::{ShardDtype, SplitWriter};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Volumes whose voxel values encode (volume id, position), f32 shards.
fn coded_volume_split(dir: &Path, dtype: ShardDtype, shapes: &[[usize; 3]]) {
    let mut w = SplitWriter::create(dir, "train", dtype, 64, 1 << 20).expect("create");
    for (id, s) in shapes.iter().enumerate() {
        let data: Vec<f32> = (0..s[0] * s[1] * s[2])
            .map(|p| code(dtype, id, p))
            .collect();
        w.append(&[s[0], s[1], s[2], 1], &data, &format!("vol{id}"), 0)
            .expect("append");
    }
    w.finish().expect("finish");
}

fn code(dtype: ShardDtype, id: usize, pos: usize) -> f32 {
    match dtype {
        // exact integers in f32
        ShardDtype::F32 => (id * 1_000_000 + pos) as f32,
        // f16 holds integers up to 2048 exactly: encode only the volume id
        ShardDtype::F16 => id as f32,
    }
}

fn shapes_3d() -> Vec<[usize; 3]> {
    vec![
        [70, 64, 90],
        [20, 65, 64],
        [64, 64, 64],
        [33, 41, 25],
        [100, 10, 70],
        [66, 67, 68],
        [5, 80, 64],
    ]
}

fn collect(loader: &Loader, epoch: u64) -> Vec<(Vec<usize>, Vec<usize>, Vec<f32>)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.expect("batch");
            (b.shape().to_vec(), b.indices().to_vec(), b.data().to_vec())
        })
        .collect()
}

#[test]
fn loader_is_deterministic_across_worker_counts() {
    let scratch_dir = scratch("det");
    let dir = scratch_dir.path();
    coded_volume_split(dir, ShardDtype::F16, &shapes_3d());
    let cfg = |workers, prefetch| LoaderConfig {
        workers,
        prefetch,
        ..LoaderConfig::volumes(2, 42)
    };
    let reference = collect(&Loader::open(dir, "train", cfg(1, 1)).expect("loader"), 3);
    assert_eq!(reference.len(), 4);
    for (workers, prefetch) in [(2, 1), (3, 2), (4, 3), (8, 1)] {
        let got = collect(
            &Loader::open(dir, "train", cfg(workers, prefetch)).expect("loader"),
            3,
        );
        assert!(
            got == reference,
            "workers {workers}, prefetch {prefetch} changed the batches"
        );
    }
    let loader = Loader::open(dir, "train", cfg(2, 2)).expect("loader");
    // each epoch is a permutation; epochs differ
    let mut orders = Vec::new();
    for epoch in 0..4 {
        let mut seen: Vec<usize> = collect(&loader, epoch)
            .into_iter()
            .flat_map(|(_, i, _)| i)
            .collect();
        orders.push(seen.clone());
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }
    assert!(
        orders.windows(2).any(|w| w[0] != w[1]),
        "shuffle must change with the epoch"
    );
    // and a different seed gives different crops
    let other = collect(
        &Loader::open(
            dir,
            "train",
            LoaderConfig {
                seed: 43,
                ..cfg(2, 2)
            },
        )
        .expect("loader"),
        3,
    );
    assert!(other != reference);
}

#[test]
fn crops_are_windows_of_the_volume_padded_with_minus_one() {
    let scratch_dir = scratch("crop");
    let dir = scratch_dir.path();
    let shapes = shapes_3d();
    coded_volume_split(dir, ShardDtype::F32, &shapes);
    let loader = Loader::open(dir, "train", LoaderConfig::volumes(3, 7)).expect("loader");
    let mut origins_seen = vec![Vec::new(); shapes.len()];
    for epoch in 0..6 {
        for batch in loader.epoch(epoch) {
            let batch = batch.expect("batch");
            let n = batch.len();
            assert_eq!(batch.shape(), &[n, 64, 64, 64, 1]);
            for (slot, &id) in batch.indices().iter().enumerate() {
                let crop = &batch.data()[slot * 64 * 64 * 64..(slot + 1) * 64 * 64 * 64];
                let s = shapes[id];
                // recover the window origin from any non-pad voxel, then check every voxel
                let (p, &v) = crop
                    .iter()
                    .enumerate()
                    .find(|(_, &v)| v >= 0.0)
                    .expect("some data");
                let pos = v as usize - id * 1_000_000;
                let (a, b, c) = (pos / (s[1] * s[2]), (pos / s[2]) % s[1], pos % s[2]);
                let origin = [
                    a as isize - (p / 4096) as isize,
                    b as isize - ((p / 64) % 64) as isize,
                    c as isize - (p % 64) as isize,
                ];
                for axis in 0..3 {
                    if s[axis] < 64 {
                        // symmetric pad: the smaller half before
                        assert_eq!(
                            origin[axis],
                            -(((64 - s[axis]) / 2) as isize),
                            "vol {id} axis {axis}"
                        );
                    } else {
                        assert!(
                            origin[axis] >= 0 && origin[axis] as usize + 64 <= s[axis],
                            "vol {id}: {origin:?}"
                        );
                    }
                }
                for (q, &got) in crop.iter().enumerate() {
                    let g = [
                        origin[0] + (q / 4096) as isize,
                        origin[1] + ((q / 64) % 64) as isize,
                        origin[2] + (q % 64) as isize,
                    ];
                    let inside = (0..3).all(|k| g[k] >= 0 && (g[k] as usize) < s[k]);
                    let want = if inside {
                        code(
                            ShardDtype::F32,
                            id,
                            (g[0] as usize * s[1] + g[1] as usize) * s[2] + g[2] as usize,
                        )
                    } else {
                        -1.0
                    };
                    assert_eq!(got, want, "vol {id} voxel {q}");
                }
                origins_seen[id].push(origin);
            }
        }
    }
    // volumes larger than the crop get different windows across epochs
    assert!(origins_seen[0].windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn steady_state_reuses_batch_buffers() {
    let scratch_dir = scratch("reuse");
    let dir = scratch_dir.path();
    coded_volume_split(dir, ShardDtype::F16, &shapes_3d());
    let cfg = LoaderConfig {
        workers: 2,
        prefetch: 2,
        ..LoaderConfig::volumes(1, 1)
    };
    let loader = Loader::open(dir, "train", cfg).expect("loader");
    for epoch in 0..8 {
        for b in loader.epoch(epoch) {
            drop(b.expect("batch"));
        }
    }
    // at most: each worker's queue + the one it fills, plus the one the consumer holds
    let bound = 2 * (2 + 1) + 1;
    assert!(
        loader.buffers_allocated() <= bound,
        "{} buffer sets for 56 batches",
        loader.buffers_allocated()
    );
    // stopping early joins the workers and does not hang
    let mut epoch = loader.epoch(9);
    assert!(epoch.next().is_some());
    drop(epoch);
}

#[test]
fn whole_sample_loader_converts_f16_images() {
    let scratch_dir = scratch("img");
    let dir = scratch_dir.path();
    let mut w = SplitWriter::create(dir, "val", ShardDtype::F16, 64, 1 << 20).expect("create");
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut images = Vec::new();
    for i in 0..5 {
        let data = random_values(&mut rng, 6 * 5);
        w.append(&[6, 5, 1], &data, &format!("img{i}"), 0)
            .expect("append");
        images.push(data);
    }
    w.finish().expect("finish");
    let cfg = LoaderConfig {
        shuffle: false,
        ..LoaderConfig::images(2, 0)
    };
    let loader = Loader::open(dir, "val", cfg).expect("loader");
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].0, vec![1, 6, 5, 1]);
    for (shape, indices, data) in batches {
        for (slot, &i) in indices.iter().enumerate() {
            for (g, &v) in data[slot * 30..(slot + 1) * 30].iter().zip(&images[i]) {
                assert_eq!(*g, f16::from_f32(v).to_f32());
            }
        }
        assert_eq!(shape[1..], [6, 5, 1]);
    }
    // 3D crops of 2D samples are refused
    assert!(Loader::open(dir, "val", LoaderConfig::volumes(2, 0)).is_err());
}

/// `pad_last` completes the last batch from the start of the epoch's order (every batch
/// full, every sample seen); `drop_last` wins over it.
#[test]
fn pad_last_completes_the_last_batch_from_the_start() {
    let scratch_dir = scratch("pad");
    let dir = scratch_dir.path();
    coded_volume_split(dir, ShardDtype::F16, &shapes_3d());
    let cfg = |batch_size, pad_last, drop_last| LoaderConfig {
        pad_last,
        drop_last,
        ..LoaderConfig::volumes(batch_size, 42)
    };
    for batch_size in [3, 4, 7, 10] {
        let loader = Loader::open(dir, "train", cfg(batch_size, true, false)).expect("loader");
        assert_eq!(loader.batches_per_epoch(), 7usize.div_ceil(batch_size));
        let order = loader.order(2);
        let batches = collect(&loader, 2);
        let indices: Vec<usize> = batches.iter().flat_map(|(_, i, _)| i.clone()).collect();
        let want: Vec<usize> = (0..batches.len() * batch_size)
            .map(|i| order[i % 7])
            .collect();
        assert_eq!(indices, want, "batch {batch_size}");
        for (shape, _, data) in &batches {
            assert_eq!(shape[0], batch_size, "every batch is full");
            assert_eq!(data.len(), batch_size * 64 * 64 * 64);
        }
    }
    let both = Loader::open(dir, "train", cfg(3, true, true)).expect("loader");
    assert_eq!(both.batches_per_epoch(), 2);
    assert_eq!(collect(&both, 0).len(), 2);
}

/// A volume repeated to complete the last batch is cropped anew (the reference's random crop
/// draws again for a repeat), while the epoch's first pass keeps the crops of a run without
/// padding.
#[test]
fn a_padded_repeat_gets_a_crop_of_its_own() {
    let scratch_dir = scratch("pad-crop");
    let dir = scratch_dir.path();
    // f32 codes tell every voxel apart, so two crops are equal only if their windows are.
    coded_volume_split(dir, ShardDtype::F32, &shapes_3d());
    let cfg = |pad_last| LoaderConfig {
        pad_last,
        crop: Some([8, 8, 8]),
        ..LoaderConfig::volumes(4, 42)
    };
    let padded = collect(&Loader::open(dir, "train", cfg(true)).expect("loader"), 1);
    let plain = collect(&Loader::open(dir, "train", cfg(false)).expect("loader"), 1);
    let item = 8 * 8 * 8;
    let flat = |b: &[(Vec<usize>, Vec<usize>, Vec<f32>)]| -> (Vec<usize>, Vec<f32>) {
        (
            b.iter().flat_map(|(_, i, _)| i.clone()).collect(),
            b.iter().flat_map(|(_, _, d)| d.clone()).collect(),
        )
    };
    let (padded_idx, padded_data) = flat(&padded);
    let (plain_idx, plain_data) = flat(&plain);
    assert_eq!((padded_idx.len(), plain_idx.len()), (8, 7));
    assert_eq!(&padded_idx[..7], &plain_idx[..]);
    assert_eq!(
        &padded_data[..7 * item],
        &plain_data[..],
        "first pass unchanged"
    );
    // The repeat (slot 7) is the epoch's first volume, in another window.
    assert_eq!(padded_idx[7], padded_idx[0]);
    assert_ne!(
        &padded_data[7 * item..],
        &padded_data[..item],
        "a repeat gets its own crop"
    );
}
