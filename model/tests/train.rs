//! The finetuning loop: it learns (a fixed batch overfits), resuming from a checkpoint
//! continues bit-for-bit, and bad states are refused.

mod common;

use common::train::{batch, tiny_config, tiny_tower_file};
use medvae_model::train::{StepKind, Trainer};
use medvae_runtime::checkpoint::load_checkpoint;
use medvae_runtime::ops::elementwise::standard_normal;
use medvae_runtime::Tensor;
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medvae-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_fixed_batch_overfits() {
    let mut cfg = tiny_config("unused");
    cfg.criterion.disc_start = 1_000_000;
    cfg.gradient_accumulation_steps = 1;
    cfg.base_learning_rate = 5e-4;
    let mut t = Trainer::new(cfg).unwrap();
    let x = batch(1);
    let first = t.train_batch(&x, 0).unwrap().rec_loss;
    let mut last = first;
    for i in 1..60 {
        last = t.train_batch(&x, i).unwrap().rec_loss;
        assert!(last.is_finite());
    }
    assert!(
        last < 0.5 * first,
        "rec loss went from {first} to {last}: the model does not learn"
    );
}

#[test]
fn resume_continues_bit_for_bit() {
    let batches: Vec<Tensor> = (0..8).map(|i| batch(100 + i)).collect();
    // Uninterrupted: 8 steps (generator steps, then alternating from step 3, accumulation 2).
    let mut a = Trainer::new(tiny_config("a")).unwrap();
    let mut logs_a = Vec::new();
    for (i, x) in batches.iter().enumerate() {
        logs_a.push(a.train_batch(x, i).unwrap());
    }
    assert!(logs_a.iter().any(|l| l.kind == StepKind::Discriminator));

    // Interrupted after 5 steps (mid-accumulation for one of the optimizers), resumed.
    let dir = temp("resume");
    let mut b = Trainer::new(tiny_config("b")).unwrap();
    for (i, x) in batches.iter().enumerate().take(5) {
        b.train_batch(x, i).unwrap();
    }
    let ckpt = b.save_checkpoint(&dir, "last").unwrap();
    drop(b);
    let mut c = Trainer::new(tiny_config("c")).unwrap();
    c.resume_from(&ckpt).unwrap();
    assert_eq!(c.global_step, 5);
    for (i, x) in batches.iter().enumerate().skip(5) {
        let l = c.train_batch(x, i).unwrap();
        let want = logs_a[i];
        assert_eq!(l.kind, want.kind, "step {i}");
        for (what, got, exp) in [
            ("ae_loss", l.ae_loss, want.ae_loss),
            ("rec_loss", l.rec_loss, want.rec_loss),
            ("disc_loss", l.disc_loss, want.disc_loss),
            ("d_weight", l.d_weight, want.d_weight),
        ] {
            assert_eq!(
                got.to_bits(),
                exp.to_bits(),
                "step {i} {what}: {got} vs {exp}"
            );
        }
    }
    // And the weights at the end agree exactly.
    let wa = a.save_checkpoint(&dir, "a").unwrap();
    let wc = c.save_checkpoint(&dir, "c").unwrap();
    // Compare tensors, not file bytes: the header's metadata map has no fixed order.
    let fa = load_checkpoint(&wa.join("model.safetensors")).unwrap();
    let fc = load_checkpoint(&wc.join("model.safetensors")).unwrap();
    assert_eq!(fa.len(), fc.len());
    for (key, ta) in fa.iter() {
        let tc = fc.get(key).unwrap_or_else(|| panic!("{key} missing"));
        let (va, vc) = (ta.as_f32().unwrap(), tc.as_f32().unwrap());
        assert!(
            va.iter().zip(vc).all(|(x, y)| x.to_bits() == y.to_bits()),
            "final weights differ at {key}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_refuses_a_folder_that_is_not_a_checkpoint_and_keeps_no_temp_dirs() {
    let dir = temp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Trainer::new(tiny_config("x")).unwrap();
    let err = t.resume_from(&dir).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    t.train_batch(&batch(7), 0).unwrap();
    t.save_checkpoint(&dir, "last").unwrap();
    t.save_checkpoint(&dir, "last").unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["last".to_string()], "{names:?}");
    // A truncated model file is a clear error naming it.
    let model = dir.join("last/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let err = t.resume_from(&dir.join("last")).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nan_in_the_batch_is_caught() {
    let mut t = Trainer::new(tiny_config("nan")).unwrap();
    let mut v = batch(9).to_f32_vec();
    v[5] = f32::NAN;
    let x = Tensor::from_vec(&[2, 16, 16, 1], v).unwrap();
    let err = t.train_batch(&x, 0).unwrap_err().to_string();
    assert!(err.contains("NaN") || err.contains("non-finite"), "{err}");
}

#[test]
fn stage2_trains_only_the_latent_head_from_a_stage1_checkpoint() {
    let dir = temp("stage2");
    let mut s1 = Trainer::new(tiny_config("s1")).unwrap();
    s1.train_batch(&batch(21), 0).unwrap();
    let ckpt = s1.save_checkpoint(&dir, "best").unwrap();
    let tower = tiny_tower_file(&dir);

    let mut cfg = tiny_config("s2");
    cfg.stage2 = true;
    // Missing pieces are clear errors.
    let err = Trainer::new(cfg.clone()).err().unwrap().to_string();
    assert!(err.contains("stage2_ckpt"), "{err}");
    cfg.stage2_ckpt = Some(ckpt.clone());
    let err = Trainer::new(cfg.clone()).err().unwrap().to_string();
    assert!(err.contains("biomedclip_weights"), "{err}");
    cfg.biomedclip_weights = Some(tower);
    cfg.biomedclip_heads = 2;
    cfg.gradient_accumulation_steps = 1;
    cfg.base_learning_rate = 1e-3;

    let mut s2 = Trainer::new(cfg).unwrap();
    let before: Vec<(String, Vec<f32>)> = medvae_model::layers::state::export_params(&mut s2.ae)
        .into_iter()
        .map(|t| (t.key, t.data))
        .collect();
    let x = batch(22);
    let first = s2.train_batch(&x, 0).unwrap().ae_loss;
    let mut last = first;
    for i in 1..15 {
        last = s2.train_batch(&x, i).unwrap().ae_loss;
        assert!(last.is_finite());
    }
    assert!(last < first, "stage-2 loss went from {first} to {last}");
    let after = medvae_model::layers::state::export_params(&mut s2.ae);
    for ((key, b), a) in before.iter().zip(&after) {
        let head = key.starts_with("channel_ds.") || key.starts_with("channel_proj.");
        let changed = b != &a.data;
        assert_eq!(
            changed,
            head && !key.ends_with("num_batches_tracked"),
            "{key}: changed = {changed}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The device setting: a bad name, half precision on the CPU and an unknown precision are
/// refused with messages that say what to change; CUDA without a GPU names the setting.
#[test]
fn device_and_precision_are_checked() {
    let mut cfg = tiny_config("unused");
    cfg.device = "tpu".into();
    assert!(Trainer::new(cfg).is_err());
    let mut cfg = tiny_config("unused");
    cfg.precision = "bf16".into();
    let err = Trainer::new(cfg)
        .err()
        .expect("bf16 on the CPU")
        .to_string();
    assert!(err.contains("device: cuda"), "{err}");
    let mut cfg = tiny_config("unused");
    cfg.device = "cuda".into();
    cfg.precision = "fp16".into();
    let err = Trainer::new(cfg).err().expect("fp16").to_string();
    assert!(err.contains("fp32, tf32 or bf16"), "{err}");
    // Without a GPU, CUDA is refused naming the setting; with one, the tiny model trains.
    let mut cfg = tiny_config("unused");
    cfg.device = "cuda".into();
    match Trainer::new(cfg) {
        Err(e) => assert!(e.to_string().contains("device `cuda`"), "{e}"),
        Ok(mut t) => {
            let log = t.train_batch(&batch(1), 0).expect("a CUDA step");
            assert!(log.ae_loss.is_finite());
        }
    }
}

/// Validation of 3D volumes with LPIPS: each sample's distance is the mean LPIPS over the
/// slices of the three axes (as in the training step; a 2D LPIPS of a volume is an error).
#[test]
fn validation_of_volumes_adds_the_slice_lpips() {
    use medvae_model::layers::Init;
    use medvae_model::losses::lpips::Lpips;
    let mut cfg = tiny_config("unused");
    cfg.model_name = "medvae_4_1_3d".into();
    let mut t = Trainer::new(cfg).expect("3D trainer");
    assert_eq!(t.model_config.dims, 3);
    let x = standard_normal(&[1, 16, 16, 16, 1], 8).unwrap();
    let plain = t
        .validate([Ok(x.clone())])
        .expect("validation without LPIPS");
    t.loss.lpips = Some(Lpips::new([16, 16, 24, 24, 24], &mut Init::random(9)).unwrap());
    t.loss.config.perceptual_weight = 1.0;
    let with = t
        .validate([Ok(x)])
        .expect("validation with LPIPS over slices");
    // The same reconstruction (validation noise is seeded per batch index), plus the
    // perceptual term.
    assert_eq!(with.mse, plain.mse);
    let added = with.rec_loss - plain.rec_loss;
    assert!(added.is_finite() && added > 0.0, "LPIPS added {added}");
}
