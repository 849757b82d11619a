//! `medvae-fast bench`: time the model workloads (see `medvae_model::workloads`) and print one
//! JSON line in the format of `shared/bench/torch_baseline.py`, so the two can be compared
//! side by side (scripts/bench-model.sh does that).

use anyhow::{bail, Context, Result};
use clap::Args;
use medvae_model::layer::Parameters;
use medvae_model::vit::VitConfig;
use medvae_model::workloads::{AeWorkload, Stage1Workload, Stage2Workload};
use medvae_model::zoo::zoo_config;
use medvae_runtime::collective::all_reduce_mean;
use medvae_runtime::{memory, set_cuda_precision, Device, Tensor};
use serde_json::{json, Map, Value};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// `step`: the stage-1 training step and encode throughput in images/s (the default
    /// times encode and ae_fwd_bwd like torch_baseline.py).
    #[arg(value_parser = ["step"])]
    mode: Option<String>,
    /// Device: cpu, cuda or cuda:N (2D and 3D stage-1 steps both run on CUDA).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CUDA convolution precision: fp32 (direct kernels), tf32 or bf16 (tensor cores, f32
    /// accumulation).
    #[arg(long, default_value = "tf32", value_parser = ["fp32", "tf32", "bf16"])]
    precision: String,
    /// Zoo model (random weights).
    #[arg(long, default_value = "medvae_4_1_2d")]
    model: String,
    /// Spatial size of the input (each axis).
    #[arg(long, default_value_t = 128)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repetitions after the warm-up runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Untimed runs before the timed ones (0 is enough for peak memory, which counts every
    /// run; a slow 3D CPU step is minutes each).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Comma list of workloads: encode, ae_fwd_bwd, stage1_step, all_reduce (the data-parallel
    /// gradient average of two ranks on the device), stage2_step (the latent head
    /// through a ViT-B/16 BiomedCLIP-shaped tower with random weights; models with a latent
    /// head).
    #[arg(long, default_value = "encode,ae_fwd_bwd")]
    only: String,
    /// Recompute block activations in the backward instead of keeping them (the finetune
    /// option `activation_checkpointing`; the reference's 3D model always does this).
    #[arg(long)]
    recompute: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global()?;
    }
    let device: Device = args.device.parse()?;
    device
        .ensure_available()
        .with_context(|| format!("cannot bench on {device}"))?;
    if !device.is_cpu() {
        set_cuda_precision(&args.precision)?;
    }
    let only = if args.mode.as_deref() == Some("step") {
        "encode,stage1_step".to_string()
    } else {
        args.only.clone()
    };
    let cfg = zoo_config(&args.model)?;
    let mut work = AeWorkload::new(&cfg, args.batch, args.size, 0)?;
    work.model.set_recompute(args.recompute);
    work.to_device(device)
        .with_context(|| format!("moving the model to {device}"))?;
    let mut stage1: Option<Stage1Workload> = None;
    let mut stage2: Option<Stage2Workload> = None;
    let mut res = Map::new();
    res.insert("engine".into(), json!("medvae-fast"));
    res.insert("model".into(), json!(args.model));
    res.insert("device".into(), json!(device.to_string()));
    if !device.is_cpu() {
        res.insert("precision".into(), json!(args.precision));
    }
    res.insert("threads".into(), json!(rayon::current_num_threads()));
    res.insert("size".into(), json!(args.size));
    res.insert("batch".into(), json!(args.batch));
    res.insert("recompute".into(), json!(args.recompute));
    let runs = Runs {
        warmup: args.warmup,
        timed: args.reps.max(1),
    };
    for name in only.split(',').map(str::trim) {
        memory::reset_peak();
        device.reset_peak_memory();
        let timing: Result<Map<String, Value>> = match name {
            "encode" => time(device, runs, args.batch, || Ok(work.encode().map(drop)?)),
            "ae_fwd_bwd" => time_step(device, runs, args.batch, name, || Ok(work.fwd_bwd()?)),
            "stage1_step" => {
                if stage1.is_none() {
                    let mut w = Stage1Workload::new(&cfg, args.batch, args.size, 0)?;
                    w.ae.model.set_recompute(args.recompute);
                    w.to_device(device)
                        .with_context(|| format!("moving the stage-1 workload to {device}"))?;
                    stage1 = Some(w);
                }
                let w = stage1.as_mut().context("stage-1 workload")?;
                time_step(device, runs, args.batch, name, || Ok(w.step()?))
            }
            "stage2_step" => {
                if stage2.is_none() {
                    let tower = VitConfig::biomedclip();
                    let mut w = Stage2Workload::new(&cfg, &tower, args.batch, args.size, 0)?;
                    w.to_device(device)
                        .with_context(|| format!("moving the stage-2 workload to {device}"))?;
                    stage2 = Some(w);
                }
                let w = stage2.as_mut().context("stage-2 workload")?;
                time_step(device, runs, args.batch, name, || Ok(w.step()?))
            }
            "all_reduce" => {
                // Two data-parallel ranks on `device`, each holding a gradient for every
                // trainable tensor of the autoencoder (what one optimizer step reduces).
                let mut shapes = Vec::new();
                work.model.visit_params("", &mut |_, p| {
                    if p.trainable && !p.kind.is_buffer() {
                        shapes.push(p.value.shape().to_vec());
                    }
                });
                let rank = |seed: f32| -> Result<Vec<Tensor>> {
                    shapes
                        .iter()
                        .map(|s| {
                            let n = s.iter().product();
                            Ok(Tensor::from_vec(s, vec![seed; n])?.into_device(device)?)
                        })
                        .collect()
                };
                let mut ranks = vec![rank(1.0)?, rank(3.0)?];
                let values: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
                let mut m = time(device, runs, 1, || Ok(all_reduce_mean(&mut ranks)?))?;
                m.remove("img_per_s");
                m.insert("ranks".into(), json!(2));
                m.insert("values_per_rank".into(), json!(values));
                let median = m["median_s"].as_f64().unwrap_or(f64::NAN);
                m.insert(
                    "gb_per_s_per_rank".into(),
                    json!(4.0 * values as f64 / median / 1e9),
                );
                Ok(m)
            }
            other => {
                bail!(
                    "unknown workload `{other}` (encode, ae_fwd_bwd, stage1_step, stage2_step, \
                     all_reduce)"
                )
            }
        };
        let mut timing = timing
            .with_context(|| format!("{name} at batch {} and size {}", args.batch, args.size))?;
        timing.insert(
            "peak_tensor_bytes".into(),
            json!(device.peak_memory().unwrap_or(memory::stats().peak_bytes)),
        );
        res.insert(name.into(), Value::Object(timing));
        if let Some(site) = medvae_runtime::memory_trace::report() {
            eprintln!("{name}: {site}");
        }
    }
    res.insert("max_rss_bytes".into(), json!(max_rss_bytes()));
    println!("{}", Value::Object(res));
    crate::profiles::print();
    Ok(())
}

