//! The legacy (pre-1.6, non-zip) `torch.save` stream: fixtures written by torch itself
//! (`tests/data/gen_legacy_fixtures.py`), compared exactly against torch's own contiguous f32 /
//! i64 copies; hand-made streams for the cases torch never writes; and corrupt, truncated and
//! hostile streams, which must be clear errors with nothing executed and no panic.

#[path = "checkpoint_support/pickle_writer.rs"]
#[allow(dead_code)] // the zip-format helpers are not used here
mod pickle_writer;

use std::path::{Path, PathBuf};

use medvae_runtime::checkpoint::{
    load_checkpoint, load_checkpoint_bytes, load_checkpoint_detailed, CheckpointError,
    CheckpointFormat, StateDict, StoredDType, TensorData,
};

use pickle_writer::Pickle;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The expected tensors (safetensors, read by the safetensors reader: a code path independent
/// of the legacy one), keyed without `prefix`.
fn read_expected(path: &Path, prefix: &str) -> StateDict {
    let all = load_checkpoint(path).unwrap();
    let mut out = StateDict::new("expected");
    for (k, t) in all.iter() {
        if let Some(key) = k.strip_prefix(prefix) {
            out.insert(key.to_owned(), t.clone()).unwrap();
        }
    }
    out
}

/// The magic number pickle body: LONG1 of 10 bytes, 0x1950a86a20f9469cfc6c little-endian.
const MAGIC: [u8; 12] = [
    0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// Asserts `got` holds exactly the tensors of `expected` (bit-equal floats).
fn assert_state_eq(got: &StateDict, expected: &StateDict) {
    let mut got_keys: Vec<&str> = got.keys().collect();
    let mut want_keys: Vec<&str> = expected.keys().collect();
    got_keys.sort_unstable();
    want_keys.sort_unstable();
    assert_eq!(got_keys, want_keys);
    for (key, e) in expected.iter() {
        let g = got.get(key).unwrap();
        assert_eq!(g.shape, e.shape, "{key}: shape");
        match (&g.data, &e.data) {
            (TensorData::Float(a), TensorData::Float(b)) => {
                let a: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
                let b: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
                assert_eq!(a, b, "{key}");
            }
            (TensorData::Int(a), TensorData::Int(b)) => assert_eq!(a, b, "{key}"),
            _ => panic!("{key}: float/int kind differs"),
        }
    }
}

fn expected(prefix: &str) -> StateDict {
    read_expected(&fixture("legacy_expected.safetensors"), prefix)
}

#[test]
fn plain_legacy_state_dict_matches_torch() {
    for name in ["legacy_plain.pt", "legacy_plain_protocol4.pt"] {
        let loaded = load_checkpoint_detailed(&fixture(name)).unwrap();
        assert_eq!(loaded.format, CheckpointFormat::TorchLegacy, "{name}");
        assert!(loaded.other_top_level_keys.is_empty());
        assert_state_eq(&loaded.state, &expected("plain."));
        let dtype = |k: &str| loaded.state.get(k).unwrap().dtype;
        assert_eq!(dtype("f16"), StoredDType::F16);
        assert_eq!(dtype("bf16"), StoredDType::BF16);
        assert_eq!(dtype("f64"), StoredDType::F64);
        assert_eq!(dtype("i64"), StoredDType::I64);
        assert_eq!(dtype("base_t"), StoredDType::F32);
    }
}

#[test]
fn wrapped_legacy_checkpoint_reads_its_state_dict() {
    let loaded = load_checkpoint_detailed(&fixture("legacy_wrapped.ckpt")).unwrap();
    assert_eq!(loaded.format, CheckpointFormat::TorchLegacy);
    assert_state_eq(&loaded.state, &expected("wrapped."));
    let mut others = loaded.other_top_level_keys.clone();
    others.sort();
    assert_eq!(others, ["arch", "config_object", "epoch", "optimizer"]);
    // The user class and the pickled nn.Module class stay inert names.
    assert!(
        loaded
            .ignored_globals
            .iter()
            .any(|g| g.ends_with("Payload")),
        "{:?}",
        loaded.ignored_globals
    );
    let old = load_checkpoint(&fixture("legacy_format.pt")).unwrap();
    assert_eq!(old.get("w").unwrap().as_f32(), Some(&[1.0f32, 1.0][..]));
}

#[test]
fn legacy_lpips_shaped_files_match_torch() {
    let want = read_expected(&fixture("legacy_lpips_expected.safetensors"), "");
    for name in ["legacy_lpips_lin.pth", "legacy_lpips_vgg16_tiny.pth"] {
        let got = load_checkpoint(&fixture(name)).unwrap();
        let mut sub = StateDict::new("expected");
        for k in got.keys() {
            sub.insert(k.to_owned(), want.get(k).unwrap().clone())
                .unwrap();
        }
        assert_state_eq(&got, &sub);
    }
}

/// The real `vgg.pth` of the `lpips` wheel (saved by PyTorch 0.4 in 2018), when
/// `MEDVAE_LPIPS_VGG_PTH` names it and `MEDVAE_LPIPS_VGG_EXPECTED` a safetensors of
/// `torch.load(vgg.pth)` (not vendored: third-party weights). Skipped otherwise.
#[test]
fn real_lpips_vgg_pth_when_available() {
    let (Some(pth), Some(want)) = (
        std::env::var_os("MEDVAE_LPIPS_VGG_PTH"),
        std::env::var_os("MEDVAE_LPIPS_VGG_EXPECTED"),
    ) else {
        eprintln!("MEDVAE_LPIPS_VGG_PTH / MEDVAE_LPIPS_VGG_EXPECTED not set: skipped");
        return;
    };
    let loaded = load_checkpoint_detailed(Path::new(&pth)).unwrap();
    assert_eq!(loaded.format, CheckpointFormat::TorchLegacy);
    let want = read_expected(Path::new(&want), "");
    assert_eq!(want.len(), 5);
    assert_state_eq(&loaded.state, &want);
}

#[test]
fn forbidden_global_in_a_legacy_stream_is_refused() {
    let marker = std::path::Path::new("/tmp/medvae_legacy_exploit_marker");
    let _ = std::fs::remove_file(marker);
    let err = load_checkpoint(&fixture("legacy_os_system.pt")).unwrap_err();
    match &err {
        CheckpointError::ForbiddenGlobal { global, file } => {
            assert!(global.ends_with(".system"), "{global}");
            assert!(file.ends_with("legacy_os_system.pt"));
        }
        other => panic!("{other:?}"),
    }
    // Also in the header pickles, which carry no tensors.
    let mut sys_info = Pickle::proto2();
    sys_info.global("os", "system").op(b'.');
    let bytes = stream_with_header(&sys_info.0, &plain_object(None), &["0"], &[(3, &F3)]);
    let err = load_checkpoint_bytes(&bytes, "hostile.pt").unwrap_err();
    assert!(
        matches!(&err, CheckpointError::ForbiddenGlobal { global, .. } if global == "os.system"),
        "{err:?}"
    );
    assert!(!marker.exists(), "the exploit ran");
}

#[test]
fn truncated_or_wrong_magic_legacy_files_are_clear_errors() {
    let bytes = std::fs::read(fixture("legacy_plain.pt")).unwrap();
    // Every truncation is an error naming the file; none panics.
    for len in 0..bytes.len() {
        let err = load_checkpoint_bytes(&bytes[..len], "cut.pt").expect_err("truncated");
        assert!(err.to_string().starts_with("cut.pt: "), "{len}: {err}");
    }
    // Cut inside the data section: the error names the state-dict key that needs the bytes.
    let err = load_checkpoint_bytes(&bytes[..bytes.len() - 1], "cut.pt").unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::StorageTooShort { .. } | CheckpointError::InvalidTensor { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("key `"), "{err}");

    let mut wrong = bytes.clone();
    wrong[6] ^= 0x40; // inside the magic number
    let err = load_checkpoint_bytes(&wrong, "magic.pt").unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnrecognizedFormat { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("magic number"), "{err}");

    let mut version = bytes.clone();
    assert_eq!(&version[15..21], &[0x80, 0x02, 0x4d, 0xe9, 0x03, b'.']);
    version[18] = 0xea;
    let err = load_checkpoint_bytes(&version, "version.pt").unwrap_err();
    assert!(err.to_string().contains("protocol version 1002"), "{err}");
}

/// Every byte of a legacy file replaced by a few values: errors or loads, never panics.
#[test]
fn mutated_legacy_bytes_never_panic() {
    let bytes = std::fs::read(fixture("legacy_wrapped.ckpt")).unwrap();
    for i in 0..bytes.len() {
        for v in [0x00, 0xff, bytes[i] ^ 0x01, b'.', b'(', 0x8a] {
            let mut m = bytes.clone();
            m[i] = v;
            if let Err(e) = load_checkpoint_bytes(&m, "m.ckpt") {
                assert!(e.to_string().starts_with("m.ckpt: "), "{e}");
            }
        }
    }
}

// ------------------------------------------------------------------ hand-made streams

const F3: [f32; 3] = [1.0, -2.5, 3.25];

/// `{"w": _rebuild_tensor_v2(<storage pid>, 0, (3,), (1,), False, OrderedDict())}` where the
/// storage pid is `('storage', torch.FloatStorage, '0', 'cpu', 3, view)`, or the zip format's
/// 5-tuple when `view` is `Some("5")`.
fn plain_object(view: Option<&str>) -> Vec<u8> {
    let mut p = Pickle::proto2();
    p.op(b'}').str("w");
    p.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
    p.op(b'(').str("storage").global("torch", "FloatStorage");
    p.str("0").str("cpu").int(3);
    match view {
        None => {
            p.op(b'N');
        }
        Some("5") => {}
        Some(key) => {
            p.op(b'(').str(key).int(0).int(3).op(b't');
        }
    }
    p.op(b't').op(b'Q');
    p.int(0).ints(&[3]).ints(&[1]).op(0x89);
    p.global("collections", "OrderedDict").op(b')').op(b'R');
    p.op(b't').op(b'R').op(b's').op(b'.');
    p.0
}

/// A legacy stream: magic, version, `sys_info`, `object`, the key list, then per record its
/// element count and f32 values.
fn stream_with_header(
    sys_info: &[u8],
    object: &[u8],
    keys: &[&str],
    records: &[(u64, &[f32])],
) -> Vec<u8> {
    let mut out = vec![0x80, 0x02];
    out.extend(MAGIC);
    out.push(b'.');
    out.extend([0x80, 0x02, 0x4d, 0xe9, 0x03, b'.']); // BININT2 1001
    out.extend(sys_info);
    out.extend(object);
    let mut list = Pickle::proto2();
    list.op(b']').op(b'(');
    for k in keys {
        list.str(k);
    }
    list.op(b'e').op(b'.');
    out.extend(list.0);
    for (count, values) in records {
        out.extend(count.to_le_bytes());
        values.iter().for_each(|v| out.extend(v.to_le_bytes()));
    }
    out
}

fn stream(object: &[u8], keys: &[&str], records: &[(u64, &[f32])]) -> Vec<u8> {
    stream_with_header(&[0x80, 0x02, b'}', b'.'], object, keys, records)
}

#[test]
fn hand_made_legacy_streams() {
    // Well formed: the builder itself is right.
    let ok = stream(&plain_object(None), &["0"], &[(3, &F3)]);
    let sd = load_checkpoint_bytes(&ok, "ok.pt").unwrap();
    assert_eq!(sd.get("w").unwrap().as_f32(), Some(&F3[..]));

    let err_of = |bytes: Vec<u8>| load_checkpoint_bytes(&bytes, "bad.pt").unwrap_err();
    // A storage view (PyTorch < 0.4): refused by name.
    let err = err_of(stream(&plain_object(Some("v")), &["0"], &[(3, &F3)]));
    assert!(
        matches!(err, CheckpointError::BadPickle { .. }) && err.to_string().contains("view"),
        "{err}"
    );
    // The zip format's 5-tuple id in a legacy stream.
    let err = err_of(stream(&plain_object(Some("5")), &["0"], &[(3, &F3)]));
    assert!(err.to_string().contains("6-tuple"), "{err}");
    // Record count disagreeing with the pickle.
    let err = err_of(stream(&plain_object(None), &["0"], &[(2, &F3[..2])]));
    assert!(
        matches!(err, CheckpointError::LegacyStream { .. }) && err.to_string().contains("`0`"),
        "{err}"
    );
    // A listed key no tensor refers to.
    let err = err_of(stream(
        &plain_object(None),
        &["0", "9"],
        &[(3, &F3), (0, &[])],
    ));
    assert!(err.to_string().contains("`9`"), "{err}");
    // A storage missing from the list.
    let err = err_of(stream(&plain_object(None), &[], &[]));
    assert!(
        matches!(err, CheckpointError::MissingStorage { .. }),
        "{err}"
    );
    // A huge declared count: no allocation, a clear error naming the key.
    let mut huge = stream(&plain_object(None), &["0"], &[]);
    huge.extend(u64::MAX.to_le_bytes());
    let err = err_of(huge);
    assert!(err.to_string().contains("`0`"), "{err}");
}
