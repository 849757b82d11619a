//! Checkpoint IO against real `torch.save` files: the golden checkpoints of the small 2D
//! autoencoder (Lightning `.ckpt`, plain `.bin`, fp16) and the fixtures made by
//! `tests/data/gen_checkpoint_fixtures.py` (every storage type, strided and shared views,
//! Lightning extras, hostile pickles). Expected values always come from torch itself.

mod checkpoint_support;

use std::collections::HashSet;
use std::path::PathBuf;

use half::f16;
use medvae_runtime::checkpoint::{
    compare_keys, inflate_2d_to_3d, inflate_2d_to_3d_with_report, load_checkpoint,
    load_checkpoint_bytes, load_checkpoint_detailed, read_safetensors, save_safetensors,
    save_safetensors_with, CheckpointError, CheckpointFormat, FloatFormat, NamedTensor,
    SaveOptions, StateDict, StoredDType, TensorData,
};

use checkpoint_support::{fixture, golden_checkpoint, read_expected, rezip, temp_dir, zip_records};

/// Asserts `got` equals the expected tensor exactly, with expected floats optionally rounded
/// through `round` first (f16 storage).
fn assert_tensor_eq(key: &str, got: &NamedTensor, expected: &NamedTensor, round: fn(f32) -> f32) {
    assert_eq!(got.shape, expected.shape, "{key}: shape");
    match (&got.data, &expected.data) {
        (TensorData::Float(g), TensorData::Float(e)) => {
            for (i, (a, b)) in g.iter().zip(e).enumerate() {
                assert!(
                    a.to_bits() == round(*b).to_bits(),
                    "{key}[{i}]: got {a}, expected {}",
                    round(*b)
                );
            }
        }
        (TensorData::Int(g), TensorData::Int(e)) => assert_eq!(g, e, "{key}"),
        _ => panic!("{key}: float/int kind differs"),
    }
}

fn identity(x: f32) -> f32 {
    x
}

fn to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The golden expected tensors, keyed without the `param.` prefix.
fn golden_expected_2d() -> StateDict {
    read_expected(
        &golden_checkpoint("ae2d_small_expected.safetensors"),
        "param.",
    )
}

fn assert_matches_golden(state: &StateDict, round: fn(f32) -> f32) {
    let expected = golden_expected_2d();
    let got_keys: HashSet<&str> = state.keys().collect();
    let expected_keys: HashSet<&str> = expected.keys().collect();
    assert_eq!(got_keys, expected_keys);
    for (key, e) in expected.iter() {
        let got = state.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert_tensor_eq(key, got, e, round);
    }
}

#[test]
fn golden_lightning_ckpt_matches_expected_tensors() {
    let loaded = load_checkpoint_detailed(&golden_checkpoint("ae2d_small_lightning.ckpt"))
        .expect("load lightning ckpt");
    assert_eq!(loaded.format, CheckpointFormat::TorchZip);
    assert_eq!(loaded.other_top_level_keys, vec!["epoch", "global_step"]);
    assert!(loaded
        .state
        .iter()
        .all(|(_, t)| t.dtype == StoredDType::F32));
    assert_matches_golden(&loaded.state, identity);
    loaded.state.check_finite().expect("finite weights");
}

#[test]
fn golden_plain_state_dict_bin_matches_expected_tensors() {
    let state = load_checkpoint(&golden_checkpoint("ae2d_small_plain_state_dict.bin"))
        .expect("load plain .bin");
    assert_matches_golden(&state, identity);
    // File order is the module's registration order, as in PyTorch.
    assert_eq!(state.keys().next(), Some("encoder.conv_in.weight"));
}

#[test]
fn golden_fp16_ckpt_matches_expected_rounded_to_f16() {
    let state =
        load_checkpoint(&golden_checkpoint("ae2d_small_fp16.ckpt")).expect("load fp16 ckpt");
    assert!(state.iter().all(|(_, t)| t.dtype == StoredDType::F16));
    assert_matches_golden(&state, to_f16);
}