/// How often to run a workload: untimed warm-ups, then timed runs (at least one).
#[derive(Debug, Clone, Copy)]
struct Runs {
    warmup: usize,
    timed: usize,
}

/// Median seconds of the timed runs after the warm-ups; the device is synchronised before
/// each clock reading, so asynchronous CUDA work is counted in full.
fn time(
    device: Device,
    runs: Runs,
    batch: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Map<String, Value>> {
    for _ in 0..runs.warmup {
        f()?;
    }
    device.synchronize()?;
    let mut ts = Vec::with_capacity(runs.timed);
    for _ in 0..runs.timed {
        let t0 = Instant::now();
        f()?;
        device.synchronize()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    let median = ts[ts.len() / 2];
    let mut m = Map::new();
    m.insert("median_s".into(), json!(median));
    m.insert("min_s".into(), json!(ts[0]));
    m.insert("max_s".into(), json!(ts[ts.len() - 1]));
    m.insert("img_per_s".into(), json!(batch as f64 / median));
    Ok(m)
}

/// [`time`] of a training step `step` (returning its loss), which must stay finite.
fn time_step(
    device: Device,
    runs: Runs,
    batch: usize,
    name: &str,
    mut step: impl FnMut() -> Result<f32>,
) -> Result<Map<String, Value>> {
    time(device, runs, batch, || {
        let loss = step()?;
        if !loss.is_finite() {
            bail!("{name}: loss is {loss}");
        }
        Ok(())
    })
}

/// The process's peak resident memory (Linux `VmHWM`), if known.
fn max_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
