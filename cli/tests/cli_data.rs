//! `medvae-fast data prepare|inspect` end to end, through the real binary: the sample configs,
//! bad input (corrupt, truncated, missing, constant, NaN, 4D, missing CSV column, unknown config
//! key) strict and with --skip-bad, and the contact sheet.
//!
//! Expected values come from the sample files themselves (how many rows each CSV lists, the
//! volumes' header dimensions) and from what min-max normalisation guarantees (every MRI / PNG
//! sample spans exactly [-1, 1]), not from a previous run of the code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A temporary folder of one test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-cli-data-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

/// Run the binary in `cwd`; returns (success, stdout, stderr).
fn run(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run medvae-fast");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Rows of a sample CSV per split, counted from the file (not from the program).
fn csv_split_counts(csv: &str) -> [usize; 3] {
    let text = std::fs::read_to_string(repo().join("samples").join(csv)).expect("sample csv");
    let mut n = [0; 3];
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        match line.rsplit(',').next().map(str::trim) {
            Some("train") => n[0] += 1,
            Some("val") => n[1] += 1,
            Some("test") => n[2] += 1,
            other => panic!("unexpected split {other:?} in {csv}"),
        }
    }
    n
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("prepare_report.json")).expect("report file");
    serde_json::from_str(&text).expect("report json")
}

fn skipped_paths(report: &serde_json::Value) -> Vec<String> {
    report["skipped"]
        .as_array()
        .expect("skipped list")
        .iter()
        .map(|s| s["path"].as_str().expect("path").to_string())
        .collect()
}

#[test]
fn prepare_and_inspect_the_2d_samples() {
    let tmp = scratch("samples2d");
    let out = tmp.path().join("prepared");
    let config = repo().join("configs/dataloader/samples_2d.yaml");
    // Run from an unrelated folder: the config's paths must not depend on the working directory.
    let (ok, stdout, stderr) = run(
        tmp.path(),
        &[
            "data",
            "prepare",
            "--config",
            s(&config),
            "--out",
            s(&out),
            "--workers",
            "2",
        ],
    );
    assert!(ok, "prepare failed:\n{stdout}\n{stderr}");
    let [train, val, test] = csv_split_counts("xray_2d.csv");
    assert!(
        train >= 8 && val >= 2,
        "sample CSV too small: {train} {val}"
    );
    let total = train + val + test;
    assert!(
        stdout.contains(&format!("prepared {total} of {total} files")),
        "{stdout}"
    );
    assert!(stdout.contains("skipped 0 files"), "{stdout}");
    assert!(stdout.contains("prepare_report.json"), "{stdout}");
    let r = report(&out);
    assert_eq!(r["written"], total);
    assert_eq!(r["splits"]["train"]["samples"], train);
    assert_eq!(r["splits"]["val"]["samples"], val);

    let sheet = tmp.path().join("sheet.png");
    let (ok, stdout, stderr) = run(
        tmp.path(),
        &[
            "data",
            "inspect",
            s(&out),
            "--contact-sheet",
            s(&sheet),
            "--verify",
        ],
    );
    assert!(ok, "inspect failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("train: {train} samples")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("val: {val} samples")), "{stdout}");
    assert!(stdout.contains("f16"), "{stdout}");
    // the reference finetuning shape: 384 x 384, channels merged
    assert!(
        stdout.contains(&format!("{train} × [384, 384, 1]")),
        "{stdout}"
    );
    // every sample is min-max normalised to exactly [-1, 1] (±1 are exact in f16)
    assert!(stdout.contains("min -1.0000  max 1.0000"), "{stdout}");
    assert!(stdout.contains("NaN 0  Inf 0"), "{stdout}");
    assert!(stdout.contains("checksums: ok"), "{stdout}");
    let img = image::open(&sheet)
        .expect("contact sheet is a PNG")
        .to_rgb8();
    assert!(img.width() >= 128 && img.height() >= 128);
    // not blank: the tiles hold both dark and bright pixels
    let (lo, hi) = img
        .pixels()
        .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p[0]), hi.max(p[0])));
    assert!(lo < 10 && hi > 245, "sheet range {lo}..{hi}");

    let (ok, stdout, _) = run(
        tmp.path(),
        &["data", "inspect", s(&out), "--split", "val", "--max", "1"],
    );
    assert!(ok);
    assert!(
        stdout.contains("(first 1 samples)") && !stdout.contains("train:"),
        "{stdout}"
    );
}

