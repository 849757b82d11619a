//! Times the CUDA kernels on MedVAE's shapes (for scripts/gpu-check.sh):
//! 3x3 convolutions 128->128 @256^2, 256->256 @128^2, 512->512 @64^2 (forward, data and weight
//! gradients) in TF32 and BF16 (staged and streamed kernels of each), and the streamed BF16 ones on
//! every block tile ("tiles": the defaults and the tuning candidates); mid-block attention (512
//! channels, 4096 and 9216 tokens), forward and backward; GroupNorm+SiLU forward and backward;
//! the convolutions with a side of 1-4 channels ("thin": image in/out, LPIPS' and the PatchGAN's
//! first layers) in BF16 on the thin SIMT kernels and on the tensor-core ones.
//!
//!   cargo run --release -p medvae-runtime --example cuda_bench -- [--batch 8] [--reps 10]
//!       [--json out.json] [--only conv,tiles,attention,groupnorm,thin]
//! Prints one line per measurement (median of `reps` after 2 warm-ups) and, with --json, writes
//! them as a JSON array. Without a GPU it prints "skipped: <reason>" and exits 0.

use medvae_kernels::cpu::conv::ConvGeometry;
use medvae_kernels::cpu::group_norm::GroupNormDims;
use medvae_runtime::cuda::ops::attention::{
    attention_backward, attention_forward, AttnDims, AttnOperand,
};
use medvae_runtime::cuda::ops::conv::{
    conv_backward_data, conv_backward_weight, conv_forward, ConvPrecision,
};
use medvae_runtime::cuda::ops::conv_bf16::set_streamed;
use medvae_runtime::cuda::ops::conv_plan::{set_forward_tile, set_wgrad_tile, STREAMED_TILES};
use medvae_runtime::cuda::ops::conv_tf32::{set_streamed_tf32, streamed_tf32};
use medvae_runtime::cuda::ops::conv_thin;
use medvae_runtime::cuda::ops::conv_wgmma::{self, WgmmaMode};
use medvae_runtime::cuda::ops::norm::{group_norm_backward, group_norm_forward};
use medvae_runtime::cuda::{CudaDevice, CudaResult, DeviceBuffer};
use std::time::Instant;

