//! `medvae-fast finetune` end to end through the real binary on the bundled samples: the
//! quickstart config runs and logs finite losses, writes its checkpoints, and a run stopped
//! at `max_steps` and resumed logs exactly the losses of an uninterrupted run. Bad configs are
//! clear errors.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A temporary folder of one test, removed when dropped (also when the test fails).
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-cli-ft-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

/// Run `finetune` on the quickstart config from the repo root with extra overrides.
fn finetune(out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "finetune".to_string(),
        "--config".into(),
        "configs/quickstart_2d.yaml".into(),
        format!("output_dir={}", out.display()),
        format!("dataloader.prepared_dir={}", out.join("prepared").display()),
        "threads=2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
        .current_dir(repo())
        .args(&args)
        .output()
        .expect("run medvae-fast");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn metrics(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train_losses(lines: &[Value]) -> Vec<(u64, String, String)> {
    lines
        .iter()
        .filter(|l| l["split"] == "train")
        .map(|l| {
            (
                l["step"].as_u64().unwrap(),
                l["aeloss"].to_string(),
                l["discloss"].to_string(),
            )
        })
        .collect()
}

#[test]
fn quickstart_runs_logs_and_checkpoints_then_resumes_exactly() {
    let scratch_dir = scratch("quick");
    let base = scratch_dir.path();
    // Uninterrupted: 14 steps, through disc_start (set to 6) into alternating steps.
    let full = base.join("full");
    let common = [
        "max_epoch=3",
        "criterion.disc_start=6",
        "log_every_n_steps=1",
        "ckpt_every_n_steps=4",
        "gradient_accumulation_steps=2",
        "ckpt_every_n_epochs=1",
    ];
    let (ok, err) = finetune(&full, &common);
    assert!(ok, "quickstart failed:\n{err}");
    // Every epoch but the last says how long the rest of the run will take.
    assert_eq!(err.matches(" left\n").count(), 2, "{err}");
    let lines = metrics(&full);
    let losses = train_losses(&lines);
    assert_eq!(losses.len(), 15, "3 epochs of 5 batches: {losses:?}");
    for l in &lines {
        for key in ["aeloss", "rec_loss"] {
            assert!(l[key].as_f64().is_some_and(f64::is_finite), "{key} in {l}");
        }
    }
    assert!(lines.iter().any(|l| l["kind"] == "discriminator"));
    assert_eq!(lines.iter().filter(|l| l["split"] == "valid").count(), 3);
    // Validation logs SSIM beside PSNR (quality::batch_ssim over the 64² samples).
    for l in lines.iter().filter(|l| l["split"] == "valid") {
        let ssim = l["ssim"].as_f64().unwrap_or(f64::NAN);
        assert!(ssim > -1.0 && ssim < 1.0, "ssim in {l}");
    }
    for ck in [
        "best",
        "last",
        "epoch-0000",
        "epoch-0002",
        "step-4",
        "step-12",
    ] {
        for f in ["model.safetensors", "trainer.safetensors"] {
            assert!(
                full.join("checkpoints").join(ck).join(f).is_file(),
                "{ck}/{f}"
            );
        }
    }
    assert!(full.join("previews/epoch-0002.png").is_file());
    assert!(std::fs::read_dir(&full).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("events.out.tfevents")));

    // Interrupted at step 7 (inside epoch 2), then resumed from `last`.
    let part = base.join("part");
    let mut stop = common.to_vec();
    stop.push("max_steps=7");
    let (ok, err) = finetune(&part, &stop);
    assert!(ok, "interrupted run failed:\n{err}");
    let resume = format!(
        "resume_from_ckpt={}",
        part.join("checkpoints/last").display()
    );
    let mut cont = common.to_vec();
    cont.push(&resume);
    let (ok, err) = finetune(&part, &cont);
    assert!(ok, "resumed run failed:\n{err}");
    let resumed = train_losses(&metrics(&part));
    assert_eq!(
        resumed, losses,
        "resumed run's losses differ from the uninterrupted run"
    );
}

#[test]
fn bad_configs_are_clear_errors() {
    let scratch_dir = scratch("bad");
    let out = scratch_dir.path();
    let (ok, err) = finetune(out, &["batchsize=3"]);
    assert!(!ok);
    assert!(
        err.contains("batchsize") && err.contains("batch_size"),
        "{err}"
    );
    let (ok, err) = finetune(out, &["criterion.perceptual_weight=1.0"]);
    assert!(!ok);
    assert!(err.contains("vgg16") || err.contains("VGG16"), "{err}");
    let (ok, err) = finetune(out, &["weights=/nonexistent/model.ckpt"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/model.ckpt"), "{err}");
    let (ok, err) = finetune(out, &["resume_from_ckpt=/nonexistent/last"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/last"), "{err}");
}

/// Running the same command again without `resume_from_ckpt` must not wipe a finished run:
/// it is refused (the checkpoints untouched) until `overwrite=true`, which clears them.
#[test]
fn a_fresh_run_never_replaces_an_earlier_runs_checkpoints_unasked() {
    let scratch_dir = scratch("again");
    let out = scratch_dir.path().join("run");
    let short = ["max_steps=2", "log_every_n_steps=1"];
    let (ok, err) = finetune(&out, &short);
    assert!(ok, "{err}");
    let last = out.join("checkpoints/last/model.safetensors");
    let kept = std::fs::read(&last).unwrap();
    let logged = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();

    let (ok, err) = finetune(&out, &short);
    assert!(!ok, "a second fresh run was allowed:\n{err}");
    for hint in [
        "already holds a run's checkpoints (last)",
        "resume_from_ckpt=auto",
        "overwrite=true",
    ] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
    assert_eq!(std::fs::read(&last).unwrap(), kept);
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        logged
    );

    // overwrite=true starts over, and no checkpoint of the earlier run is left to mix in.
    let stale = out.join("checkpoints/epoch-0099");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::copy(&last, stale.join("model.safetensors")).unwrap();
    let (ok, err) = finetune(&out, &[&short[..], &["overwrite=true"]].concat());
    assert!(ok, "{err}");
    assert!(
        err.contains("removed the earlier run's 2 checkpoint(s)"),
        "{err}"
    );
    assert!(!stale.exists());
    assert!(last.is_file());
    assert_eq!(train_losses(&metrics(&out)).len(), 2);

    // Without a `last` to continue from, the message names the folder to pick one from.
    std::fs::rename(out.join("checkpoints/last"), out.join("checkpoints/kept")).unwrap();
    let (ok, err) = finetune(&out, &short);
    assert!(!ok);
    assert!(
        err.contains("(kept)") && err.contains("checkpoints/NAME"),
        "{err}"
    );
}

#[test]
fn quickstart_3d_runs_through_the_adversarial_phase() {
    let scratch_dir = scratch("q3d");
    let out = scratch_dir.path();
    let o = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
        .current_dir(repo())
        .args([
            "finetune",
            "--config",
            "configs/quickstart_3d.yaml",
            &format!("output_dir={}", out.display()),
            &format!("dataloader.prepared_dir={}", out.join("prepared").display()),
            "max_epoch=3",
            "criterion.disc_start=4",
            "log_every_n_steps=1",
            "threads=2",
        ])
        .output()
        .expect("run medvae-fast");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "3D quickstart failed:\n{err}");
    let lines = metrics(out);
    let train: Vec<&Value> = lines.iter().filter(|l| l["split"] == "train").collect();
    assert_eq!(train.len(), 9, "3 epochs of 3 volumes");
    assert!(train.iter().any(|l| l["kind"] == "discriminator"));
    assert!(train
        .iter()
        .all(|l| l["aeloss"].as_f64().is_some_and(f64::is_finite)));
    assert!(out.join("checkpoints/last/model.safetensors").is_file());
    assert!(out.join("previews/epoch-0002.png").is_file());
}

/// A data config over two of the bundled slices, both in `split` (absolute paths, so the
/// run's current directory does not matter).
fn data_config(dir: &Path, split: &str) -> PathBuf {
    let csv = dir.join("split.csv");
    std::fs::write(
        &csv,
        format!("image_uuid,split\nct_slice_u16.png,{split}\nmr_slice_u8.png,{split}\n"),
    )
    .unwrap();
    let config = dir.join("data.yaml");
    std::fs::write(
        &config,
        format!(
            "datasets:\n  - csv: {}\n    data_dir: {}\n    suffix: \"\"\n    kind: png2d\n    \
             merge_channels: true\n    resize_to: [64, 64]\n",
            csv.display(),
            repo().join("samples/2d").display()
        ),
    )
    .unwrap();
    config
}

/// Without validation images the run trains, says that validation is skipped, and writes
/// `last` and the periodic checkpoints but no NaN metrics and no `best`. Without training
/// images it stops with an error naming the data config.
#[test]
fn runs_without_a_val_split_and_refuses_an_empty_train_split() {
    let scratch_dir = scratch("splits");
    let out = scratch_dir.path();
    let config = data_config(out, "train");
    let (ok, err) = finetune(
        out,
        &[
            &format!("dataloader.config={}", config.display()),
            "max_epoch=2",
            "ckpt_every_n_epochs=1",
            "log_every_n_steps=1",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("holds no validation images"), "{err}");
    let lines = metrics(out);
    assert!(lines.iter().all(|l| l["split"] == "train"), "{lines:?}");
    assert_eq!(lines.len(), 2, "one logged step per epoch: {lines:?}");
    for name in ["last", "epoch-0000", "epoch-0001"] {
        assert!(out.join("checkpoints").join(name).is_dir(), "{name}");
    }
    assert!(!out.join("checkpoints/best").exists());

    let empty = scratch("empty-train");
    let config = data_config(empty.path(), "val");
    let (ok, err) = finetune(
        empty.path(),
        &[&format!("dataloader.config={}", config.display())],
    );
    assert!(!ok);
    assert!(
        err.contains("no training images") && err.contains(&*config.to_string_lossy()),
        "{err}"
    );
}

/// `devices: [cpu, cpu]`: two replicas share each global batch of 2 × batch_size images;
/// an epoch of the 10 bundled training images is 2 steps (the last 2 images, too few for a
/// global batch, are dropped), the losses are finite and the checkpoints are written. Mixing
/// CPU and CUDA replicas is refused.
#[test]
fn data_parallel_replicas_on_the_cpu() {
    let scratch_dir = scratch("dp");
    let out = scratch_dir.path();
    let (ok, err) = finetune(
        out,
        &["devices=[cpu, cpu]", "max_epoch=2", "log_every_n_steps=1"],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("2 data-parallel replicas (cpu, cpu), batch_size 2 each"),
        "{err}"
    );
    let lines = metrics(out);
    let train = train_losses(&lines);
    // 9 training images in global batches of 4: the third batch of each epoch is completed
    // from the start of the epoch instead of dropped.
    assert_eq!(
        train.iter().map(|(step, _, _)| *step).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    assert!(lines
        .iter()
        .filter(|l| l["split"] == "train")
        .all(|l| l["aeloss"].as_f64().is_some_and(f64::is_finite)));
    assert!(out.join("checkpoints/last/model.safetensors").is_file());
    assert!(out.join("checkpoints/best/model.safetensors").is_file());

    let (ok, err) = finetune(out, &["devices=[cpu, cuda:0]"]);
    assert!(!ok);
    assert!(err.contains("cannot be mixed"), "{err}");
}

/// SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption) stops the run after the step in
/// progress with `checkpoints/last` written and exit status 128 + signal; resuming from it
/// gives the losses of a run that was never stopped.
#[cfg(unix)]
#[test]
fn a_signal_stops_after_the_step_and_the_run_resumes_exactly() {
    let scratch_dir = scratch("signal");
    let base = scratch_dir.path();
    let common = [
        "max_epoch=40",
        "criterion.disc_start=6",
        "log_every_n_steps=1",
        "gradient_accumulation_steps=2",
    ];
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let part = base.join(name);
        let child = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
            .current_dir(repo())
            .args([
                "finetune",
                "--config",
                "configs/quickstart_2d.yaml",
                "threads=2",
            ])
            .arg(format!("output_dir={}", part.display()))
            .arg(format!(
                "dataloader.prepared_dir={}",
                base.join("prepared").display()
            ))
            .args(common)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start medvae-fast");
        // Signal once training has logged a few steps (the run would take 200).
        let started = std::time::Instant::now();
        while std::fs::read_to_string(part.join("metrics.jsonl")).map_or(0, |m| m.lines().count())
            < 3
        {
            assert!(
                started.elapsed().as_secs() < 120,
                "{name}: training never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let out = child.wait_with_output().expect("wait for medvae-fast");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + signal), "{name}:\n{err}");
        assert!(
            err.contains(&format!("stopped by {name} at global step")),
            "{err}"
        );
        let stopped_at = train_losses(&metrics(&part)).len() as u64;
        assert!(
            stopped_at < 200,
            "{name}: the run finished before the signal"
        );
        for f in ["model.safetensors", "trainer.safetensors"] {
            assert!(
                part.join("checkpoints/last").join(f).is_file(),
                "{name}: last/{f}"
            );
        }

        // Resume for three more steps, against a run that goes there without stopping. After
        // SIGTERM, as a requeued cluster job would, with the same command and `auto`.
        let until = format!("max_steps={}", stopped_at + 3);
        let resume = match name {
            "SIGTERM" => "resume_from_ckpt=auto".to_string(),
            _ => format!(
                "resume_from_ckpt={}",
                part.join("checkpoints/last").display()
            ),
        };
        let mut cont = common.to_vec();
        cont.extend([until.as_str(), resume.as_str()]);
        let (ok, err) = finetune(&part, &cont);
        assert!(ok, "{name}: resumed run failed:\n{err}");
        assert!(
            err.contains(&format!("at global step {stopped_at} ")),
            "{name}: {err}"
        );
        let full = base.join(format!("{name}-full"));
        let mut straight = common.to_vec();
        straight.extend([until.as_str(), "resume_from_ckpt=auto"]);
        let (ok, err) = finetune(&full, &straight);
        assert!(ok, "{name}: uninterrupted run failed:\n{err}");
        assert!(
            err.contains("does not exist yet, so the run starts fresh"),
            "{err}"
        );
        let want = train_losses(&metrics(&full));
        assert_eq!(want.len() as u64, stopped_at + 3);
        assert_eq!(
            train_losses(&metrics(&part)),
            want,
            "{name}: the resumed run's losses differ from the uninterrupted run"
        );
    }
}