#[test]
fn prepare_and_inspect_the_3d_samples() {
    let tmp = scratch("samples3d");
    let out = tmp.path().join("prepared");
    let config = repo().join("configs/dataloader/samples_3d.yaml");
    let (ok, stdout, stderr) = run(
        &repo(),
        &[
            "data",
            "prepare",
            "--config",
            s(&config),
            "--out",
            s(&out),
            "--dtype",
            "f32",
        ],
    );
    assert!(ok, "prepare failed:\n{stdout}\n{stderr}");
    let [mri_train, mri_val, mri_test] = csv_split_counts("mri_3d.csv");
    let [ct_train, ct_val, ct_test] = csv_split_counts("ct_3d.csv");
    let r = report(&out);
    assert_eq!(r["dtype"], "f32");
    assert_eq!(r["splits"]["train"]["samples"], mri_train + ct_train);
    assert_eq!(r["splits"]["val"]["samples"], mri_val + ct_val);
    assert_eq!(r["splits"]["test"]["samples"], mri_test + ct_test);

    let sheet = tmp.path().join("sheet3d.png");
    let (ok, stdout, stderr) = run(
        &repo(),
        &["data", "inspect", s(&out), "--contact-sheet", s(&sheet)],
    );
    assert!(ok, "inspect failed:\n{stdout}\n{stderr}");
    // The MNI152 template is stored RAS already (header dims 197 x 233 x 189): unchanged;
    // the LAS anatomical volume (33 x 41 x 25) keeps its extents when flipped to RAS.
    assert!(stdout.contains("[197, 233, 189, 1]"), "{stdout}");
    assert!(stdout.contains("[33, 41, 25, 1]"), "{stdout}");
    assert!(
        stdout.contains("dataset 0: ") && stdout.contains("dataset 1: "),
        "{stdout}"
    );
    assert!(stdout.contains("f32"), "{stdout}");
    let img = image::open(&sheet).expect("contact sheet").to_rgb8();
    // three views per volume side by side
    assert!(img.width() >= 3 * 128, "{}x{}", img.width(), img.height());
}

/// A folder with one good PNG plus the given bad files, and a CSV listing `ids` as train.
fn bad_png_set(tmp: &tempfile::TempDir, ids: &[&str]) -> PathBuf {
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let good = std::fs::read(repo().join("samples/2d/mr_slice_u8.png")).expect("sample png");
    std::fs::write(data.join("good.png"), &good).expect("write");
    std::fs::write(data.join("cut.png"), &good[..good.len() / 2]).expect("write");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid..mid + 16].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(data.join("corrupt.png"), &flipped).expect("write");
    image::GrayImage::from_pixel(16, 12, image::Luma([77]))
        .save(data.join("flat.png"))
        .expect("write constant png");
    let csv = tmp.path().join("list.csv");
    let mut text = String::from("image_uuid,split\n");
    for id in ids {
        text.push_str(&format!("{id},train\n"));
    }
    std::fs::write(&csv, text).expect("csv");
    csv
}

fn prepare_csv(
    tmp: &tempfile::TempDir,
    csv: &Path,
    out: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let data = tmp.path().join("data");
    let out = tmp.path().join(out);
    let mut args = vec![
        "data",
        "prepare",
        "--csv",
        s(csv),
        "--data-dir",
        s(&data),
        "--out",
        s(&out),
    ];
    args.extend_from_slice(extra);
    run(tmp.path(), &args)
}

