//! Shards, the split index, `prepare` and the streaming loader.
//!
//! References are independent of the code under test: values written are compared with what
//! comes back (f16 against `half`'s rounding), crops are checked by decoding each voxel's
//! position from a volume whose values encode their own coordinates, prepared samples against
//! `load_volume` / `load_2d` run directly.

use half::f16;
use medvae_runtime::data::dataset::{
    prepare, DataKind, DatasetError, DatasetSpec, PrepareError, PrepareOptions, SampleError, Split, REPORT_FILE,
};
use medvae_runtime::data::loader::{Loader, LoaderConfig};
use medvae_runtime::data::shard::{
    index_path, SampleValues, ShardDtype, ShardError, ShardReader, ShardSet, ShardWriter, SplitWriter,
};
use medvae_runtime::data::volume3d::{load_volume, Modality, VolumeError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medvae-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn data_dir() -> PathBuf {
    std::env::var_os("MEDVAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

fn random_values(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn sample_shapes() -> Vec<Vec<usize>> {
    vec![vec![5, 7, 1], vec![3, 4, 6, 1], vec![17], vec![2, 3, 5, 2], vec![1, 1, 1, 1]]
}

fn write_shard(path: &Path, dtype: ShardDtype, alignment: usize) -> Vec<(Vec<usize>, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut w = ShardWriter::create(path, dtype, alignment).expect("create");
    let mut written = Vec::new();
    for shape in sample_shapes() {
        let data = random_values(&mut rng, shape.iter().product());
        w.append(&shape, &data).expect("append");
        written.push((shape, data));
    }
    let summary = w.finish().expect("finish");
    assert_eq!(summary.samples, written.len());
    assert_eq!(summary.bytes, std::fs::metadata(path).expect("stat").len());
    written
}

#[test]
fn round_trip_f32_is_exact() {
    let dir = scratch("rt32");
    for alignment in [64, 4096] {
        let path = dir.join(format!("a{alignment}.shard"));
        let written = write_shard(&path, ShardDtype::F32, alignment);
        let r = ShardReader::open(&path).expect("open");
        assert_eq!(r.len(), written.len());
        assert_eq!(r.dtype(), ShardDtype::F32);
        r.verify().expect("checksums");
        for (i, (shape, data)) in written.iter().enumerate() {
            let s = r.sample(i).expect("sample");
            assert_eq!(s.shape, shape.as_slice());
            let SampleValues::F32(v) = s.values else { panic!("dtype") };
            assert_eq!(v, data.as_slice());
            assert_eq!(v.as_ptr() as usize % alignment, 0, "sample {i} aligned to {alignment}");
        }
        assert!(matches!(r.sample(99), Err(ShardError::OutOfRange { .. })));
    }
    // no temp files left behind
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn round_trip_f16_rounds_like_half() {
    let dir = scratch("rt16");
    let path = dir.join("h.shard");
    let written = write_shard(&path, ShardDtype::F16, 64);
    let r = ShardReader::open(&path).expect("open");
    for (i, (_, data)) in written.iter().enumerate() {
        let got = r.read_f32(i).expect("read");
        for (g, &v) in got.iter().zip(data) {
            assert_eq!(*g, f16::from_f32(v).to_f32());
            assert!((g - v).abs() <= v.abs() * (1.0 / 2048.0) + 6e-8);
        }
    }
}

#[test]
fn bad_samples_are_refused() {
    let dir = scratch("badsample");
    let mut w = ShardWriter::create(&dir.join("x.shard"), ShardDtype::F16, 64).expect("create");
    assert!(matches!(w.append(&[2, 2], &[0.0; 3]), Err(ShardError::Sample { .. })));
    assert!(matches!(w.append(&[2, 0], &[]), Err(ShardError::Sample { .. })));
    assert!(matches!(w.append(&[1, 1, 1, 1, 1], &[0.0]), Err(ShardError::Sample { .. })));
    assert!(matches!(w.append(&[2], &[0.0, f32::NAN]), Err(ShardError::Sample { .. })));
    assert!(matches!(w.append(&[1], &[1e6]), Err(ShardError::Sample { .. })), "f16 overflow");
    assert!(ShardWriter::create(&dir.join("y.shard"), ShardDtype::F32, 100).is_err());
    drop(w);
    // an unfinished writer leaves nothing behind
    assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 0);
}

#[test]
fn truncated_or_corrupt_shards_are_errors_naming_the_file() {
    let dir = scratch("corrupt");
    let good_path = dir.join("good.shard");
    write_shard(&good_path, ShardDtype::F32, 64);
    let good = std::fs::read(&good_path).expect("read");
    let bad_path = dir.join("bad.shard");

    // every truncation point: an error, never a panic
    for cut in (0..good.len()).step_by(13) {
        std::fs::write(&bad_path, &good[..cut]).expect("write");
        let err = ShardReader::open(&bad_path).expect_err("truncated shard must not open");
        assert!(err.to_string().contains(&bad_path.display().to_string()), "{err}");
        if cut >= 8 {
            assert!(matches!(err, ShardError::Truncated { .. }), "cut {cut}: {err}");
        }
    }
    // every single-byte corruption of header or table is detected on open
    let table_start = good.len() - 5 * 48;
    for pos in (0..64).chain(table_start..good.len()) {
        let mut bytes = good.clone();
        bytes[pos] ^= 0x10;
        std::fs::write(&bad_path, &bytes).expect("write");
        let err = ShardReader::open(&bad_path).expect_err("corrupt shard must not open");
        assert!(err.to_string().contains(&bad_path.display().to_string()), "{err}");
    }
    // corrupt sample data: opens, `verify` finds it
    let mut bytes = good.clone();
    bytes[70] ^= 0x01;
    std::fs::write(&bad_path, &bytes).expect("write");
    let r = ShardReader::open(&bad_path).expect("data corruption is found by verify");
    assert!(matches!(r.verify(), Err(ShardError::Corrupt { .. })));
    // extra bytes
    let mut bytes = good.clone();
    bytes.extend_from_slice(&[0; 9]);
    std::fs::write(&bad_path, &bytes).expect("write");
    assert!(matches!(ShardReader::open(&bad_path), Err(ShardError::Corrupt { .. })));
    // missing
    assert!(matches!(ShardReader::open(&dir.join("none.shard")), Err(ShardError::Io { .. })));
}

#[test]
fn split_writer_rolls_shards_and_the_set_reads_them_in_order() {
    let dir = scratch("split");
    let mut w = SplitWriter::create(&dir, "train", ShardDtype::F32, 64, 1000).expect("create");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut expect = Vec::new();
    for i in 0..20 {
        let shape = vec![1 + i % 4, 3 + i % 5, 2, 1];
        let data = random_values(&mut rng, shape.iter().product());
        assert_eq!(w.append(&shape, &data, &format!("src{i}"), i % 2).expect("append"), i);
        expect.push((shape, data));
    }
    let index = w.finish().expect("finish");
    assert!(index.shards.len() > 1, "expected several shards, got {}", index.shards.len());
    let set = ShardSet::open(&dir, "train").expect("open");
    assert_eq!(set.len(), 20);
    set.verify().expect("verify");
    for (i, (shape, data)) in expect.iter().enumerate() {
        let s = set.sample(i).expect("sample");
        assert_eq!(s.shape, shape.as_slice());
        let SampleValues::F32(v) = s.values else { panic!() };
        assert_eq!(v, data.as_slice());
        assert_eq!(set.index().samples[i].source, format!("src{i}"));
    }
    assert!(set.sample(20).is_err());

    // an index that disagrees with its shards is an error naming the index
    let ipath = index_path(&dir, "train");
    let text = std::fs::read_to_string(&ipath).expect("index");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["samples"][3]["shape"] = serde_json::json!([9, 9, 9, 1]);
    std::fs::write(&ipath, serde_json::to_string(&json).expect("ser")).expect("write");
    let err = ShardSet::open(&dir, "train").expect_err("mismatch");
    assert!(err.to_string().contains("train.index.json"), "{err}");
    assert!(ShardSet::open(&dir, "../x").is_err());
}

// ------------------------------------------------------------------------------ loader

/// Volumes whose voxel values encode (volume id, position), f32 shards.
fn coded_volume_split(dir: &Path, dtype: ShardDtype, shapes: &[[usize; 3]]) {
    let mut w = SplitWriter::create(dir, "train", dtype, 64, 1 << 20).expect("create");
    for (id, s) in shapes.iter().enumerate() {
        let data: Vec<f32> = (0..s[0] * s[1] * s[2]).map(|p| code(dtype, id, p)).collect();
        w.append(&[s[0], s[1], s[2], 1], &data, &format!("vol{id}"), 0).expect("append");
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
    vec![[70, 64, 90], [20, 65, 64], [64, 64, 64], [33, 41, 25], [100, 10, 70], [66, 67, 68], [5, 80, 64]]
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
    let dir = scratch("det");
    coded_volume_split(&dir, ShardDtype::F16, &shapes_3d());
    let cfg = |workers, prefetch| LoaderConfig {
        workers,
        prefetch,
        ..LoaderConfig::volumes(2, 42)
    };
    let reference = collect(&Loader::open(&dir, "train", cfg(1, 1)).expect("loader"), 3);
    assert_eq!(reference.len(), 4);
    for (workers, prefetch) in [(2, 1), (3, 2), (4, 3), (8, 1)] {
        let got = collect(&Loader::open(&dir, "train", cfg(workers, prefetch)).expect("loader"), 3);
        assert!(got == reference, "workers {workers}, prefetch {prefetch} changed the batches");
    }
    let loader = Loader::open(&dir, "train", cfg(2, 2)).expect("loader");
    // each epoch is a permutation; epochs differ
    let mut orders = Vec::new();
    for epoch in 0..4 {
        let mut seen: Vec<usize> = collect(&loader, epoch).into_iter().flat_map(|(_, i, _)| i).collect();
        orders.push(seen.clone());
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }
    assert!(orders.windows(2).any(|w| w[0] != w[1]), "shuffle must change with the epoch");
    // and a different seed gives different crops
    let other = collect(&Loader::open(&dir, "train", LoaderConfig { seed: 43, ..cfg(2, 2) }).expect("loader"), 3);
    assert!(other != reference);
}

#[test]
fn crops_are_windows_of_the_volume_padded_with_minus_one() {
    let dir = scratch("crop");
    let shapes = shapes_3d();
    coded_volume_split(&dir, ShardDtype::F32, &shapes);
    let loader = Loader::open(&dir, "train", LoaderConfig::volumes(3, 7)).expect("loader");
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
                let (p, &v) = crop.iter().enumerate().find(|(_, &v)| v >= 0.0).expect("some data");
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
                        assert_eq!(origin[axis], -(((64 - s[axis]) / 2) as isize), "vol {id} axis {axis}");
                    } else {
                        assert!(origin[axis] >= 0 && origin[axis] as usize + 64 <= s[axis], "vol {id}: {origin:?}");
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
                        code(ShardDtype::F32, id, (g[0] as usize * s[1] + g[1] as usize) * s[2] + g[2] as usize)
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
    let dir = scratch("reuse");
    coded_volume_split(&dir, ShardDtype::F16, &shapes_3d());
    let cfg = LoaderConfig {
        workers: 2,
        prefetch: 2,
        ..LoaderConfig::volumes(1, 1)
    };
    let loader = Loader::open(&dir, "train", cfg).expect("loader");
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
    let dir = scratch("img");
    let mut w = SplitWriter::create(&dir, "val", ShardDtype::F16, 64, 1 << 20).expect("create");
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut images = Vec::new();
    for i in 0..5 {
        let data = random_values(&mut rng, 6 * 5);
        w.append(&[6, 5, 1], &data, &format!("img{i}"), 0).expect("append");
        images.push(data);
    }
    w.finish().expect("finish");
    let cfg = LoaderConfig {
        shuffle: false,
        ..LoaderConfig::images(2, 0)
    };
    let loader = Loader::open(&dir, "val", cfg).expect("loader");
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
    assert!(Loader::open(&dir, "val", LoaderConfig::volumes(2, 0)).is_err());
}

// ------------------------------------------------------------------------------ prepare

fn write_csv(path: &Path, header: &str, rows: &[(&str, &str)]) {
    let mut text = format!("{header}\n");
    for (id, split) in rows {
        text.push_str(&format!("{id},{split},extra\n"));
    }
    std::fs::write(path, text).expect("csv");
}

#[test]
fn prepare_writes_mri_and_ct_volumes_per_split() {
    let dir = scratch("prep3d");
    let data = data_dir().join("3d");
    // a bad file: a truncated copy of a real volume, in its own folder
    let bad_dir = dir.join("bad");
    std::fs::create_dir_all(&bad_dir).expect("mkdir");
    let good = std::fs::read(data.join("anatomical_las_i16be.nii")).expect("read");
    std::fs::write(bad_dir.join("cut.nii"), &good[..good.len() / 2]).expect("write");

    // MRI: default columns, full file names, one missing file
    let mri_csv = dir.join("mri.csv");
    write_csv(
        &mri_csv,
        "image_uuid,split,other",
        &[("anatomical_las_i16be.nii", "train"), ("stat_las_f32.nii.gz", "val"), ("missing.nii", "train")],
    );
    let mri = DatasetSpec::new(&mri_csv, &data, DataKind::Mri3d);
    // CT: other column names, a suffix, a capitalised split
    let ct_csv = dir.join("ct.csv");
    write_csv(&ct_csv, "uuid,fold,other", &[("ct_small_vol_lps_i16", "Train")]);
    let ct = DatasetSpec {
        image_column: "uuid".into(),
        split_column: "fold".into(),
        suffix: ".nii.gz".into(),
        ..DatasetSpec::new(&ct_csv, &data, DataKind::Ct3d)
    };
    let ct_bad_csv = dir.join("ct_bad.csv");
    write_csv(&ct_bad_csv, "image_uuid,split,other", &[("cut.nii", "test")]);
    let ct_bad = DatasetSpec::new(&ct_bad_csv, &bad_dir, DataKind::Ct3d);
    let specs = vec![mri, ct, ct_bad];

    // without skip_bad: the first bad file stops the run, naming it; no index is left
    let out = dir.join("out_strict");
    let err = prepare(&specs, &PrepareOptions::new(&out), &mut |_| {}).expect_err("bad input");
    assert!(err.to_string().contains("missing.nii"), "{err}");
    assert!(matches!(err, PrepareError::BadFile { source: SampleError::Volume(VolumeError::Io { .. }), .. }));
    for split in Split::ALL {
        assert!(!index_path(&out, split.name()).exists());
    }

    // with skip_bad: counted skips, shards for the rest
    let mut seen = 0;
    let opts = PrepareOptions {
        skip_bad: true,
        dtype: ShardDtype::F32,
        workers: 2,
        ..PrepareOptions::new(dir.join("out"))
    };
    let report = prepare(&specs, &opts, &mut |p| {
        seen += 1;
        assert_eq!(p.done, seen);
        assert_eq!(p.total, 5);
    })
    .expect("prepare");
    assert_eq!(seen, 5);
    assert_eq!((report.files, report.written, report.skipped.len()), (5, 3, 2));
    assert!(report.skipped.iter().any(|s| s.path.ends_with("missing.nii") && s.reason.contains("cannot read")));
    assert!(report.skipped.iter().any(|s| s.path.ends_with("cut.nii") && s.reason.contains("truncated")));
    assert_eq!(report.splits[&Split::Train].samples, 2);
    assert_eq!(report.splits[&Split::Val].samples, 1);
    assert_eq!(report.splits[&Split::Test].samples, 0);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.out_dir.join(REPORT_FILE)).expect("report")).expect("json");
    assert_eq!(on_disk["written"], 3);

    let train = ShardSet::open(&opts.out_dir, "train").expect("train");
    let expect = [
        load_volume(&data.join("anatomical_las_i16be.nii"), Modality::Mri).expect("mri"),
        load_volume(&data.join("ct_small_vol_lps_i16.nii.gz"), Modality::Ct).expect("ct"),
    ];
    for (i, vol) in expect.iter().enumerate() {
        let s = train.sample(i).expect("sample");
        assert_eq!(s.shape, &[vol.shape[0], vol.shape[1], vol.shape[2], 1]);
        let SampleValues::F32(v) = s.values else { panic!() };
        assert_eq!(v, vol.data.as_slice());
    }
    assert_eq!(train.index().samples[1].dataset, 1);
    assert_eq!(ShardSet::open(&opts.out_dir, "test").expect("test").len(), 0);

    // same bytes with one worker
    let opts1 = PrepareOptions {
        workers: 1,
        out_dir: dir.join("out1"),
        ..opts.clone()
    };
    prepare(&specs, &opts1, &mut |_| {}).expect("prepare");
    assert_eq!(
        std::fs::read(opts.out_dir.join("train-00000.shard")).expect("a"),
        std::fs::read(opts1.out_dir.join("train-00000.shard")).expect("b")
    );
}

#[test]
fn prepare_rejects_bad_csvs_and_mixed_kinds() {
    let dir = scratch("csv");
    let csv = dir.join("a.csv");
    write_csv(&csv, "id,split,other", &[("x", "train")]);
    let spec = DatasetSpec::new(&csv, &dir, DataKind::Mri3d);
    let err = prepare(std::slice::from_ref(&spec), &PrepareOptions::new(dir.join("o")), &mut |_| {})
        .expect_err("no image_uuid column");
    match &err {
        PrepareError::Dataset(DatasetError::MissingColumn { column, .. }) => assert_eq!(column, "image_uuid"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("a.csv"), "{err}");

    write_csv(&csv, "image_uuid,split,other", &[("x", "holdout")]);
    let err = prepare(std::slice::from_ref(&spec), &PrepareOptions::new(dir.join("o")), &mut |_| {})
        .expect_err("bad split");
    assert!(matches!(err, PrepareError::Dataset(DatasetError::BadSplit { line: 2, .. })), "{err}");

    let png = DatasetSpec::new(&csv, &dir, DataKind::Png2d);
    assert!(matches!(
        prepare(&[spec, png], &PrepareOptions::new(dir.join("o")), &mut |_| {}),
        Err(PrepareError::MixedKinds { .. })
    ));
    assert!(matches!(prepare(&[], &PrepareOptions::new(dir.join("o")), &mut |_| {}), Err(PrepareError::NoDatasets)));
}

#[test]
fn dataset_spec_deserialises_with_defaults() {
    let spec: DatasetSpec =
        serde_json::from_str(r#"{"csv": "a.csv", "data_dir": "imgs", "kind": "ct3d", "suffix": ".nii.gz"}"#)
            .expect("spec");
    assert_eq!(spec.image_column, "image_uuid");
    assert_eq!(spec.split_column, "split");
    assert_eq!(spec.kind, DataKind::Ct3d);
    assert!(spec.merge_channels);
    assert_eq!(spec.resize_to, Some([384, 384]));
    let err = serde_json::from_str::<DatasetSpec>(r#"{"csv": "a", "data_dir": "b", "kind": "ct3d", "sufix": "x"}"#);
    assert!(err.is_err(), "unknown keys are errors");
    let err = serde_json::from_str::<DatasetSpec>(r#"{"csv": "a", "data_dir": "b", "kind": "dicom"}"#);
    assert!(err.is_err());
}

#[test]
fn prepare_png_images_through_the_2d_pipeline() {
    let dir = scratch("prep2d");
    let data = data_dir().join("2d");
    let csv = dir.join("x.csv");
    write_csv(&csv, "image_uuid,split,other", &[("mr_slice_u8", "train"), ("ct_slice_u16", "train"), ("mr_slice_rgb", "val")]);
    let spec = DatasetSpec {
        suffix: ".png".into(),
        ..DatasetSpec::new(&csv, &data, DataKind::Png2d)
    };
    let opts = PrepareOptions {
        dtype: ShardDtype::F16,
        ..PrepareOptions::new(dir.join("out"))
    };
    let report = prepare(std::slice::from_ref(&spec), &opts, &mut |_| {}).expect("prepare");
    assert_eq!(report.written, 3);
    let train = ShardSet::open(&opts.out_dir, "train").expect("open");
    let p = medvae_runtime::data::image2d::Preprocess2d::finetune(true);
    for (i, name) in ["mr_slice_u8.png", "ct_slice_u16.png"].iter().enumerate() {
        let img = medvae_runtime::data::image2d::load_2d(&data.join(name), &p).expect("load_2d");
        let s = train.sample(i).expect("sample");
        assert_eq!(s.shape, &[384, 384, 1]);
        let got = train.readers()[0].read_f32(i).expect("read");
        for (g, &v) in got.iter().zip(&img.data) {
            assert_eq!(*g, f16::from_f32(v).to_f32());
        }
    }
    let loader = Loader::open(&opts.out_dir, "train", LoaderConfig::images(2, 0)).expect("loader");
    let b = loader.epoch(0).next().expect("a batch").expect("ok");
    assert_eq!(b.shape(), &[2, 384, 384, 1]);
}