#[test]
fn safetensors_round_trip_in_f32_f16_bf16() {
    let state = load_checkpoint(&golden_checkpoint("ae2d_small_lightning.ckpt")).unwrap();
    let dir = temp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    save_safetensors(&path, &state).expect("save");
    let back = load_checkpoint(&path).expect("reload");
    assert_matches_golden(&back, identity);
    // Atomic write leaves no temporary file behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);

    fn to_bf16(x: f32) -> f32 {
        half::bf16::from_f32(x).to_f32()
    }
    for (format, round, dtype) in [
        (FloatFormat::F16, to_f16 as fn(f32) -> f32, StoredDType::F16),
        (FloatFormat::BF16, to_bf16, StoredDType::BF16),
    ] {
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("format".to_owned(), "pt".to_owned());
        let options = SaveOptions {
            float_format: format,
            metadata: Some(metadata.clone()),
        };
        save_safetensors_with(&path, &state, &options).expect("save half");
        let bytes = std::fs::read(&path).unwrap();
        let (back, meta) = read_safetensors("half", &bytes).expect("read half");
        assert_eq!(meta, metadata);
        assert!(back.iter().all(|(_, t)| t.dtype == dtype));
        assert_matches_golden(&back, round);
    }
    // Integer tensors survive as i64.
    let varied = load_checkpoint(&fixture("lightning_full.ckpt")).unwrap();
    save_safetensors(&path, &varied).unwrap();
    let back = load_checkpoint(&path).unwrap();
    let nbt = back.get("bn.num_batches_tracked").unwrap();
    assert_eq!(nbt.as_i64(), Some(&[17i64][..]));
    assert_eq!(nbt.shape, Vec::<usize>::new());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inflation_matches_reference_3d_state() {
    let state2d = load_checkpoint(&golden_checkpoint("ae2d_small_lightning.ckpt")).unwrap();
    let expected3d = read_expected(
        &golden_checkpoint("ae3d_small_inflated_expected.safetensors"),
        "param.",
    );
    let targets: Vec<(String, Vec<usize>)> = expected3d
        .iter()
        .map(|(k, t)| (k.to_owned(), t.shape.clone()))
        .collect();
    let (inflated, report) = inflate_2d_to_3d_with_report(&state2d, &targets);
    assert!(
        report.shape_skipped.is_empty(),
        "{:?}",
        report.shape_skipped
    );
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    // Per the golden note, compare keys copied as-is and keys whose 2D tensor exists with a
    // different rank (here every 3D key has a 2D counterpart).
    let mut compared = 0;
    for (key, e) in expected3d.iter() {
        let Some(src) = state2d.get(key) else {
            continue;
        };
        let got = inflated
            .get(key)
            .unwrap_or_else(|| panic!("{key} not inflated"));
        if src.shape.len() != e.shape.len() {
            assert!(report.inflated.iter().any(|k| k == key), "{key}");
        } else {
            assert!(report.copied.iter().any(|k| k == key), "{key}");
        }
        assert_tensor_eq(key, got, e, identity);
        compared += 1;
    }
    assert_eq!(compared, expected3d.len());
    assert!(
        report.inflated.len() >= 40,
        "{} inflated",
        report.inflated.len()
    );
    // The plain wrapper gives the same state.
    assert_eq!(inflate_2d_to_3d(&state2d, &targets), inflated);
}

#[test]
fn inflation_leaves_mismatched_and_absent_keys_to_the_model() {
    let mut src = StateDict::new("mem");
    src.insert(
        "w".into(),
        NamedTensor::from_f32(vec![1, 1, 1, 2], vec![1.0, 2.0]),
    )
    .unwrap();
    src.insert("odd".into(), NamedTensor::from_f32(vec![3], vec![0.0; 3]))
        .unwrap();
    src.insert("extra".into(), NamedTensor::from_f32(vec![1], vec![5.0]))
        .unwrap();
    let targets = vec![
        ("w".to_owned(), vec![1, 1, 1, 2, 4]),
        ("odd".to_owned(), vec![4]),
        ("new".to_owned(), vec![2]),
    ];
    let (out, report) = inflate_2d_to_3d_with_report(&src, &targets);
    // depth 4: middle slice is index 2 of the last axis.
    let w = out.get("w").unwrap().as_f32().unwrap();
    assert_eq!(w, &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
    assert_eq!(report.shape_skipped, vec![("odd".into(), vec![3], vec![4])]);
    assert_eq!(report.absent, vec!["new".to_owned()]);
    assert_eq!(report.unexpected, vec!["extra".to_owned()]);
    assert_eq!(out.len(), 1);
}

#[test]
fn varied_fixture_reads_every_storage_type_and_view() {
    let expected = read_expected(&fixture("varied_expected.safetensors"), "");
    for file in ["lightning_full.ckpt", "varied_protocol5.pt"] {
        let loaded = load_checkpoint_detailed(&fixture(file)).expect(file);
        let state = &loaded.state;
        assert_eq!(state.len(), expected.len(), "{file}");
        for (key, e) in expected.iter() {
            let got = state
                .get(key)
                .unwrap_or_else(|| panic!("{file}: {key} missing"));
            assert_tensor_eq(key, got, e, identity);
        }
        let dtype = |k: &str| state.get(k).unwrap().dtype;
        assert_eq!(dtype("bn.num_batches_tracked"), StoredDType::I64);
        assert_eq!(dtype("extra.f64"), StoredDType::F64);
        assert_eq!(dtype("extra.bf16"), StoredDType::BF16);
        assert_eq!(dtype("extra.f16_permuted"), StoredDType::F16);
        assert_eq!(dtype("extra.i32"), StoredDType::I32);
        assert_eq!(dtype("extra.u8"), StoredDType::U8);
        assert_eq!(dtype("extra.bool"), StoredDType::Bool);
        assert_eq!(
            state.get("extra.scalar").unwrap().shape,
            Vec::<usize>::new()
        );
        assert_eq!(state.get("extra.empty").unwrap().shape, vec![0, 4]);
    }
    let loaded = load_checkpoint_detailed(&fixture("lightning_full.ckpt")).unwrap();
    for k in [
        "optimizer_states",
        "hyper_parameters",
        "callbacks",
        "lr_schedulers",
        "loops",
    ] {
        assert!(loaded.other_top_level_keys.iter().any(|x| x == k), "{k}");
    }
    // Hyper-parameters hold a user class and a path: skipped, and reported.
    for g in ["__main__.Payload", "pathlib.PurePosixPath"] {
        assert!(
            loaded.ignored_globals.iter().any(|x| x == g),
            "{:?}",
            loaded.ignored_globals
        );
    }
}

const EXPLOIT_MARKER: &str = "/tmp/medvae_checkpoint_exploit_marker";

#[test]
fn os_system_pickle_is_refused_and_nothing_runs() {
    let _ = std::fs::remove_file(EXPLOIT_MARKER);
    let path = fixture("forbidden_os_system.ckpt");
    let err = load_checkpoint(&path).expect_err("hostile pickle must be refused");
    let msg = err.to_string();
    assert!(
        matches!(&err, CheckpointError::ForbiddenGlobal { global, .. } if global == "posix.system"),
        "{err:?}"
    );
    assert!(
        msg.contains("posix.system") && msg.contains("forbidden_os_system.ckpt"),
        "{msg}"
    );
    assert!(
        !std::path::Path::new(EXPLOIT_MARKER).exists(),
        "the payload ran"
    );
}

#[test]
fn unknown_class_in_state_dict_is_an_error_naming_key_and_global() {
    let err = load_checkpoint(&fixture("forbidden_custom_class.pt")).unwrap_err();
    match &err {
        CheckpointError::UnknownGlobal { key, global, file } => {
            assert_eq!(key, "payload");
            assert_eq!(global, "__main__.Payload");
            assert!(file.ends_with("forbidden_custom_class.pt"));
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn legacy_non_zip_torch_files_load_and_corrupt_ones_are_clear_errors() {
    // Read transparently (tests/torch_legacy.rs covers the format in depth).
    let loaded = load_checkpoint_detailed(&fixture("legacy_format.pt")).unwrap();
    assert_eq!(loaded.format, CheckpointFormat::TorchLegacy);
    assert_eq!(
        loaded.state.get("w").unwrap().as_f32(),
        Some(&[1.0f32, 1.0][..])
    );
    let bytes = std::fs::read(fixture("legacy_format.pt")).unwrap();
    let err = load_checkpoint_bytes(&bytes[..bytes.len() - 3], "cut.pt").unwrap_err();
    assert!(err.to_string().starts_with("cut.pt: "), "{err}");
    assert!(err.to_string().contains("key `w`"), "{err}");
}

#[test]
fn truncated_and_non_checkpoint_files_are_clear_errors() {
    let bytes = std::fs::read(golden_checkpoint("ae2d_small_lightning.ckpt")).unwrap();
    for len in [
        0,
        3,
        100,
        bytes.len() / 2,
        bytes.len() - 22,
        bytes.len() - 1,
    ] {
        let err = load_checkpoint_bytes(&bytes[..len], "cut.ckpt").expect_err("truncated");
        assert!(err.to_string().starts_with("cut.ckpt: "), "{err}");
        if len >= 4 {
            assert!(matches!(err, CheckpointError::Zip { .. }), "{len}: {err:?}");
        }
    }
    let err = load_checkpoint_bytes(b"model weights, honestly", "notes.txt").unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnrecognizedFormat { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("notes.txt"));
    // A safetensors file cut inside its header is called what it is.
    let st = std::fs::read(golden_checkpoint("ae2d_small_expected.safetensors")).unwrap();
    let header = u64::from_le_bytes(st[..8].try_into().unwrap()) + 8;
    let err = load_checkpoint_bytes(&st[..100], "cut.safetensors").unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "truncated safetensors file: its header alone declares {header} bytes, the file has 100"
        )),
        "{err}"
    );
    // Cut inside the tensor data: both lengths are named.
    let cut = st.len() - 1000;
    let err = load_checkpoint_bytes(&st[..cut], "cut.safetensors").unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the file is {cut} bytes, but the tensors its header lists need {}",
            st.len()
        )),
        "{err}"
    );
    let missing = load_checkpoint(&PathBuf::from("/nonexistent/x.ckpt")).unwrap_err();
    assert!(matches!(missing, CheckpointError::Read { .. }));
}