#[test]
fn each_bad_png_stops_prepare_naming_the_file() {
    let tmp = scratch("badpng");
    for (bad, problem) in [
        ("cut.png", "cannot decode PNG"),
        ("corrupt.png", "cannot decode PNG"),
        ("missing.png", "cannot read"),
        ("flat.png", "constant image"),
    ] {
        let csv = bad_png_set(&tmp, &["good.png", bad]);
        let (ok, stdout, stderr) = prepare_csv(&tmp, &csv, "out", &[]);
        assert!(!ok, "{bad} was accepted:\n{stdout}");
        assert!(
            stderr.contains(bad) && stderr.contains(problem),
            "{bad}: {stderr}"
        );
        assert!(stderr.contains("--skip-bad"), "{stderr}");
        // no split index is left behind by a failed run
        assert!(!tmp.path().join("out/train.index.json").exists());
    }
}

#[test]
fn skip_bad_counts_bad_files_in_the_report() {
    let tmp = scratch("skipbad");
    let ids = [
        "good.png",
        "cut.png",
        "missing.png",
        "corrupt.png",
        "flat.png",
        "good.png",
    ];
    let csv = bad_png_set(&tmp, &ids);
    let (ok, stdout, stderr) = prepare_csv(&tmp, &csv, "out", &["--skip-bad", "--workers", "1"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("prepared 2 of 6 files"), "{stdout}");
    assert!(stdout.contains("skipped 4 files"), "{stdout}");
    let r = report(&tmp.path().join("out"));
    assert_eq!(r["files"], 6);
    assert_eq!(r["written"], 2);
    let skipped = skipped_paths(&r);
    let names: Vec<&str> = skipped
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["cut.png", "missing.png", "corrupt.png", "flat.png"]);
    let lines: Vec<u64> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 5, 6]);
}

/// A minimal little-endian NIfTI-1 float32 volume with an identity sform.
fn nifti_f32(dims: &[u16], values: &[f32]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[40..42].copy_from_slice(&(dims.len() as i16).to_le_bytes());
    for (i, &d) in dims.iter().enumerate() {
        h[42 + 2 * i..44 + 2 * i].copy_from_slice(&(d as i16).to_le_bytes());
    }
    h[70..72].copy_from_slice(&16i16.to_le_bytes()); // DT_FLOAT32
    h[72..74].copy_from_slice(&32i16.to_le_bytes());
    for i in 0..4 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes());
    h[254..256].copy_from_slice(&1i16.to_le_bytes());
    for (row, off) in [280usize, 296, 312].into_iter().enumerate() {
        h[off + 4 * row..off + 4 * row + 4].copy_from_slice(&1f32.to_le_bytes());
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    h
}

