//! The verifier itself must be able to fail: a perturbed reference, a missing tensor and a
//! corrupt file each make a case fail (never pass, never count as unsupported).

use medvae_model::verify::{verify_case, VerifyOptions};
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::Device;
use medvae_tests::golden_dir;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn opts() -> VerifyOptions {
    VerifyOptions {
        device: Device::Cpu,
        filter: None,
    }
}

/// Rewrite a case with `edit` applied to its tensors; returns the new file's path.
fn rewrite(
    src: &Path,
    out: &Path,
    edit: impl Fn(&mut HashMap<String, (Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let case = GoldenCase::load(src).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = case
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), (v.shape.clone(), v.data.clone())))
        .collect();
    edit(&mut tensors);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, (s, d))| (k, s, d.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = HashMap::from([("case".to_string(), case.meta.to_string())]);
    safetensors::serialize_to_file(views, Some(meta), out).unwrap();
    out.to_path_buf()
}

/// A scratch file of one test, in a folder of its own that is removed when the guard drops.
fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("medvae-verify-")
        .tempdir()
        .expect("create a scratch folder");
    let file = dir.path().join(name);
    (dir, file)
}

#[test]
fn unmodified_case_passes() {
    let src = golden_dir().join("ops/conv2d_k3s1p1.safetensors");
    let r = verify_case(&src, "conv", &opts());
    assert_eq!(r.passed(), Some(true), "{}", r.line());
}

#[test]
fn perturbed_gradient_fails() {
    let src = golden_dir().join("ops/conv2d_k3s1p1.safetensors");
    let (_guard, scratch) = tmp("perturbed.safetensors");
    let out = rewrite(&src, &scratch, |t| {
        let g = &mut t.get_mut("grad.param.weight").unwrap().1;
        g[0] += 0.05 * g.iter().map(|x| x.abs()).sum::<f32>() / g.len() as f32 * 10.0;
    });
    let r = verify_case(&out, "perturbed", &opts());
    assert_eq!(r.passed(), Some(false), "{}", r.line());
    assert!(r.line().contains("grad.param.weight"), "{}", r.line());
}

#[test]
fn missing_input_tensor_fails_naming_it() {
    let src = golden_dir().join("ops/conv2d_k3s1p1.safetensors");
    let (_guard, scratch) = tmp("missing.safetensors");
    let out = rewrite(&src, &scratch, |t| {
        t.remove("gout.y");
    });
    let r = verify_case(&out, "missing", &opts());
    assert_eq!(r.passed(), Some(false));
    assert!(r.line().contains("gout.y"), "{}", r.line());
}

#[test]
fn corrupt_file_fails_naming_it() {
    let (_guard, out) = tmp("corrupt.safetensors");
    std::fs::write(&out, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let r = verify_case(&out, "corrupt", &opts());
    assert_eq!(r.passed(), Some(false));
    assert!(r.line().contains("corrupt.safetensors"), "{}", r.line());
}

#[test]
fn shape_mismatch_fails_naming_shapes() {
    let src = golden_dir().join("ops/conv2d_k3s1p1.safetensors");
    let (_guard, scratch) = tmp("shape.safetensors");
    let out = rewrite(&src, &scratch, |t| {
        let (s, d) = t.get_mut("param.bias").unwrap();
        s[0] += 1;
        d.push(0.0);
    });
    let r = verify_case(&out, "shape", &opts());
    assert_eq!(r.passed(), Some(false));
    assert!(r.line().contains("bias"), "{}", r.line());
}

/// A checkpoint case compares the files beside it: one altered value in a written checkpoint,
/// or a missing key, fails the case; the unaltered file passes.
#[test]
fn checkpoint_case_fails_on_an_altered_or_incomplete_checkpoint() {
    use medvae_runtime::checkpoint::{
        load_checkpoint, save_torch, NamedTensor, StateDict, TensorData, TorchLayout,
        TorchSaveOptions,
    };
    let golden = golden_dir().join("checkpoints");
    let dir = std::env::temp_dir().join(format!("medvae-verify-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let expected = dir.join("ae2d_small_expected.safetensors");
    std::fs::copy(golden.join("ae2d_small_expected.safetensors"), &expected).unwrap();
    let state = load_checkpoint(&golden.join("ae2d_small_lightning.ckpt")).unwrap();
    let plain = TorchSaveOptions {
        layout: TorchLayout::PlainStateDict,
        ..Default::default()
    };
    let written = dir.join("written.bin");

    save_torch(&written, &state, plain).unwrap();
    let r = verify_case(&expected, "ckpt", &opts());
    assert_eq!(r.passed(), Some(true), "{}", r.line());

    let mut altered = StateDict::new("altered");
    for (i, (k, t)) in state.iter().enumerate() {
        let mut t: NamedTensor = t.clone();
        if let (10, TensorData::Float(v)) = (i, &mut t.data) {
            v[0] += 1e-3;
        }
        altered.insert(k.to_string(), t).unwrap();
    }
    save_torch(&written, &altered, plain).unwrap();
    let r = verify_case(&expected, "ckpt", &opts());
    assert_eq!(r.passed(), Some(false), "{}", r.line());

    let mut incomplete = StateDict::new("incomplete");
    for (k, t) in state.iter().skip(1) {
        incomplete.insert(k.to_string(), t.clone()).unwrap();
    }
    save_torch(&written, &incomplete, plain).unwrap();
    let r = verify_case(&expected, "ckpt", &opts());
    assert_eq!(r.passed(), Some(false), "{}", r.line());
    assert!(r.line().contains("missing"), "{}", r.line());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_quality_case_fails_when_its_reference_moves_by_a_thousandth() {
    // The bundled reconstruction-metric cases (tests/golden/quality): SSIM that is off by 0.1 %
    // must fail, and so must a reference computed without the clamp to [-1, 1].
    let src = medvae_tests::repo_root().join("tests/golden/quality/mni_axial_2d.safetensors");
    assert_eq!(verify_case(&src, "q", &opts()).passed(), Some(true));
    let (_guard, scratch) = tmp("ssim.safetensors");
    let out = rewrite(&src, &scratch, |t| {
        t.get_mut("out.ms_ssim").unwrap().1[0] *= 1.001;
    });
    let r = verify_case(&out, "ms", &opts());
    assert_eq!(r.passed(), Some(false), "{}", r.line());
    assert!(r.line().contains("out.ms_ssim"), "{}", r.line());
    // Pull the prediction into range: the clamp no longer matters, and every metric moves.
    let out = rewrite(&src, &scratch, |t| {
        let p = &mut t.get_mut("in.preds").unwrap().1;
        p.iter_mut().for_each(|v| *v = v.clamp(-0.9, 0.9));
    });
    let r = verify_case(&out, "clamped", &opts());
    assert_eq!(r.passed(), Some(false), "{}", r.line());
}