#[test]
fn short_or_missing_storage_records_are_errors_naming_the_key() {
    let path = golden_checkpoint("ae2d_small_lightning.ckpt");
    let records = zip_records(&path);
    let prefix = "ae2d_small_lightning/";
    // Storage 0 backs the first tensor, encoder.conv_in.weight (32*1*3*3 f32).
    let short: Vec<_> = records
        .iter()
        .map(|(n, b)| {
            let b = if n == &format!("{prefix}data/0") {
                b[..100].to_vec()
            } else {
                b.clone()
            };
            (n.clone(), b)
        })
        .collect();
    let err = load_checkpoint_bytes(&rezip(&short), "short.ckpt").unwrap_err();
    match &err {
        CheckpointError::StorageTooShort {
            key,
            needed,
            available,
            ..
        } => {
            assert_eq!(key, "encoder.conv_in.weight");
            assert_eq!((*needed, *available), (288, 25));
        }
        other => panic!("{other:?}"),
    }
    let without: Vec<_> = records
        .iter()
        .filter(|(n, _)| n != &format!("{prefix}data/0"))
        .cloned()
        .collect();
    let err = load_checkpoint_bytes(&rezip(&without), "missing.ckpt").unwrap_err();
    assert!(
        matches!(&err, CheckpointError::MissingStorage { record, .. } if record.ends_with("data/0")),
        "{err:?}"
    );
}

