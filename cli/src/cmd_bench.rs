//! `medvae-fast bench`: time the model workloads (see `medvae_model::workloads`) and print one
//! JSON line in the format of `shared/bench/torch_baseline.py`, so the two can be compared
//! side by side (scripts/bench-model.sh does that).

use anyhow::{bail, Context, Result};
use clap::Args;
use medvae_model::workloads::{AeWorkload, Stage1Workload};
use medvae_model::zoo::zoo_config;
use medvae_runtime::memory;
use serde_json::{json, Map, Value};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// `step`: the stage-1 training step and encode throughput in images/s (the default
    /// times encode and ae_fwd_bwd like torch_baseline.py).
    #[arg(value_parser = ["step"])]
    mode: Option<String>,
    /// Device: cpu (cuda: the training path is not wired to the CUDA kernels yet).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Zoo model (random weights).
    #[arg(long, default_value = "medvae_4_1_2d")]
    model: String,
    /// Spatial size of the input (each axis).
    #[arg(long, default_value_t = 128)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repetitions after two warm-up runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Comma list of workloads: encode, ae_fwd_bwd, stage1_step.
    #[arg(long, default_value = "encode,ae_fwd_bwd")]
    only: String,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global()?;
    }
    if args.device != "cpu" {
        bail!(
            "bench on `{}`: the model and training path run on the CPU kernels; the CUDA \
             kernels are not wired into it yet (see docs/BENCHMARKS.md)",
            args.device
        );
    }
    let only = if args.mode.as_deref() == Some("step") {
        "encode,stage1_step".to_string()
    } else {
        args.only.clone()
    };
    let cfg = zoo_config(&args.model)?;
    let mut work = AeWorkload::new(&cfg, args.batch, args.size, 0)?;
    let mut stage1: Option<Stage1Workload> = None;
    let mut res = Map::new();
    res.insert("engine".into(), json!("medvae-fast"));
    res.insert("model".into(), json!(args.model));
    res.insert("device".into(), json!("cpu"));
    res.insert("threads".into(), json!(rayon::current_num_threads()));
    res.insert("size".into(), json!(args.size));
    res.insert("batch".into(), json!(args.batch));
    for name in only.split(',').map(str::trim) {
        memory::reset_peak();
        let timing = match name {
            "encode" => time(args.reps, args.batch, || Ok(work.encode().map(drop)?))?,
            "ae_fwd_bwd" => time(args.reps, args.batch, || {
                let loss = work.fwd_bwd()?;
                if !loss.is_finite() {
                    bail!("ae_fwd_bwd: loss is {loss}");
                }
                Ok(())
            })?,
            "stage1_step" => {
                if stage1.is_none() {
                    stage1 = Some(Stage1Workload::new(&cfg, args.batch, args.size, 0)?);
                }
                let w = stage1.as_mut().context("stage-1 workload")?;
                time(args.reps, args.batch, || {
                    let loss = w.step()?;
                    if !loss.is_finite() {
                        bail!("stage1_step: loss is {loss}");
                    }
                    Ok(())
                })?
            }
            other => bail!("unknown workload `{other}` (encode, ae_fwd_bwd, stage1_step)"),
        };
        let mut timing = timing;
        timing.insert(
            "peak_tensor_bytes".into(),
            json!(memory::stats().peak_bytes),
        );
        res.insert(name.into(), Value::Object(timing));
    }
    res.insert("max_rss_bytes".into(), json!(max_rss_bytes()));
    println!("{}", Value::Object(res));
    Ok(())
}

fn time(
    reps: usize,
    batch: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Map<String, Value>> {
    f()?;
    f()?;
    let mut ts = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        f()?;
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

/// The process's peak resident memory (Linux `VmHWM`), if known.
fn max_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