#[test]
fn bad_volumes_stop_prepare_and_skip_bad_counts_them() {
    let tmp = scratch("badnii");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ramp: Vec<f32> = (0..4 * 5 * 6).map(|i| i as f32).collect();
    std::fs::write(data.join("good.nii"), nifti_f32(&[4, 5, 6], &ramp)).unwrap();
    let mut with_nan = ramp.clone();
    with_nan[7] = f32::NAN;
    std::fs::write(data.join("nan.nii"), nifti_f32(&[4, 5, 6], &with_nan)).unwrap();
    let two: Vec<f32> = ramp.iter().chain(&ramp).copied().collect();
    std::fs::write(data.join("four_d.nii"), nifti_f32(&[4, 5, 6, 2], &two)).unwrap();
    std::fs::write(data.join("flat.nii"), nifti_f32(&[4, 5, 6], &[3.0; 120])).unwrap();
    let real = std::fs::read(repo().join("samples/3d/anatomical_las_i16be.nii")).unwrap();
    std::fs::write(data.join("short.nii"), &real[..real.len() - 100]).unwrap();

    let cases = [
        ("nan.nii", "NaN"),
        ("four_d.nii", "unsupported dimensions"),
        ("flat.nii", "constant volume"),
        ("short.nii", "truncated"),
        ("gone.nii", "cannot read"),
    ];
    for (bad, problem) in cases {
        let csv = tmp.path().join("vols.csv");
        std::fs::write(
            &csv,
            format!("image_uuid,split\ngood.nii,train\n{bad},val\n"),
        )
        .unwrap();
        let (ok, _, stderr) = prepare_csv(&tmp, &csv, "out", &["--kind", "mri3d"]);
        assert!(!ok, "{bad} was accepted");
        assert!(
            stderr.contains(bad) && stderr.contains(problem),
            "{bad}: {stderr}"
        );
    }

    let mut text = String::from("image_uuid,split\ngood.nii,train\n");
    for (bad, _) in cases {
        text.push_str(&format!("{bad},val\n"));
    }
    let csv = tmp.path().join("all.csv");
    std::fs::write(&csv, text).unwrap();
    let (ok, stdout, stderr) = prepare_csv(&tmp, &csv, "out", &["--kind", "mri3d", "--skip-bad"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("skipped 5 files"), "{stdout}");
    let r = report(&tmp.path().join("out"));
    assert_eq!(r["written"], 1);
    assert_eq!(skipped_paths(&r).len(), cases.len());
}

#[test]
fn csv_without_the_column_fails_listing_the_columns() {
    let tmp = scratch("badcsv");
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    let csv = tmp.path().join("list.csv");
    std::fs::write(&csv, "file,fold\ngood.png,train\n").unwrap();
    let (ok, _, stderr) = prepare_csv(&tmp, &csv, "out", &[]);
    assert!(!ok);
    assert!(stderr.contains("list.csv"), "{stderr}");
    assert!(
        stderr.contains("\"image_uuid\"") && stderr.contains("columns: file, fold"),
        "{stderr}"
    );
    // naming the columns makes it work (the file itself is then missing: a different error)
    let (ok, _, stderr) = prepare_csv(
        &tmp,
        &csv,
        "out",
        &["--image-column", "file", "--split-column", "fold"],
    );
    assert!(!ok);
    assert!(
        stderr.contains("good.png") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_the_file_and_the_valid_keys() {
    let tmp = scratch("badcfg");
    let cfg = tmp.path().join("cfg.yaml");
    std::fs::write(
        &cfg,
        "datasets:\n  - csv: a.csv\n    data_dir: d\n    kind: png2d\n    sufix: .png\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (ok, _, stderr) = run(
        tmp.path(),
        &["data", "prepare", "--config", s(&cfg), "--out", s(&out)],
    );
    assert!(!ok);
    assert!(
        stderr.contains("cfg.yaml") && stderr.contains("sufix"),
        "{stderr}"
    );
    assert!(
        stderr.contains("suffix") && stderr.contains("data_dir"),
        "{stderr}"
    );

    std::fs::write(&cfg, "datasets: []\nworkers: 4\n").unwrap();
    let (ok, _, stderr) = run(
        tmp.path(),
        &["data", "prepare", "--config", s(&cfg), "--out", s(&out)],
    );
    assert!(!ok);
    assert!(
        stderr.contains("workers") && stderr.contains("root"),
        "{stderr}"
    );

    let missing = tmp.path().join("nope.yaml");
    let (ok, _, stderr) = run(
        tmp.path(),
        &["data", "prepare", "--config", s(&missing), "--out", s(&out)],
    );
    assert!(!ok && stderr.contains("nope.yaml"), "{stderr}");
}

#[test]
fn argument_and_inspect_errors() {
    let tmp = scratch("args");
    // neither --config nor --csv
    let (ok, _, stderr) = run(tmp.path(), &["data", "prepare", "--out", "x"]);
    assert!(!ok, "{stderr}");
    // both
    let (ok, _, _) = run(
        tmp.path(),
        &[
            "data",
            "prepare",
            "--config",
            "a.yaml",
            "--csv",
            "b.csv",
            "--data-dir",
            ".",
            "--out",
            "x",
        ],
    );
    assert!(!ok);
    // inspect of a folder that is not a prepared set
    let (ok, _, stderr) = run(tmp.path(), &["data", "inspect", s(tmp.path())]);
    assert!(
        !ok && stderr.contains("not a prepared dataset folder"),
        "{stderr}"
    );
}