#[test]
fn check_finite_names_the_key_and_index() {
    let mut state = load_checkpoint(&golden_checkpoint("ae2d_small_plain_state_dict.bin")).unwrap();
    let key = "decoder.conv_out.bias";
    let mut t = state.get(key).unwrap().clone();
    if let TensorData::Float(v) = &mut t.data {
        v[0] = f32::NAN;
    }
    state.insert(key.to_owned(), t).unwrap();
    match state.check_finite().unwrap_err() {
        CheckpointError::NonFinite { key: k, index, .. } => {
            assert_eq!((k.as_str(), index), (key, 0))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn compare_keys_reports_missing_unexpected_and_shape_mismatch() {
    let state = load_checkpoint(&golden_checkpoint("ae2d_small_plain_state_dict.bin")).unwrap();
    let mut expected: Vec<(String, Vec<usize>)> = state
        .iter()
        .map(|(k, t)| (k.to_owned(), t.shape.clone()))
        .collect();
    assert!(compare_keys(&expected, &state).is_exact());
    let removed = expected.remove(3).0;
    expected.push(("decoder.extra.weight".into(), vec![2, 2]));
    let conv = expected
        .iter_mut()
        .find(|(k, _)| k == "encoder.conv_in.weight")
        .unwrap();
    conv.1 = vec![32, 3, 3, 3];
    let report = compare_keys(&expected, &state);
    assert_eq!(report.missing, vec!["decoder.extra.weight".to_owned()]);
    assert_eq!(report.unexpected, vec![removed]);
    assert_eq!(
        report.shape_mismatch,
        vec![(
            "encoder.conv_in.weight".into(),
            vec![32, 3, 3, 3],
            vec![32, 1, 3, 3]
        )]
    );
    let err = report.ensure_exact("model.ckpt").unwrap_err();
    assert!(
        matches!(err, CheckpointError::ShapeMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("encoder.conv_in.weight"));
}

#[test]
fn mutated_checkpoints_never_panic() {
    checkpoint_support::mutation_fuzz(std::time::Duration::from_secs(4));
}
