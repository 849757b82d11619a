//! `medvae-fast data split` end to end: a folder tree of real images (patients as folders)
//! split into a CSV and a data config that `data prepare` reads, no patient in two splits,
//! the same seed giving the same bytes, existing files kept without --force.

mod common;

use common::{medvae, repo, s};
use std::collections::HashMap;

/// Run the binary; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let (code, stdout, stderr) = medvae(args);
    (code == 0, stdout, stderr)
}

#[test]
fn a_tree_is_split_by_patient_into_what_prepare_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    let samples = repo().join("samples/2d");
    // Ten patients with two real slices each, and a hidden folder that is not data.
    for p in 0..10 {
        let dir = imgs.join(format!("pat-{p:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(samples.join("ct_slice_u16.png"), dir.join("ct.png")).unwrap();
        std::fs::copy(samples.join("mr_slice_u8.png"), dir.join("mr.png")).unwrap();
    }
    std::fs::create_dir_all(imgs.join(".trash")).unwrap();
    std::fs::copy(samples.join("mr_slice_u8.png"), imgs.join(".trash/x.png")).unwrap();
    let csv = tmp.path().join("split.csv");
    let config = tmp.path().join("data.yaml");
    // `data split` of the tree with the validation and test shares `(val, test)`.
    let split_with = |(val, test): (&str, &str), extra: &[&str]| {
        let args = [
            &[
                "data",
                "split",
                s(&imgs),
                "--kind",
                "png2d",
                "--csv",
                s(&csv),
                "--config",
                s(&config),
                "--val",
                val,
                "--test",
                test,
            ][..],
            extra,
        ]
        .concat();
        run(&args)
    };
    let split = |extra: &[&str]| split_with(("0.2", "0.2"), extra);
    let (ok, stdout, stderr) = split(&[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("20 files in 10 groups"), "{stdout}");

    // Every patient in one split; 20 % of the files each for val and test.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("image_uuid,split,group"));
    let mut split_of = HashMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert!(f[0].starts_with(&format!("{}/", f[2])), "{line}");
        assert_eq!(
            *split_of.entry(f[2].to_string()).or_insert(f[1].to_string()),
            f[1],
            "{} split apart",
            f[2]
        );
        *count.entry(f[1].to_string()).or_default() += 1;
    }
    assert_eq!(split_of.len(), 10);
    assert_eq!((count["train"], count["val"], count["test"]), (12, 4, 4));

    // prepare reads the config as written (paths relative to it).
    let out = tmp.path().join("prep");
    let (ok, stdout, stderr) = run(&["data", "prepare", "--config", s(&config), "--out", s(&out)]);
    assert!(ok, "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("prepare_report.json")).unwrap()).unwrap();
    assert_eq!(report["written"], 20, "{report}");
    assert_eq!(report["splits"]["test"]["samples"], 4, "{report}");

    // Existing files are kept; --force writes the same bytes for the same seed, another seed
    // another split.
    let (ok, _, stderr) = split(&[]);
    assert!(!ok && stderr.contains("--force"), "{stderr}");
    let (ok, _, stderr) = split(&["--force"]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), text);
    let (ok, _, stderr) = split(&["--force", "--seed", "5"]);
    assert!(ok, "{stderr}");
    assert_ne!(std::fs::read_to_string(&csv).unwrap(), text);

    // Shares that leave nothing for train are refused.
    let (ok, _, stderr) = split_with(("0.6", "0.5"), &["--force"]);
    assert!(
        !ok && stderr.contains("leave some files for train"),
        "{stderr}"
    );
}
