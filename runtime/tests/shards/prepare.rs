//! `prepare`: MRI + CT volumes with bad files (strict and skip-bad), CSV errors, dataset specs,
//! PNGs through the 2D pipeline.

use crate::{data_dir, scratch};
use half::f16;
use medvae_runtime::data::dataset::{
    prepare, DataKind, DatasetError, DatasetSpec, PrepareError, PrepareOptions, SampleError, Split,
    REPORT_FILE,
};
use medvae_runtime::data::loader::{Loader, LoaderConfig};
use medvae_runtime::data::shard::{index_path, SampleValues, ShardDtype, ShardSet};
use medvae_runtime::data::volume3d::{load_volume, Modality, VolumeError};
use std::path::Path;

fn write_csv(path: &Path, header: &str, rows: &[(&str, &str)]) {
    let mut text = format!("{header}\n");
    for (id, split) in rows {
        text.push_str(&format!("{id},{split},extra\n"));
    }
    std::fs::write(path, text).expect("csv");
}

#[test]
fn prepare_writes_mri_and_ct_volumes_per_split() {
    let scratch_dir = scratch("prep3d");
    let dir = scratch_dir.path();
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
        &[
            ("anatomical_las_i16be.nii", "train"),
            ("stat_las_f32.nii.gz", "val"),
            ("missing.nii", "train"),
        ],
    );
    let mri = DatasetSpec::new(&mri_csv, &data, DataKind::Mri3d);
    // CT: other column names, a suffix, a capitalised split
    let ct_csv = dir.join("ct.csv");
    write_csv(
        &ct_csv,
        "uuid,fold,other",
        &[("ct_small_vol_lps_i16", "Train")],
    );
    let ct = DatasetSpec {
        image_column: "uuid".into(),
        split_column: "fold".into(),
        suffix: ".nii.gz".into(),
        ..DatasetSpec::new(&ct_csv, &data, DataKind::Ct3d)
    };
    let ct_bad_csv = dir.join("ct_bad.csv");
    write_csv(
        &ct_bad_csv,
        "image_uuid,split,other",
        &[("cut.nii", "test")],
    );
    let ct_bad = DatasetSpec::new(&ct_bad_csv, &bad_dir, DataKind::Ct3d);
    let specs = vec![mri, ct, ct_bad];

    // without skip_bad: the first bad file stops the run, naming it; no index is left
    let out = dir.join("out_strict");
    let err = prepare(&specs, &PrepareOptions::new(&out), &mut |_| {}).expect_err("bad input");
    assert!(err.to_string().contains("missing.nii"), "{err}");
    assert!(matches!(
        err,
        PrepareError::BadFile {
            source: SampleError::Volume(VolumeError::Io { .. }),
            ..
        }
    ));
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
    assert_eq!(
        (report.files, report.written, report.skipped.len()),
        (5, 3, 2)
    );
    assert!(report
        .skipped
        .iter()
        .any(|s| s.path.ends_with("missing.nii") && s.reason.contains("cannot read")));
    assert!(report
        .skipped
        .iter()
        .any(|s| s.path.ends_with("cut.nii") && s.reason.contains("truncated")));
    assert_eq!(report.splits[&Split::Train].samples, 2);
    assert_eq!(report.splits[&Split::Val].samples, 1);
    assert_eq!(report.splits[&Split::Test].samples, 0);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.out_dir.join(REPORT_FILE)).expect("report"))
            .expect("json");
    assert_eq!(on_disk["written"], 3);

    let train = ShardSet::open(&opts.out_dir, "train").expect("train");
    let expect = [
        load_volume(&data.join("anatomical_las_i16be.nii"), Modality::Mri).expect("mri"),
        load_volume(&data.join("ct_small_vol_lps_i16.nii.gz"), Modality::Ct).expect("ct"),
    ];
    for (i, vol) in expect.iter().enumerate() {
        let s = train.sample(i).expect("sample");
        assert_eq!(s.shape, &[vol.shape[0], vol.shape[1], vol.shape[2], 1]);
        let SampleValues::F32(v) = s.values else {
            panic!()
        };
        assert_eq!(v, vol.data.as_slice());
    }
    assert_eq!(train.index().samples[1].dataset, 1);
    assert_eq!(
        ShardSet::open(&opts.out_dir, "test").expect("test").len(),
        0
    );

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
    let scratch_dir = scratch("csv");
    let dir = scratch_dir.path();
    let csv = dir.join("a.csv");
    write_csv(&csv, "id,split,other", &[("x", "train")]);
    let spec = DatasetSpec::new(&csv, dir.to_path_buf(), DataKind::Mri3d);
    let err = prepare(
        std::slice::from_ref(&spec),
        &PrepareOptions::new(dir.join("o")),
        &mut |_| {},
    )
    .expect_err("no image_uuid column");
    match &err {
        PrepareError::Dataset(DatasetError::MissingColumn { column, .. }) => {
            assert_eq!(column, "image_uuid")
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("a.csv"), "{err}");

    write_csv(&csv, "image_uuid,split,other", &[("x", "holdout")]);
    let err = prepare(
        std::slice::from_ref(&spec),
        &PrepareOptions::new(dir.join("o")),
        &mut |_| {},
    )
    .expect_err("bad split");
    assert!(
        matches!(
            err,
            PrepareError::Dataset(DatasetError::BadSplit { line: 2, .. })
        ),
        "{err}"
    );

    let png = DatasetSpec::new(&csv, dir.to_path_buf(), DataKind::Png2d);
    assert!(matches!(
        prepare(
            &[spec, png],
            &PrepareOptions::new(dir.join("o")),
            &mut |_| {}
        ),
        Err(PrepareError::MixedKinds { .. })
    ));
    assert!(matches!(
        prepare(&[], &PrepareOptions::new(dir.join("o")), &mut |_| {}),
        Err(PrepareError::NoDatasets)
    ));
}

#[test]
fn dataset_spec_deserialises_with_defaults() {
    let spec: DatasetSpec = serde_json::from_str(
        r#"{"csv": "a.csv", "data_dir": "imgs", "kind": "ct3d", "suffix": ".nii.gz"}"#,
    )
    .expect("spec");
    assert_eq!(spec.image_column, "image_uuid");
    assert_eq!(spec.split_column, "split");
    assert_eq!(spec.kind, DataKind::Ct3d);
    assert!(spec.merge_channels);
    assert_eq!(spec.resize_to, Some([384, 384]));
    let err = serde_json::from_str::<DatasetSpec>(
        r#"{"csv": "a", "data_dir": "b", "kind": "ct3d", "sufix": "x"}"#,
    );
    assert!(err.is_err(), "unknown keys are errors");
    let err =
        serde_json::from_str::<DatasetSpec>(r#"{"csv": "a", "data_dir": "b", "kind": "dicom"}"#);
    assert!(err.is_err());
}

#[test]
fn prepare_png_images_through_the_2d_pipeline() {
    let scratch_dir = scratch("prep2d");
    let dir = scratch_dir.path();
    let data = data_dir().join("2d");
    let csv = dir.join("x.csv");
    write_csv(
        &csv,
        "image_uuid,split,other",
        &[
            ("mr_slice_u8", "train"),
            ("ct_slice_u16", "train"),
            ("mr_slice_rgb", "val"),
        ],
    );
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
