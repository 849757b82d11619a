//! Data-parallel training on CPU replicas: the threaded replicas with the ring all-reduce
//! take exactly the steps of trainers averaged by hand, stay identical, and a checkpointed
//! run resumes bit for bit; one replica is a plain run.

mod common;

use common::train::{batch, tiny_config};
use medvae_model::train::{DataParallel, StepKind, StepLog, Trainer, Update};
use medvae_runtime::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

const STEPS: usize = 8;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medvae-dp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Global batches of 2 images (one per replica of two).
fn batches() -> Vec<Tensor> {
    (0..STEPS as u64).map(|i| batch(200 + i)).collect()
}

/// Image `i` of a `[2, 16, 16, 1]` batch, as a batch of one.
fn image(x: &Tensor, i: usize) -> Tensor {
    let v = x.to_f32_vec();
    let n = v.len() / 2;
    Tensor::from_vec(&[1, 16, 16, 1], v[i * n..(i + 1) * n].to_vec()).unwrap()
}

/// Every parameter value of a trainer (autoencoder, logvar, discriminator) by key.
fn weights(t: &mut Trainer) -> BTreeMap<String, Vec<u32>> {
    let mut out = BTreeMap::new();
    for update in [Update::Autoencoder, Update::Discriminator] {
        t.visit_update_params(update, &mut |key, p| {
            let bits = p.value.to_f32_vec().iter().map(|v| v.to_bits()).collect();
            out.insert(key.to_string(), bits);
        });
    }
    out
}

fn config() -> medvae_model::train::TrainConfig {
    let mut cfg = tiny_config("unused");
    cfg.batch_size = 1;
    cfg
}

fn same_bits(a: f32, b: f32, what: &str) {
    assert_eq!(a.to_bits(), b.to_bits(), "{what}: {a} vs {b}");
}

/// Two replicas against two plain trainers (ranks 0 and 1) whose gradients the test
/// averages itself, `(g0 + g1) · 0.5` in f32 (what a ring of two computes), before each
/// optimizer step: the same losses and the same weights, bit for bit, over generator and
/// discriminator steps with accumulation 2 and a learned logvar.
#[test]
fn two_replicas_take_the_steps_of_hand_averaged_gradients() {
    let devices = vec!["cpu".to_string(), "cpu".to_string()];
    let mut dp = DataParallel::new(&config(), &devices).unwrap();
    let mut hand: Vec<Trainer> = (0..2)
        .map(|rank| {
            let mut t = Trainer::new(config()).unwrap();
            t.rank = rank;
            t
        })
        .collect();
    let mut kinds = Vec::new();
    for (i, x) in batches().iter().enumerate() {
        let log = dp.train_batch(x, i).unwrap();
        kinds.push(log.kind);
        let mut logs: Vec<StepLog> = Vec::new();
        let mut update = None;
        for (rank, t) in hand.iter_mut().enumerate() {
            let (l, u) = t.accumulate_batch(&image(x, rank), i).unwrap();
            logs.push(l);
            update = u;
        }
        copy_buffers_by_hand(&mut hand);
        if let Some(u) = update {
            average_by_hand(&mut hand, u);
            for t in &mut hand {
                t.apply_update(u).unwrap();
            }
        }
        same_bits(
            log.ae_loss,
            (logs[0].ae_loss + logs[1].ae_loss) / 2.0,
            "ae_loss",
        );
        same_bits(
            log.disc_loss,
            (logs[0].disc_loss + logs[1].disc_loss) / 2.0,
            "disc",
        );
    }
    assert!(kinds.contains(&StepKind::Discriminator) && kinds.contains(&StepKind::Generator));
    let lead = weights(dp.replica(0).unwrap());
    assert_eq!(
        lead,
        weights(dp.replica(1).unwrap()),
        "replicas drifted apart"
    );
    assert_eq!(lead, weights(&mut hand[0]), "not the hand-averaged steps");
}

