//! `medvae-fast eval` end to end, through the real binary, with tiny random models: its
//! per-sample metrics are those of the reconstructions `infer --decode` writes against the
//! preprocessed inputs, a prepared split is read as finetuning reads it, and mismatches
//! (a 3D model without a modality, 2D shards for a 3D model) are clear errors.

mod common;

use common::{medvae, s, sample_folder, scratch, tiny_weights};
use medvae_model::autoencoder::AutoencoderKL;
use medvae_model::layers::Init;
use medvae_model::quality::measure;
use medvae_runtime::data::image2d::{load_2d, Preprocess2d};
use medvae_runtime::data::volume3d::read_nifti_array;
use std::collections::HashMap;
use std::path::Path;

const SLICES: [&str; 3] = ["ct_slice_u16.png", "mr_slice_u8.png", "mr_slice_rgb.png"];

/// `name -> [l1, mse, psnr_db, ssim]` from eval's CSV (checking its header and row count).
fn read_csv(path: &Path, rows: usize) -> HashMap<String, [f64; 4]> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("name,shape,l1,mse,psnr_db,ssim,ms_ssim,lpips")
    );
    let table: HashMap<String, [f64; 4]> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 8, "{l}");
            let v = |i: usize| f[i].parse::<f64>().unwrap();
            (f[0].to_string(), [v(2), v(3), v(4), v(5)])
        })
        .collect();
    assert_eq!(table.len(), rows, "{text}");
    table
}

/// `eval -i INPUT --weights WEIGHTS EXTRA..`: (exit code, stdout, stderr).
fn eval(input: &Path, weights: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["eval", "-i", s(input), "--weights", s(weights)];
    args.extend_from_slice(extra);
    medvae(&args)
}

/// The same, which must succeed; its stdout.
fn eval_ok(input: &Path, weights: &Path, extra: &[&str]) -> String {
    let (code, out, err) = eval(input, weights, extra);
    assert_eq!(code, 0, "{out}\n{err}");
    out
}

