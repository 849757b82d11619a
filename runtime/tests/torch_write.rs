//! The `torch.save` writer: what it writes reads back through the safe reader exactly, in both
//! layouts and every float format, and the file is replaced atomically. (That PyTorch itself
//! loads these files with `weights_only=True` is checked by scripts/check_torch_write.py.)

// Shared with tests/checkpoint.rs; this test uses only its file helpers.
#[allow(dead_code, unused_imports)]
mod checkpoint_support;

use checkpoint_support::{fixture, golden_checkpoint, temp_dir};
use medvae_runtime::checkpoint::{
    load_checkpoint, load_checkpoint_detailed, save_torch, torch_bytes, CheckpointFormat,
    FloatFormat, StoredDType, TensorData, TorchLayout, TorchSaveOptions,
};

#[test]
fn written_torch_files_read_back_exactly() {
    let original = load_checkpoint(&golden_checkpoint("ae2d_small_lightning.ckpt")).unwrap();
    let dir = temp_dir("torch_write");
    for layout in [TorchLayout::Lightning, TorchLayout::PlainStateDict] {
        for (format, dtype, round) in [
            (
                FloatFormat::F32,
                StoredDType::F32,
                (|x| x) as fn(f32) -> f32,
            ),
            (FloatFormat::F16, StoredDType::F16, |x| {
                half::f16::from_f32(x).to_f32()
            }),
            (FloatFormat::BF16, StoredDType::BF16, |x| {
                half::bf16::from_f32(x).to_f32()
            }),
        ] {
            let path = dir.join("model.ckpt");
            save_torch(
                &path,
                &original,
                TorchSaveOptions {
                    layout,
                    float_format: format,
                },
            )
            .expect("save");
            let back = load_checkpoint_detailed(&path).expect("reload");
            assert_eq!(back.format, CheckpointFormat::TorchZip);
            let keys: Vec<&str> = back.state.keys().collect();
            let want: Vec<&str> = original.keys().collect();
            assert_eq!(keys, want, "key order is the state_dict order");
            for (key, t) in original.iter() {
                let got = back.state.get(key).unwrap();
                assert_eq!(got.shape, t.shape, "{key}");
                match (&got.data, &t.data) {
                    (TensorData::Float(g), TensorData::Float(w)) => {
                        assert_eq!(got.dtype, dtype, "{key}");
                        assert!(
                            g.iter()
                                .zip(w)
                                .all(|(a, b)| a.to_bits() == round(*b).to_bits()),
                            "{key} ({format:?}, {layout:?}) differs"
                        );
                    }
                    (TensorData::Int(g), TensorData::Int(w)) => assert_eq!(g, w, "{key}"),
                    _ => panic!("{key}: kind changed"),
                }
            }
        }
    }
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("model.ckpt")],
        "no temp files left"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn integer_and_scalar_tensors_survive() {
    let varied = load_checkpoint(&fixture("lightning_full.ckpt")).unwrap();
    let bytes = torch_bytes(&varied, TorchSaveOptions::default()).unwrap();
    let back = medvae_runtime::checkpoint::load_checkpoint_bytes(&bytes, "mem").unwrap();
    let nbt = back.get("bn.num_batches_tracked").unwrap();
    assert_eq!(nbt.as_i64(), Some(&[17i64][..]));
    assert_eq!(nbt.shape, Vec::<usize>::new());
    assert_eq!(back.len(), varied.len());
}