struct Opts {
    batch: usize,
    reps: usize,
    json: Option<String>,
    only: Option<Vec<String>>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        batch: 8,
        reps: 10,
        json: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--batch" => o.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--reps" => o.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--json" => o.json = Some(val()?),
            "--only" => o.only = Some(val()?.split(',').map(str::to_string).collect()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

struct Record {
    name: String,
    ms: f64,
    tflops: Option<f64>,
}

/// Median milliseconds of `f` (device-synchronised) after two warm-ups.
fn time(dev: &CudaDevice, reps: usize, mut f: impl FnMut() -> CudaResult<()>) -> CudaResult<f64> {
    for _ in 0..2 {
        f()?;
    }
    dev.synchronize()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    Ok(ts[ts.len() / 2])
}

fn random(dev: &CudaDevice, n: usize, seed: u64) -> CudaResult<DeviceBuffer> {
    // Cheap deterministic pseudo-random values in [-1, 1).
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    dev.upload(&v)
}

fn report(out: &mut Vec<Record>, name: String, ms: f64, flops: Option<f64>) {
    let tflops = flops.map(|f| f / (ms * 1e-3) / 1e12);
    match tflops {
        Some(t) => println!("{name:<48} {ms:>9.3} ms  {t:>7.1} TFLOP/s"),
        None => println!("{name:<48} {ms:>9.3} ms"),
    }
    out.push(Record { name, ms, tflops });
}

/// The 3x3 convolutions of the autoencoder's three widest levels, with their operands.
struct ConvProblem {
    c: usize,
    s: usize,
    g: ConvGeometry,
    x: DeviceBuffer,
    w: DeviceBuffer,
    b: DeviceBuffer,
    y: DeviceBuffer,
    dy: DeviceBuffer,
    dx: DeviceBuffer,
    dw: DeviceBuffer,
}

fn conv_problems(dev: &CudaDevice, batch: usize) -> CudaResult<Vec<ConvProblem>> {
    [(128usize, 256usize), (256, 128), (512, 64)]
        .iter()
        .map(|&(c, s)| {
            let g = ConvGeometry::conv2d(batch, [s, s], c, c, 3, 1, 1);
            Ok(ConvProblem {
                c,
                s,
                x: random(dev, g.input_len(), 1)?,
                w: random(dev, g.weight_len(), 2)?,
                b: random(dev, c, 3)?,
                y: dev.alloc_f32(g.output_len())?,
                dy: random(dev, g.output_len(), 4)?,
                dx: dev.alloc_f32(g.input_len())?,
                dw: dev.zeros_f32(g.weight_len())?,
                g,
            })
        })
        .collect()
}

/// Forward, data and weight gradient of `p` at `prec`, reported as `{tag} fwd` etc.
fn time_conv_passes(
    dev: &CudaDevice,
    o: &Opts,
    p: &ConvProblem,
    prec: ConvPrecision,
    tag: &str,
    out: &mut Vec<Record>,
) -> CudaResult<()> {
    let flops = 2.0 * (p.g.output_len() as f64) * (9 * p.c) as f64;
    let ms = time(dev, o.reps, || {
        conv_forward(dev, &p.g, prec, &p.x, &p.w, Some(&p.b), &p.y, 0.0)
    })?;
    report(out, format!("{tag} fwd"), ms, Some(flops));
    let ms = time(dev, o.reps, || {
        conv_backward_data(dev, &p.g, prec, &p.dy, &p.w, &p.dx, 0.0)
    })?;
    report(out, format!("{tag} dgrad"), ms, Some(flops));
    let ms = time(dev, o.reps, || {
        conv_backward_weight(dev, &p.g, prec, &p.x, &p.dy, &p.dw, None)
    })?;
    report(out, format!("{tag} wgrad"), ms, Some(flops));
    Ok(())
}

/// The model's convolutions with a thin side, BF16, forward and both gradients, on the thin
/// SIMT kernels and on the tensor-core (staged) ones: the kernel-level A/B of `conv_thin.cu`.
fn bench_thin(dev: &CudaDevice, o: &Opts, out: &mut Vec<Record>) -> CudaResult<()> {
    let b = o.batch;
    let shapes = [
        (
            "conv_in 1->128 256x256",
            ConvGeometry::conv2d(b, [256, 256], 1, 128, 3, 1, 1),
        ),
        (
            "conv_out 128->1 256x256",
            ConvGeometry::conv2d(b, [256, 256], 128, 1, 3, 1, 1),
        ),
        (
            "lpips 3->64 224x224",
            ConvGeometry::conv2d(2 * b, [224, 224], 3, 64, 3, 1, 1),
        ),
        (
            "patchgan 1->64 k4s2 256x256",
            ConvGeometry::conv2d(b, [256, 256], 1, 64, 4, 2, 1),
        ),
    ];
    let was_on = conv_thin::enabled();
    for (name, g) in shapes {
        let taps = g.kernel.iter().product::<usize>();
        let flops = 2.0 * (g.output_len() * taps * g.cin) as f64;
        let (x, w, dy) = (
            random(dev, g.input_len(), 1)?,
            random(dev, g.weight_len(), 2)?,
            random(dev, g.output_len(), 4)?,
        );
        let (y, dx, dw) = (
            dev.alloc_f32(g.output_len())?,
            dev.alloc_f32(g.input_len())?,
            dev.zeros_f32(g.weight_len())?,
        );
        for (thin, label) in [(true, "thin"), (false, "tensor cores")] {
            conv_thin::set_enabled(thin);
            let tag = format!("{name} b{b} Bf16 {label}");
            let prec = ConvPrecision::Bf16;
            let ms = time(dev, o.reps, || {
                conv_forward(dev, &g, prec, &x, &w, None, &y, 0.0)
            })?;
            report(out, format!("{tag} fwd"), ms, Some(flops));
            let ms = time(dev, o.reps, || {
                conv_backward_data(dev, &g, prec, &dy, &w, &dx, 0.0)
            })?;
            report(out, format!("{tag} dgrad"), ms, Some(flops));
            let ms = time(dev, o.reps, || {
                conv_backward_weight(dev, &g, prec, &x, &dy, &dw, None)
            })?;
            report(out, format!("{tag} wgrad"), ms, Some(flops));
        }
    }
    conv_thin::set_enabled(was_on);
    Ok(())
}

fn bench_conv(dev: &CudaDevice, o: &Opts, out: &mut Vec<Record>) -> CudaResult<()> {
    for p in &conv_problems(dev, o.batch)? {
        // BF16 and TF32 twice each, side by side: the staged kernels (f32 operands rounded
        // while staging) and the streamed ones (cp.async pipeline; bf16 operands, which the
        // launchers pick by default, or f32 operands rounded from shared memory, which
        // MEDVAE_CONV_TF32=streamed picks until measured).
        let tf32_default = streamed_tf32();
        for (prec, streamed, label) in [
            (ConvPrecision::Tf32, false, "Tf32 staged"),
            (ConvPrecision::Tf32, true, "Tf32 streamed"),
            (ConvPrecision::Bf16, false, "Bf16 staged"),
            (ConvPrecision::Bf16, true, "Bf16"),
        ] {
            set_streamed(prec != ConvPrecision::Bf16 || streamed);
            set_streamed_tf32(prec == ConvPrecision::Tf32 && streamed);
            let tag = format!(
                "conv3x3 {c}->{c} {s}x{s} b{} {label}",
                o.batch,
                c = p.c,
                s = p.s
            );
            time_conv_passes(dev, o, p, prec, &tag, out)?;
        }
        set_streamed_tf32(tf32_default);
    }
    Ok(())
}

/// The streamed BF16 convolutions on every block tile (`conv_plan::STREAMED_TILES`: the
/// defaults and the tuning candidates), to pick the defaults for a card.
fn bench_tiles(dev: &CudaDevice, o: &Opts, out: &mut Vec<Record>) -> CudaResult<()> {
    set_streamed(true);
    // The mma.sync tiles first, with the wgmma kernels (the default on compute capability 9.0)
    // out of the way, then the wgmma kernels in each mode; the default comes back last.
    let default_mode = conv_wgmma::mode();
    conv_wgmma::set_mode(WgmmaMode::Off);
    for p in &conv_problems(dev, o.batch)? {
        for tile in STREAMED_TILES {
            set_forward_tile(Some(tile.name))?;
            set_wgrad_tile(Some(tile.name))?;
            let tag = format!(
                "conv3x3 {c}->{c} {s}x{s} b{} Bf16 tile {}",
                o.batch,
                tile.name,
                c = p.c,
                s = p.s
            );
            time_conv_passes(dev, o, p, ConvPrecision::Bf16, &tag, out)?;
        }
    }
    set_forward_tile(None)?;
    set_wgrad_tile(None)?;
    // The wgmma kernels (compute capability 9.0 only): forward, stride-1 data gradient and
    // weight gradient in each mode (on and overlap share the weight gradient).
    let arch = dev.arch();
    if (arch.major, arch.minor) == (9, 0) {
        for p in &conv_problems(dev, o.batch)? {
            for (mode, name) in [
                (WgmmaMode::On, "wgmma"),
                (WgmmaMode::Overlap, "wgmma-overlap"),
                (WgmmaMode::OverlapAll, "wgmma-overlap-all"),
                (WgmmaMode::TwoBlocks, "wgmma-s3"),
            ] {
                conv_wgmma::set_mode(mode);
                let tag = format!(
                    "conv3x3 {c}->{c} {s}x{s} b{} Bf16 tile {name}",
                    o.batch,
                    c = p.c,
                    s = p.s
                );
                time_conv_passes(dev, o, p, ConvPrecision::Bf16, &tag, out)?;
            }
        }
    }
    conv_wgmma::set_mode(default_mode);
    Ok(())
}

/// A dense `[batch, tokens, c]` attention operand.
fn dense(b: &DeviceBuffer, tokens: usize, c: usize) -> AttnOperand<'_> {
    AttnOperand::dense(b, tokens, c)
}

fn bench_attention(dev: &CudaDevice, o: &Opts, out: &mut Vec<Record>) -> CudaResult<()> {
    let c = 512;
    for &(tokens, batch) in &[(4096usize, o.batch), (9216, 1)] {
        let d = AttnDims {
            batch,
            heads: 1,
            tq: tokens,
            tk: tokens,
            head_dim: c,
            scale: 1.0 / (c as f32).sqrt(),
        };
        let n = batch * tokens * c;
        let (q, k, v, dout) = (
            random(dev, n, 5)?,
            random(dev, n, 6)?,
            random(dev, n, 7)?,
            random(dev, n, 8)?,
        );
        let (o_, lse) = (dev.alloc_f32(n)?, dev.alloc_f32(batch * tokens)?);
        let (dq, dk, dv) = (dev.alloc_f32(n)?, dev.alloc_f32(n)?, dev.alloc_f32(n)?);
        let flops = 4.0 * (batch * tokens * tokens * c) as f64;
        let tag = format!("attention {tokens} tokens x{c} b{batch}");
        let ms = time(dev, o.reps.min(5), || {
            attention_forward(
                dev,
                &d,
                dense(&q, tokens, c),
                dense(&k, tokens, c),
                dense(&v, tokens, c),
                dense(&o_, tokens, c),
                &lse,
            )
        })?;
        report(out, format!("{tag} fwd"), ms, Some(flops));
        let ms = time(dev, o.reps.min(5), || {
            attention_backward(
                dev,
                &d,
                dense(&q, tokens, c),
                dense(&k, tokens, c),
                dense(&v, tokens, c),
                dense(&o_, tokens, c),
                dense(&dout, tokens, c),
                &lse,
                dense(&dq, tokens, c),
                dense(&dk, tokens, c),
                dense(&dv, tokens, c),
                0.0,
            )
        })?;
        report(out, format!("{tag} bwd"), ms, Some(2.5 * flops));
    }
    Ok(())
}

fn bench_groupnorm(dev: &CudaDevice, o: &Opts, out: &mut Vec<Record>) -> CudaResult<()> {
    for &(c, s) in &[(128usize, 256usize), (256, 128), (512, 64)] {
        let d = GroupNormDims {
            n: o.batch,
            spatial: s * s,
            channels: c,
            groups: 32,
            eps: 1e-6,
        };
        let (x, g, b, dy) = (
            random(dev, d.len(), 9)?,
            random(dev, c, 10)?,
            random(dev, c, 11)?,
            random(dev, d.len(), 12)?,
        );
        let (y, mean, rstd, dx) = (
            dev.alloc_f32(d.len())?,
            dev.alloc_f32(d.stats_len())?,
            dev.alloc_f32(d.stats_len())?,
            dev.alloc_f32(d.len())?,
        );
        let (dg, db) = (dev.zeros_f32(c)?, dev.zeros_f32(c)?);
        let tag = format!("groupnorm+silu c{c} {s}x{s} b{}", o.batch);
        let ms = time(dev, o.reps, || {
            group_norm_forward(dev, &d, true, &x, Some(&g), Some(&b), &y, &mean, &rstd)
        })?;
        report(out, format!("{tag} fwd"), ms, None);
        let ms = time(dev, o.reps, || {
            group_norm_backward(
                dev,
                &d,
                true,
                &x,
                Some(&g),
                Some(&b),
                &mean,
                &rstd,
                &dy,
                &dx,
                Some(&dg),
                Some(&db),
                0.0,
            )
        })?;
        report(out, format!("{tag} bwd"), ms, None);
    }
    Ok(())
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let dev = match CudaDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    println!(
        "{} ({}), {} SMs",
        dev.info().name,
        dev.arch(),
        dev.sm_count()
    );
    let t0 = Instant::now();
    if let Err(e) = dev.load_all_kernels() {
        eprintln!("error: loading kernels: {e}");
        std::process::exit(1);
    }
    println!("kernels loaded in {:.1} s", t0.elapsed().as_secs_f64());
    let want = |s: &str| o.only.as_ref().is_none_or(|l| l.iter().any(|x| x == s));
    let mut out = Vec::new();
    let mut failed = false;
    type Bench = fn(&CudaDevice, &Opts, &mut Vec<Record>) -> CudaResult<()>;
    let benches: [(&str, Bench); 5] = [
        ("conv", bench_conv),
        ("attention", bench_attention),
        ("groupnorm", bench_groupnorm),
        // Last: the candidate tiles, wgmma forms and thin kernels that have not run on a card
        // yet; a fault would end the process.
        ("tiles", bench_tiles),
        ("thin", bench_thin),
    ];
    for (name, f) in benches {
        if want(name) {
            if let Err(e) = f(&dev, &o, &mut out) {
                eprintln!("error: {name}: {e}");
                failed = true;
            }
        }
    }
    let m = dev.memory();
    println!(
        "peak device memory {:.2} GiB, {} driver allocations",
        m.peak_bytes as f64 / (1u64 << 30) as f64,
        m.driver_allocations
    );
    if let Some(path) = &o.json {
        let items: Vec<String> = out
            .iter()
            .map(|r| {
                let t = r.tflops.map_or("null".to_string(), |t| format!("{t:.3}"));
                format!(
                    "{{\"name\": \"{}\", \"ms\": {:.4}, \"tflops\": {t}}}",
                    r.name, r.ms
                )
            })
            .collect();
        if let Err(e) = std::fs::write(path, format!("[\n  {}\n]\n", items.join(",\n  "))) {
            eprintln!("error: writing {path}: {e}");
        }
    }
    if failed {
        std::process::exit(1);
    }
}
