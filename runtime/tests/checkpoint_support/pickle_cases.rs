//! Hand-made pickles for the cases torch.save writes rarely or Python would not write at all:
//! tensor-subclass wrappers, big-endian archives, untyped storages, shared references through
//! the memo, forbidden globals in their various spellings, malformed streams.

use medvae_runtime::checkpoint::{
    load_checkpoint, load_checkpoint_bytes, load_checkpoint_bytes_detailed, CheckpointError,
    StoredDType,
};

use super::pickle_writer::Pickle;
use super::{golden_checkpoint, rezip_with, torch_zip, torch_zip_with_order, zip_records};

fn f32_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `{"state_dict": {<entries>}}` around `body`, which must push key/value pairs.
fn wrapped_state_dict(body: impl FnOnce(&mut Pickle)) -> Vec<u8> {
    let mut p = Pickle::proto2();
    p.op(b'}').str("state_dict").op(b'}').op(b'(');
    body(&mut p);
    p.op(b'u').op(b's').op(b'.');
    p.0
}

#[test]
fn parameter_and_subclass_wrappers_yield_their_tensor() {
    let pickle = wrapped_state_dict(|p| {
        // _rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, (args...), {})
        p.str("a")
            .global("torch._tensor", "_rebuild_from_type_v2")
            .op(b'(');
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.global("torch.nn.parameter", "Parameter").op(b'(');
        p.storage("FloatStorage", "0", 6)
            .int(0)
            .ints(&[2, 3])
            .ints(&[3, 1])
            .op(0x89);
        p.global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't');
        p.op(b'}').op(b't').op(b'R');
        // _rebuild_parameter(<transposed view of the same storage>, True, OrderedDict())
        p.str("b")
            .global("torch._utils", "_rebuild_parameter")
            .op(b'(');
        p.tensor_v2("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
            .op(0x88);
        p.global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R');
    });
    let storage = vec![("0".to_owned(), f32_le(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))];
    let state = load_checkpoint_bytes(&torch_zip(pickle, &storage), "wrappers.ckpt").unwrap();
    assert_eq!(
        state.get("a").unwrap().as_f32().unwrap(),
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let b = state.get("b").unwrap();
    assert_eq!(b.shape, vec![3, 2]);
    assert_eq!(b.as_f32().unwrap(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
}

#[test]
fn big_endian_archives_are_byte_swapped() {
    let pickle = wrapped_state_dict(|p| {
        p.str("f").tensor_v2("FloatStorage", "0", 3, 0, &[3], &[1]);
        p.str("n").tensor_v2("LongStorage", "1", 1, 0, &[], &[]);
    });
    let floats: Vec<u8> = [1.5f32, -2.0, 3.25]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let storages = vec![
        ("0".to_owned(), floats),
        ("1".to_owned(), 7i64.to_be_bytes().to_vec()),
    ];
    let zip = torch_zip_with_order(pickle, &storages, "big");
    let state = load_checkpoint_bytes(&zip, "be.ckpt").unwrap();
    assert_eq!(
        state.get("f").unwrap().as_f32().unwrap(),
        &[1.5, -2.0, 3.25]
    );
    assert_eq!(state.get("n").unwrap().as_i64().unwrap(), &[7]);
}

#[test]
fn rebuild_tensor_v3_views_untyped_storage_with_its_dtype() {
    let v3 = |dtype: &'static str| {
        wrapped_state_dict(move |p| {
            p.str("h")
                .global("torch._utils", "_rebuild_tensor_v3")
                .op(b'(');
            p.storage("UntypedStorage", "0", 6)
                .int(1)
                .ints(&[2])
                .ints(&[1])
                .op(0x89);
            p.global("collections", "OrderedDict").op(b')').op(b'R');
            p.global("torch", dtype).op(b't').op(b'R');
        })
    };
    let halves: Vec<u8> = [1.0f32, 2.0, 0.5]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let storage = vec![("0".to_owned(), halves)];
    let state = load_checkpoint_bytes(&torch_zip(v3("float16"), &storage), "v3.ckpt").unwrap();
    let h = state.get("h").unwrap();
    assert_eq!(
        (h.dtype, h.as_f32().unwrap()),
        (StoredDType::F16, &[2.0f32, 0.5][..])
    );
    let err = load_checkpoint_bytes(&torch_zip(v3("complex64"), &storage), "c.ckpt").unwrap_err();
    match &err {
        CheckpointError::InvalidTensor { key, detail, .. } => {
            assert_eq!(key, "h");
            assert!(detail.contains("torch.complex64"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn memo_references_share_one_object() {
    // root = {}; root["state_dict"] = sd = {} (memo 1); then sd is fetched from the memo and
    // filled: the entry must be visible through root, as in Python.
    let mut p = Pickle::proto2();
    p.op(b'}')
        .op(b'q')
        .op(0)
        .op(b'(')
        .str("state_dict")
        .op(b'}')
        .op(b'q')
        .op(1)
        .op(b'u');
    p.op(b'h').op(1).op(b'(').str("w");
    p.tensor_v2("FloatStorage", "0", 2, 0, &[2], &[1]);
    p.op(b'u').op(b'0').op(b'.');
    let storage = vec![("0".to_owned(), f32_le(&[4.0, 5.0]))];
    let state = load_checkpoint_bytes(&torch_zip(p.0, &storage), "memo.ckpt").unwrap();
    assert_eq!(state.get("w").unwrap().as_f32().unwrap(), &[4.0, 5.0]);
}

#[test]
fn unknown_objects_outside_the_state_dict_are_skipped_and_reported() {
    let mut p = Pickle::proto2();
    p.op(b'}')
        .op(b'(')
        .str("state_dict")
        .op(b'}')
        .op(b'(')
        .str("w");
    p.tensor_v2("FloatStorage", "0", 1, 0, &[1], &[1]).op(b'u');
    // hp = getattr(some.module.Outer, "Inner")(), with state and dict items.
    p.str("hp")
        .global("__builtin__", "getattr")
        .op(b'(')
        .global("some.module", "Outer");
    p.str("Inner").op(b't').op(b'R').op(b')').op(b'R');
    p.op(b'(').str("k").int(1).op(b'u').op(b'}').op(b'b');
    p.op(b'u').op(b'.');
    let storage = vec![("0".to_owned(), f32_le(&[1.0]))];
    let loaded = load_checkpoint_bytes_detailed(&torch_zip(p.0, &storage), "hp.ckpt").unwrap();
    assert_eq!(loaded.state.len(), 1);
    assert_eq!(loaded.other_top_level_keys, vec!["hp"]);
    assert_eq!(
        loaded.ignored_globals,
        vec!["builtins.getattr", "some.module.Outer"]
    );
}

#[test]
fn forbidden_globals_are_refused_in_every_spelling() {
    let cases: [(&[u8], &str); 5] = [
        (b"c__builtin__\neval\n", "builtins.eval"),
        (b"cbuiltins\n__import__\n", "builtins.__import__"),
        (b"csubprocess\nPopen\n", "subprocess.Popen"),
        (b"ctorch.hub\nload\n", "torch.hub.load"),
        // Protocol 4: STACK_GLOBAL from two SHORT_BINUNICODE strings.
        (b"\x8c\x02os\x8c\x06system\x93", "os.system"),
    ];
    for (global_ops, name) in cases {
        let mut p = Pickle::proto2();
        p.op(b'}').op(b'(').str("hook");
        p.0.extend_from_slice(global_ops);
        p.op(b'(').str("true").op(b't').op(b'R').op(b'u').op(b'.');
        let err = load_checkpoint_bytes(&torch_zip(p.0, &[]), "evil.ckpt").unwrap_err();
        assert!(
            matches!(&err, CheckpointError::ForbiddenGlobal { global, .. } if global == name),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn malformed_streams_are_bad_pickle_errors() {
    let cases: [(&[u8], &str); 5] = [
        (b"\x80\x06}.", "protocol 6"),
        (b"\x80\x02I01\n.", "INT"),
        (b"\x80\x02h\x05.", "memo key 5"),
        (b"\x80\x02}(X\x01\x00\x00\x00ku.", "odd number"),
        (b"\x80\x02X\xff\x00\x00\x00ab", "truncated"),
    ];
    for (pickle, needle) in cases {
        let err = load_checkpoint_bytes(&torch_zip(pickle.to_vec(), &[]), "bad.ckpt").unwrap_err();
        match &err {
            CheckpointError::BadPickle { detail, record, .. } => {
                assert!(detail.contains(needle), "{needle}: {detail}");
                assert_eq!(record, "archive/data.pkl");
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
}

#[test]
fn non_tensor_values_and_non_string_keys_are_errors() {
    let int_value = wrapped_state_dict(|p| {
        p.str("step").int(3);
    });
    let err = load_checkpoint_bytes(&torch_zip(int_value, &[]), "v.ckpt").unwrap_err();
    assert!(
        matches!(&err, CheckpointError::InvalidTensor { key, .. } if key == "step"),
        "{err:?}"
    );
    let int_key = wrapped_state_dict(|p| {
        p.int(1).tensor_v2("FloatStorage", "0", 1, 0, &[1], &[1]);
    });
    let storage = vec![("0".to_owned(), f32_le(&[1.0]))];
    let err = load_checkpoint_bytes(&torch_zip(int_key, &storage), "k.ckpt").unwrap_err();
    assert!(
        matches!(err, CheckpointError::NoStateDict { .. }),
        "{err:?}"
    );
    let no_weights = rezip_with(&[], zip::CompressionMethod::Stored);
    let err = load_checkpoint_bytes(&no_weights, "empty.zip").unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnrecognizedFormat { .. }),
        "{err:?}"
    );
}

#[test]
fn deflate_compressed_archives_load_like_stored_ones() {
    let path = golden_checkpoint("ae2d_small_lightning.ckpt");
    let deflated = rezip_with(&zip_records(&path), zip::CompressionMethod::Deflated);
    let state = load_checkpoint_bytes(&deflated, "deflated.ckpt").unwrap();
    let reference = load_checkpoint(&path).unwrap();
    assert_eq!(state.len(), reference.len());
    for (key, t) in reference.iter() {
        assert_eq!(state.get(key), Some(t), "{key}");
    }
}

#[test]
fn empty_views_past_the_end_of_their_storage_are_empty() {
    // torch allows a zero-element view at any offset; nothing is read.
    let pickle = wrapped_state_dict(|p| {
        p.str("e")
            .tensor_v2("FloatStorage", "0", 0, 1000, &[0], &[1]);
        p.str("z")
            .tensor_v2("FloatStorage", "0", 0, 7, &[2, 0, 3], &[0, 1, 5]);
    });
    let storage = vec![("0".to_owned(), Vec::new())];
    let state = load_checkpoint_bytes(&torch_zip(pickle, &storage), "empty.ckpt").unwrap();
    assert!(state.get("e").unwrap().data.is_empty());
    assert_eq!(state.get("z").unwrap().shape, vec![2, 0, 3]);
}