/// Replica 0's BatchNorm statistics for replica 1 (DDP's buffer broadcast).
fn copy_buffers_by_hand(hand: &mut [Trainer]) {
    let mut lead = BTreeMap::new();
    hand[0].visit_update_params(Update::Discriminator, &mut |key, p| {
        if p.kind.is_buffer() {
            lead.insert(key.to_string(), p.value.clone());
        }
    });
    assert!(!lead.is_empty(), "the discriminator has BatchNorm buffers");
    hand[1].visit_update_params(Update::Discriminator, &mut |key, p| {
        if let Some(v) = lead.get(key) {
            p.value = v.clone();
        }
    });
}

fn average_by_hand(hand: &mut [Trainer], update: Update) {
    let mut grads: Vec<BTreeMap<String, Vec<f32>>> = Vec::new();
    for t in hand.iter_mut() {
        let mut g = BTreeMap::new();
        t.visit_update_params(update, &mut |key, p| {
            if p.trainable {
                if let Some(grad) = p.grad.as_ref() {
                    g.insert(key.to_string(), grad.to_f32_vec());
                }
            }
        });
        grads.push(g);
    }
    assert!(!grads[0].is_empty());
    for t in hand.iter_mut() {
        t.visit_update_params(update, &mut |key, p| {
            if let (Some(grad), Some(a), Some(b)) =
                (p.grad.as_mut(), grads[0].get(key), grads[1].get(key))
            {
                if p.trainable {
                    let mean: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x + y) * 0.5).collect();
                    *grad = Tensor::from_vec(grad.shape(), mean).unwrap();
                }
            }
        });
    }
}

/// The ranks draw different noise: the same image gives replica 1 another loss.
#[test]
fn replicas_draw_their_own_random_streams() {
    let x = image(&batch(7), 0);
    let losses: Vec<f32> = (0..2)
        .map(|rank| {
            let mut t = Trainer::new(config()).unwrap();
            t.rank = rank;
            t.accumulate_batch(&x, 0).unwrap().0.ae_loss
        })
        .collect();
    assert_ne!(losses[0].to_bits(), losses[1].to_bits());
}

