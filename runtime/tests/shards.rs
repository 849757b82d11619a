//! Shards, the split index, `prepare` and the streaming loader (the last two in `shards/`).
//!
//! References are independent of the code under test: values written are compared with what
//! comes back (f16 against `half`'s rounding), crops are checked by decoding each voxel's
//! position from a volume whose values encode their own coordinates, prepared samples against
//! `load_volume` / `load_2d` run directly.

mod shards {
    pub mod loader;
    pub mod prepare;
}

use half::f16;
use medvae_runtime::data::shard::{
    index_path, SampleValues, ShardDtype, ShardError, ShardReader, ShardSet, ShardWriter,
    SplitWriter,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// A temporary folder of one test, removed when dropped.
pub(crate) fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-shards-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

pub(crate) fn data_dir() -> PathBuf {
    std::env::var_os("MEDVAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

pub(crate) fn random_values(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn sample_shapes() -> Vec<Vec<usize>> {
    vec![
        vec![5, 7, 1],
        vec![3, 4, 6, 1],
        vec![17],
        vec![2, 3, 5, 2],
        vec![1, 1, 1, 1],
    ]
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
    let scratch_dir = scratch("rt32");
    let dir = scratch_dir.path();
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
            let SampleValues::F32(v) = s.values else {
                panic!("dtype")
            };
            assert_eq!(v, data.as_slice());
            assert_eq!(
                v.as_ptr() as usize % alignment,
                0,
                "sample {i} aligned to {alignment}"
            );
        }
        assert!(matches!(r.sample(99), Err(ShardError::OutOfRange { .. })));
    }
    // no temp files left behind
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn round_trip_f16_rounds_like_half() {
    let scratch_dir = scratch("rt16");
    let dir = scratch_dir.path();
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
    let scratch_dir = scratch("badsample");
    let dir = scratch_dir.path();
    let mut w = ShardWriter::create(&dir.join("x.shard"), ShardDtype::F16, 64).expect("create");
    assert!(matches!(
        w.append(&[2, 2], &[0.0; 3]),
        Err(ShardError::Sample { .. })
    ));
    assert!(matches!(
        w.append(&[2, 0], &[]),
        Err(ShardError::Sample { .. })
    ));
    assert!(matches!(
        w.append(&[1, 1, 1, 1, 1], &[0.0]),
        Err(ShardError::Sample { .. })
    ));
    assert!(matches!(
        w.append(&[2], &[0.0, f32::NAN]),
        Err(ShardError::Sample { .. })
    ));
    assert!(
        matches!(w.append(&[1], &[1e6]), Err(ShardError::Sample { .. })),
        "f16 overflow"
    );
    assert!(ShardWriter::create(&dir.join("y.shard"), ShardDtype::F32, 100).is_err());
    drop(w);
    // an unfinished writer leaves nothing behind
    assert_eq!(std::fs::read_dir(dir).expect("ls").count(), 0);
}

#[test]
fn truncated_or_corrupt_shards_are_errors_naming_the_file() {
    let scratch_dir = scratch("corrupt");
    let dir = scratch_dir.path();
    let good_path = dir.join("good.shard");
    write_shard(&good_path, ShardDtype::F32, 64);
    let good = std::fs::read(&good_path).expect("read");
    let bad_path = dir.join("bad.shard");

    // every truncation point: an error, never a panic
    for cut in (0..good.len()).step_by(13) {
        std::fs::write(&bad_path, &good[..cut]).expect("write");
        let err = ShardReader::open(&bad_path).expect_err("truncated shard must not open");
        assert!(
            err.to_string().contains(&bad_path.display().to_string()),
            "{err}"
        );
        if cut >= 8 {
            assert!(
                matches!(err, ShardError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }
    // every single-byte corruption of header or table is detected on open
    let table_start = good.len() - 5 * 48;
    for pos in (0..64).chain(table_start..good.len()) {
        let mut bytes = good.clone();
        bytes[pos] ^= 0x10;
        std::fs::write(&bad_path, &bytes).expect("write");
        let err = ShardReader::open(&bad_path).expect_err("corrupt shard must not open");
        assert!(
            err.to_string().contains(&bad_path.display().to_string()),
            "{err}"
        );
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
    assert!(matches!(
        ShardReader::open(&bad_path),
        Err(ShardError::Corrupt { .. })
    ));
    // missing
    assert!(matches!(
        ShardReader::open(&dir.join("none.shard")),
        Err(ShardError::Io { .. })
    ));
}

#[test]
fn split_writer_rolls_shards_and_the_set_reads_them_in_order() {
    let scratch_dir = scratch("split");
    let dir = scratch_dir.path();
    let mut w = SplitWriter::create(dir, "train", ShardDtype::F32, 64, 1000).expect("create");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut expect = Vec::new();
    for i in 0..20 {
        let shape = vec![1 + i % 4, 3 + i % 5, 2, 1];
        let data = random_values(&mut rng, shape.iter().product());
        assert_eq!(
            w.append(&shape, &data, &format!("src{i}"), i % 2)
                .expect("append"),
            i
        );
        expect.push((shape, data));
    }
    let index = w.finish().expect("finish");
    assert!(
        index.shards.len() > 1,
        "expected several shards, got {}",
        index.shards.len()
    );
    let set = ShardSet::open(dir, "train").expect("open");
    assert_eq!(set.len(), 20);
    set.verify().expect("verify");
    for (i, (shape, data)) in expect.iter().enumerate() {
        let s = set.sample(i).expect("sample");
        assert_eq!(s.shape, shape.as_slice());
        let SampleValues::F32(v) = s.values else {
            panic!()
        };
        assert_eq!(v, data.as_slice());
        assert_eq!(set.index().samples[i].source, format!("src{i}"));
    }
    assert!(set.sample(20).is_err());

    // an index that disagrees with its shards is an error naming the index
    let ipath = index_path(dir, "train");
    let text = std::fs::read_to_string(&ipath).expect("index");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["samples"][3]["shape"] = serde_json::json!([9, 9, 9, 1]);
    std::fs::write(&ipath, serde_json::to_string(&json).expect("ser")).expect("write");
    let err = ShardSet::open(dir, "train").expect_err("mismatch");
    assert!(err.to_string().contains("train.index.json"), "{err}");
    assert!(ShardSet::open(dir, "../x").is_err());
}