/// `infer --decode` of the 2D folder `inp` into `DIR/dec`, which it returns.
fn infer_decode(inp: &Path, weights: &Path, dir: &Path) -> std::path::PathBuf {
    let dec = dir.join("dec");
    let (code, out, err) = medvae(&[
        "infer",
        "-i",
        s(inp),
        "-o",
        s(&dec),
        "--weights",
        s(weights),
        "--modality",
        "xray",
        "--decode",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    dec
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// Every row of `eval -i` equals the metrics of `infer --decode`'s reconstruction file against
/// the image preprocessed as the reference's `load_2d`: eval reconstructs what infer writes and
/// compares it with the right input (channel order, merge, range).
#[test]
fn eval_scores_the_reconstructions_infer_writes() {
    let t = scratch("eval-2d");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES);
    let dec = infer_decode(&inp, &w, t.path());
    let csv = t.path().join("metrics.csv");
    let json = t.path().join("summary.json");
    let out = eval_ok(&inp, &w, &["--csv", s(&csv), "--json", s(&json)]);
    assert!(
        out.contains("eval: 3 of 3 sample(s) evaluated, 0 failed"),
        "{out}"
    );
    assert!(
        out.contains("needs every side >= 176"),
        "64-pixel slices have no MS-SSIM: {out}"
    );
    let table = read_csv(&csv, 3);
    let mut psnrs = Vec::new();
    for name in SLICES {
        let stem = name.trim_end_matches(".png");
        let recon = read_nifti_array(&dec.join(format!("{stem}_decoded.nii.gz"))).unwrap();
        let img = load_2d(&inp.join(name), &Preprocess2d::inference(true)).unwrap();
        assert_eq!(img.channels, 1);
        let want = measure(&recon.data, &img.data, 1, &[img.height, img.width]).unwrap();
        let got = table[&inp.join(name).display().to_string()];
        for (g, w) in got.iter().zip([want.l1, want.mse, want.psnr, want.ssim]) {
            assert!(close(*g, w), "{name}: eval {got:?}, infer's file {want:?}");
        }
        psnrs.push(want.psnr);
    }
    // The JSON summary is over the same samples.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mean = psnrs.iter().sum::<f64>() / 3.0;
    let psnr = &report["summary"]["psnr"];
    assert_eq!(psnr["count"], 3);
    assert!(close(psnr["mean"].as_f64().unwrap(), mean), "{report}");
    assert_eq!(report["complete"], true);
    assert_eq!(report["summary"]["ms_ssim"], serde_json::Value::Null);
    assert_eq!(
        report["fingerprints"]["weights"].as_str().unwrap().len(),
        12
    );
}

/// `--prepared DIR --split S` evaluates exactly the split's samples, named by their source
/// files; a 3D model refuses 2D shards, naming the folder and a sample.
#[test]
fn eval_reads_a_prepared_split_and_refuses_shards_of_the_other_kind() {
    let t = scratch("eval-prepared");
    let prepared = t.path().join("prepared");
    let samples = common::repo().join("samples");
    let (code, out, err) = medvae(&[
        "data",
        "prepare",
        "--csv",
        s(&samples.join("xray_2d.csv")),
        "--data-dir",
        s(&samples.join("2d")),
        "--suffix",
        "",
        "--out",
        s(&prepared),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let w2 = tiny_weights(t.path(), 2);
    let csv = t.path().join("val.csv");
    let val = ["--prepared", s(&prepared), "--split", "val"];
    let with = |w: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "--weights", s(w)];
        args.extend_from_slice(&val);
        args.extend_from_slice(extra);
        medvae(&args)
    };
    let (code, out, err) = with(&w2, &["--csv", s(&csv)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let table = read_csv(&csv, 2);
    assert!(
        table
            .keys()
            .any(|k| k.ends_with("derived/ct_slice_u16_crop96.png")),
        "{table:?}"
    );
    // The finetuning preprocessing resized every sample to 384 x 384.
    assert!(out.contains("(1x384x384)"), "{out}");

    let (code, _, err) = with(&tiny_weights(t.path(), 3), &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("samples are 2D") && err.contains("the model is 3D"),
        "{err}"
    );
    assert!(err.contains(s(&prepared)), "{err}");
}

/// A 3D model evaluates volumes through the sliding window with `--modality`, and without it
/// says what is missing.
#[test]
fn eval_of_volumes_needs_a_modality() {
    let t = scratch("eval-3d");
    let w = tiny_weights(t.path(), 3);
    let inp = sample_folder(t.path(), "3d", &["anatomical_las_i16be.nii"]);
    let (code, _, err) = eval(&inp, &w, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--modality ct|mri"), "{err}");
    let json = t.path().join("s.json");
    let out = eval_ok(
        &inp,
        &w,
        &["--modality", "mri", "--roi-size", "16", "--json", s(&json)],
    );
    assert!(
        out.contains("windows)"),
        "a 16-voxel window tiles the volume: {out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["ssim"]["count"], 1);
    assert!(
        report["settings"]
            .as_str()
            .unwrap()
            .starts_with("mri roi16"),
        "{report}"
    );
}

/// `--baseline`: the baseline columns are exactly what evaluating the baseline alone gives,
/// the paired mean difference is the difference of the means, and a baseline of the other
/// dimensionality is refused.
#[test]
fn eval_against_a_baseline_pairs_the_same_samples() {
    let t = scratch("eval-baseline");
    let inp = sample_folder(t.path(), "2d", &SLICES);
    let model = tiny_weights(t.path(), 2);
    let base = common::save_model(
        AutoencoderKL::new(&common::tiny_config(2), &mut Init::random(12)).unwrap(),
        &t.path().join("base.safetensors"),
    );
    let (both_csv, both_json, alone_csv) = (
        t.path().join("both.csv"),
        t.path().join("both.json"),
        t.path().join("alone.csv"),
    );
    let out = eval_ok(
        &inp,
        &model,
        &[
            "--baseline",
            s(&base),
            "--csv",
            s(&both_csv),
            "--json",
            s(&both_json),
        ],
    );
    assert!(out.contains("model - baseline, per sample:"), "{out}");
    eval_ok(&inp, &base, &["--csv", s(&alone_csv)]);
    let both = std::fs::read_to_string(&both_csv).unwrap();
    let alone = std::fs::read_to_string(&alone_csv).unwrap();
    assert!(both.lines().next().unwrap().contains(",baseline_psnr_db,"));
    for (b, a) in both.lines().skip(1).zip(alone.lines().skip(1)) {
        let bf: Vec<&str> = b.split(',').collect();
        let af: Vec<&str> = a.split(',').collect();
        assert_eq!(bf[0], af[0]);
        assert_eq!(&bf[8..14], &af[2..8], "baseline columns of {}", bf[0]);
        assert_ne!(bf[2..8], af[2..8], "the two models differ");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&both_json).unwrap()).unwrap();
    let mean = |v: &serde_json::Value| v["psnr"]["mean"].as_f64().unwrap();
    let diff = report["paired"]["psnr_db"]["mean_difference"]
        .as_f64()
        .unwrap();
    let want = mean(&report["summary"]) - mean(&report["baseline"]["summary"]);
    assert!(close(diff, want), "{diff} vs {want}");
    let p = &report["paired"]["psnr_db"];
    assert_eq!(
        p["better"].as_u64().unwrap() + p["worse"].as_u64().unwrap(),
        3,
        "random models never tie: {p}"
    );

    let w3 = tiny_weights(t.path(), 3);
    let (code, _, err) = eval(&inp, &model, &["--baseline", s(&w3)]);
    assert_ne!(code, 0);
    assert!(err.contains("--baseline") && err.contains("3D"), "{err}");
}

/// Ctrl-C: the sample in progress finishes, the CSV and JSON cover exactly the samples done
/// (`"complete": false`), and the exit status is 130.
#[cfg(unix)]
#[test]
fn an_interrupted_eval_reports_the_samples_done() {
    const FILES: usize = 200;
    let t = scratch("eval-interrupt");
    let w = tiny_weights(t.path(), 2);
    let inp = t.path().join("many");
    std::fs::create_dir_all(&inp).unwrap();
    for i in 0..FILES {
        let from = common::repo().join("samples/2d/mr_slice_u8.png");
        std::fs::copy(&from, inp.join(format!("s_{i:04}.png"))).unwrap();
    }
    let (csv, json) = (t.path().join("m.csv"), t.path().join("m.json"));
    let (code, rest) = common::interrupt_after_first_file(&[
        "eval",
        "-i",
        s(&inp),
        "--weights",
        s(&w),
        "--threads",
        "1",
        "--csv",
        s(&csv),
        "--json",
        s(&json),
    ]);
    assert_eq!(code, Some(130), "{rest:?}");
    let done = 1 + rest.iter().filter(|l| l.starts_with("ok ")).count();
    assert!(done < FILES, "the run finished before the signal");
    read_csv(&csv, done);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["summary"]["samples"], done);
}

/// `--lpips-vgg` / `--lpips-lin`: the two weight files load as the finetune's do (torch.save,
/// torchvision and LPIPS key names; here random full-width VGG16), and each sample's LPIPS is
/// the distance between infer's reconstruction file and the preprocessed input. One file
/// without the other is refused.
#[test]
fn eval_measures_lpips_with_the_weights_given() {
    use medvae_model::layer::Parameters;
    use medvae_model::losses::{Lpips, VGG16_WIDTHS};
    use medvae_model::quality::Perceptual;
    use medvae_runtime::checkpoint::{
        save_torch, NamedTensor, StateDict, TorchLayout, TorchSaveOptions,
    };
    use medvae_runtime::Device;

    let t = scratch("eval-lpips");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES[..2]);
    let mut lp = Lpips::new(VGG16_WIDTHS, &mut Init::random(21)).unwrap();
    let mut vgg = StateDict::new("vgg16");
    lp.net.visit_params("", &mut |key, p| {
        let (_, rest) = key.split_once('.').unwrap();
        let t = NamedTensor::from_f32(p.torch_shape(), p.to_torch());
        vgg.insert(format!("features.{rest}"), t).unwrap();
    });
    let mut lin = StateDict::new("lin");
    for (k, p) in lp.lin.iter().enumerate() {
        let t = NamedTensor::from_f32(p.torch_shape(), p.to_torch());
        lin.insert(format!("lin{k}.model.1.weight"), t).unwrap();
    }
    let plain = TorchSaveOptions {
        layout: TorchLayout::PlainStateDict,
        ..Default::default()
    };
    let (vgg_file, lin_file) = (t.path().join("vgg16.pth"), t.path().join("vgg.pth"));
    save_torch(&vgg_file, &vgg, plain).unwrap();
    save_torch(&lin_file, &lin, plain).unwrap();

    let (code, _, err) = eval(&inp, &w, &["--lpips-vgg", s(&vgg_file)]);
    assert_ne!(code, 0);
    assert!(err.contains("--lpips-lin"), "{err}");

    let dec = infer_decode(&inp, &w, t.path());
    let csv = t.path().join("m.csv");
    let out = eval_ok(
        &inp,
        &w,
        &[
            "--lpips-vgg",
            s(&vgg_file),
            "--lpips-lin",
            s(&lin_file),
            "--csv",
            s(&csv),
        ],
    );
    assert!(out.lines().any(|l| l.starts_with("lpips")), "{out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let perceptual = Perceptual::new(
        Lpips::pretrained(&vgg_file, &lin_file).unwrap(),
        Device::Cpu,
    )
    .unwrap();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let path = Path::new(f[0]);
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let recon = read_nifti_array(&dec.join(format!("{stem}_decoded.nii.gz"))).unwrap();
        let img = load_2d(path, &Preprocess2d::inference(true)).unwrap();
        let want = perceptual
            .distance(&recon.data, &img.data, 1, &[img.height, img.width])
            .unwrap()
            .unwrap();
        let got: f64 = f[7].parse().unwrap();
        assert!(close(got, want) && got > 0.0, "{stem}: {got} vs {want}");
    }
}

/// A file that cannot be read is reported by name and reason, the others are evaluated, and
/// the exit status is 1.
#[test]
fn a_corrupt_file_fails_alone() {
    let t = scratch("eval-corrupt");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES[..1]);
    let good = std::fs::read(inp.join(SLICES[0])).unwrap();
    std::fs::write(inp.join("truncated.png"), &good[..good.len() / 2]).unwrap();
    let csv = t.path().join("m.csv");
    let (code, out, err) = eval(&inp, &w, &["--csv", s(&csv)]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("FAILED") && err.contains("truncated.png"),
        "{err}"
    );
    assert!(
        out.contains("eval: 1 of 2 sample(s) evaluated, 1 failed"),
        "{out}"
    );
    read_csv(&csv, 1);
}