/// A checkpoint written mid-accumulation (pending gradients averaged first) and resumed
/// into fresh replicas continues exactly as the run that wrote it.
#[test]
fn a_data_parallel_run_resumes_bit_for_bit() {
    let devices = vec!["cpu".to_string(), "cpu".to_string()];
    let dir = temp("resume");
    let xs = batches();
    let mut a = DataParallel::new(&config(), &devices).unwrap();
    let mut logs_a = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        if i == 5 {
            a.save_checkpoint(&dir, "step-5").unwrap();
        }
        logs_a.push(a.train_batch(x, i).unwrap());
    }
    let mut b = DataParallel::new(&config(), &devices).unwrap();
    b.resume_from(&dir.join("step-5")).unwrap();
    for (i, x) in xs.iter().enumerate().skip(5) {
        let l = b.train_batch(x, i).unwrap();
        same_bits(l.ae_loss, logs_a[i].ae_loss, "ae_loss");
        same_bits(l.disc_loss, logs_a[i].disc_loss, "disc_loss");
    }
    assert_eq!(
        weights(a.replica(0).unwrap()),
        weights(b.replica(1).unwrap())
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// One replica is a plain run: same losses and weights as `Trainer::train_batch`.
#[test]
fn one_replica_is_a_plain_run() {
    let mut cfg = config();
    cfg.batch_size = 2;
    let mut dp = DataParallel::new(&cfg, &["cpu".to_string()]).unwrap();
    let mut plain = Trainer::new(cfg).unwrap();
    for (i, x) in batches().iter().enumerate() {
        let (a, b) = (
            dp.train_batch(x, i).unwrap(),
            plain.train_batch(x, i).unwrap(),
        );
        same_bits(a.ae_loss, b.ae_loss, "ae_loss");
    }
    assert_eq!(weights(dp.replica(0).unwrap()), weights(&mut plain));
}

#[test]
fn an_uneven_batch_is_refused() {
    let devices = vec!["cpu".to_string(), "cpu".to_string()];
    let mut dp = DataParallel::new(&config(), &devices).unwrap();
    let err = dp.train_batch(&image(&batch(1), 0), 0).unwrap_err();
    assert!(
        err.to_string().contains("cannot be shared equally by 2"),
        "{err}"
    );
}

/// Two replicas on one GPU (threads sharing the device, as replicas on separate GPUs do not
/// share it) against two on the CPU: the same steps to f32-rounding tolerance, and the GPU
/// replicas identical to each other, bit for bit. Skipped without a GPU.
#[test]
fn cuda_replicas_follow_the_cpu_replicas() {
    if !common::gpu::gpu_or_skip() {
        return;
    }
    let run = |device: &str| {
        let devices = vec![device.to_string(), device.to_string()];
        let mut dp = DataParallel::new(&config(), &devices).unwrap();
        let logs: Vec<StepLog> = batches()
            .iter()
            .enumerate()
            .map(|(i, x)| dp.train_batch(x, i).unwrap())
            .collect();
        (dp, logs)
    };
    let (_, cpu) = run("cpu");
    let (mut gpu, on_gpu) = run("cuda:0");
    for (i, (g, c)) in on_gpu.iter().zip(&cpu).enumerate() {
        assert_eq!(g.kind, c.kind, "step {i}");
        for (name, a, b) in [
            ("ae_loss", g.ae_loss, c.ae_loss),
            ("disc_loss", g.disc_loss, c.disc_loss),
        ] {
            let e = (a as f64 - b as f64).abs() / (b as f64).abs().max(1e-12);
            assert!(e < 1e-3, "step {i} {name}: {a} vs {b} (rel {e:.2e})");
        }
    }
    let lead = weights(gpu.replica(0).unwrap());
    assert_eq!(
        lead,
        weights(gpu.replica(1).unwrap()),
        "GPU replicas drifted apart"
    );
}

/// A checkpoint records its replica count, and a resume on another count keeps the position
/// in the epoch in images: 5 global batches of 2 replicas are 10 batches of one.
#[test]
fn resuming_on_another_replica_count_keeps_the_position_in_images() {
    let devices = vec!["cpu".to_string(), "cpu".to_string()];
    let dir = temp("recount");
    let mut dp = DataParallel::new(&config(), &devices).unwrap();
    for (i, x) in batches().iter().enumerate().take(5) {
        dp.train_batch(x, i).unwrap();
    }
    let ckpt = dp.save_checkpoint(&dir, "step-5").unwrap();
    let mut one = Trainer::new(config()).unwrap();
    let written_by = one.resume_from(&ckpt).unwrap();
    assert_eq!((written_by, one.replicas), (2, 1));
    assert_eq!((one.global_step, one.batch_in_epoch), (5, 10));
    let mut two = DataParallel::new(&config(), &devices).unwrap();
    let written_by = two.resume_from(&ckpt).unwrap();
    assert_eq!((written_by, two.lead().batch_in_epoch), (2, 5));
    std::fs::remove_dir_all(&dir).ok();
}

/// Stage 2 on two replicas (the latent head against the BiomedCLIP tower): the replicas
/// stay identical and the loss falls.
#[test]
fn stage2_replicas_stay_identical_and_learn() {
    let dir = temp("stage2");
    let mut s1 = Trainer::new(config()).unwrap();
    s1.train_batch(&image(&batch(21), 0), 0).unwrap();
    let ckpt = s1.save_checkpoint(&dir, "best").unwrap();
    let mut cfg = config();
    cfg.stage2 = true;
    cfg.stage2_ckpt = Some(ckpt);
    cfg.biomedclip_weights = Some(common::train::tiny_tower_file(&dir));
    cfg.biomedclip_heads = 2;
    cfg.gradient_accumulation_steps = 1;
    cfg.base_learning_rate = 1e-3;
    let devices = vec!["cpu".to_string(), "cpu".to_string()];
    let mut dp = DataParallel::new(&cfg, &devices).unwrap();
    let x = batch(22);
    let first = dp.train_batch(&x, 0).unwrap().ae_loss;
    let mut last = first;
    for i in 1..15 {
        last = dp.train_batch(&x, i).unwrap().ae_loss;
    }
    assert!(last < first, "stage-2 loss went from {first} to {last}");
    let lead = weights(dp.replica(0).unwrap());
    assert_eq!(
        lead,
        weights(dp.replica(1).unwrap()),
        "replicas drifted apart"
    );
    std::fs::remove_dir_all(&dir).ok();
}
