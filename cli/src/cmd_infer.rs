//! `medvae-fast infer`: images / volumes → latent `.nii.gz` files, as the reference's
//! `medvae_inference` writes them. The work is in `medvae_model::infer`; this is options,
//! progress and the report. A file that fails is reported (name and reason) and the others
//! continue; the exit status is 1 when any failed.

use crate::interrupt;
use crate::model_args::{ModelArgs, WindowArgs};
use crate::outputs::skip_done;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medvae_model::infer::{
    fingerprints, pipelined, plan, settings, write_array, InferOptions, Inferencer, Inferred, Job,
    Modality, OutputKind, Prepared, Provenance, Select, StageTimes,
};
use medvae_runtime::data::volume3d::latent_affine;
use medvae_runtime::Device;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModalityArg {
    Xray,
    Ct,
    Mri,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LatentArg {
    /// The 2D stage-2 latent, channel_proj(channel_ds(z) + z): what the reference writes.
    Head,
    /// The posterior mean z, which `medvae-fast decode` turns back into images.
    Z,
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Input: a .png / .nii / .nii.gz file, or a folder (every file of the model's kind in it).
    #[arg(short = 'i', long = "input")]
    input: PathBuf,
    /// With a folder input: also read its subfolders (not hidden ones, nor the output
    /// folder); the outputs mirror them (IN/sub-01/anat/t1.nii.gz -> OUT/sub-01/anat/t1.nii.gz).
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Output: a folder (one <name>.nii.gz per input), or a .nii.gz / .nii file for one input.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Imaging modality: picks the 3D intensity rule (CT window or MRI min-max).
    #[arg(long, value_enum)]
    modality: ModalityArg,
    /// Also write the reconstruction, <name>_decoded.nii.gz (normalised [-1, 1] intensities).
    #[arg(long)]
    decode: bool,
    /// Which latent to write for 2D models: `head` (the stage-2 latent, the default for models
    /// that have it, as the reference) or `z` (what `medvae-fast decode` reads). 3D latents are
    /// always z.
    #[arg(long, value_enum)]
    latent: Option<LatentArg>,
    /// cpu or cuda[:N]. On CUDA the model runs on the GPU kernels; preprocessing and 3D window
    /// stitching stay on the CPU. A comma list (`cuda:0,cuda:1`) loads the model on each
    /// device and shares the files among them.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Leave out inputs whose outputs already exist (the latent, and with --decode the
    /// reconstruction too): continues an interrupted archive run. Outputs are written whole
    /// or not at all, so an existing one is complete. Each records the weights and options
    /// that made it; outputs of other weights or options are an error, never skipped.
    #[arg(long)]
    skip_existing: bool,
    /// List what the run would read and write (and what it would leave out, or find done with
    /// --skip-existing), then stop: nothing is written.
    #[arg(long)]
    dry_run: bool,
    /// 3D: give the outputs the scan's geometry (its affine, after the RAS reorientation and
    /// the foreground crop; latent voxels at the centres of their f³ blocks), so they overlay
    /// the scan in a viewer. Without it outputs have the identity affine, as the reference's.
    #[arg(long)]
    source_affine: bool,
    #[command(flatten)]
    net: ModelArgs,
    #[command(flatten)]
    window: WindowArgs,
}

pub(crate) fn progress_bar(len: usize) -> ProgressBar {
    // Hidden when stderr is not a terminal: the per-file lines and the summary remain.
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files (ETA {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub(crate) fn check_device(spec: &str, precision: &str) -> Result<Device> {
    let device: Device = spec.parse()?;
    device
        .ensure_available()
        .with_context(|| format!("--device {device}"))?;
    if !device.is_cpu() {
        medvae_runtime::set_cuda_precision(precision)?;
    }
    Ok(device)
}

pub(crate) fn describe(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

pub fn run(args: InferArgs) -> Result<ExitCode> {
    let devices = args
        .device
        .split(',')
        .map(|d| check_device(d.trim(), &args.net.precision))
        .collect::<Result<Vec<Device>>>()?;
    let loaded = args.net.load()?;
    let cfg = loaded.model.config.clone();
    let mut model = loaded.model;
    if args.latent == Some(LatentArg::Head) {
        if cfg.dims != 2 {
            bail!("--latent head: 3D latents are z, as the reference writes them");
        }
        if model.head.is_none() {
            bail!("--latent head: this checkpoint has no stage-2 latent head; its latent is z");
        }
    }
    let weights_fingerprints = fingerprints(&mut model);
    eprintln!(
        "model: {} ({}D, {} in / {} latent channels, {}x downsampling, weights: {})",
        loaded.name.as_deref().unwrap_or("from checkpoint"),
        cfg.dims,
        cfg.in_channels,
        cfg.embed_dim,
        cfg.downsample_factor(),
        loaded.weights
    );
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    let modality = match args.modality {
        ModalityArg::Xray => Modality::Xray,
        ModalityArg::Ct => Modality::Ct,
        ModalityArg::Mri => Modality::Mri,
    };
    let options = |device| InferOptions {
        modality,
        decode: args.decode,
        roi_size: args.window.roi_size,
        overlap: args.window.overlap,
        device,
        latent_z: args.latent == Some(LatentArg::Z),
    };
    // One model per device: the others are copies of the loaded one (the file is read once).
    let mut inferencers = Vec::with_capacity(devices.len());
    for &device in &devices[1..] {
        inferencers.push(Inferencer::new(model.replicate()?, options(device))?);
    }
    inferencers.insert(0, Inferencer::new(model, options(devices[0]))?);
    let mut plan = plan(
        &args.input,
        &args.output,
        Select::scans(inferencers[0].reads(), args.recursive),
        args.decode,
    )?;
    plan.check_inputs_kept()?;
    // What every output records about the run that made it (see `provenance`).
    let precision = args.net.precision_on(&devices);
    let rule = if modality == Modality::Ct {
        "ct"
    } else {
        "mri"
    };
    if args.source_affine && cfg.dims != 3 {
        bail!("--source-affine: only volumes (3D models) have a geometry to carry");
    }
    let mut run_settings = settings(
        cfg.dims,
        rule,
        args.window.roi_size,
        args.window.overlap,
        precision,
    );
    if args.source_affine {
        // Not a number the model computes, but the files differ: --skip-existing tells them apart.
        run_settings.push_str(" aff");
    }
    let made_by = Outputs {
        latent: Provenance::new(
            inferencers[0].latent_kind(),
            weights_fingerprints,
            &run_settings,
        )
        .descrip(),
        decoded: Provenance::new(OutputKind::Decoded, weights_fingerprints, &run_settings)
            .descrip(),
        source_affine: args.source_affine.then(|| cfg.downsample_factor()),
    };
    let already_done = if args.skip_existing {
        skip_done(&mut plan, "file(s) already have their outputs", |job| {
            if job.conflict.is_some() {
                return None;
            }
            let mut outputs = vec![(job.latent.clone(), made_by.latent.clone())];
            if let Some(d) = &job.decoded {
                outputs.push((d.clone(), made_by.decoded.clone()));
            }
            Some(outputs)
        })?
    } else {
        0
    };
    report_skipped(&plan.skipped, &plan.ours, cfg.dims);
    if args.dry_run {
        for job in &plan.jobs {
            let decoded = job
                .decoded
                .as_ref()
                .map(|d| format!(" + {}", d.display()))
                .unwrap_or_default();
            match &job.conflict {
                Some(c) => println!("would fail {}: {c}", job.input.display()),
                None => println!(
                    "would write {} -> {}{decoded}",
                    job.input.display(),
                    job.latent.display()
                ),
            }
        }
        println!(
            "infer --dry-run: {} file(s) to run, {already_done} already done, {} skipped; \
             nothing written",
            plan.jobs.len(),
            plan.left_out()
        );
        return Ok(ExitCode::SUCCESS);
    }
    plan.create_folders()?;

    let t0 = Instant::now();
    let bar = progress_bar(plan.jobs.len());
    let failed = Mutex::new(Vec::new());
    // Each device takes the next file not yet taken; one device goes through them in order.
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    // Ctrl-C / SIGTERM: every device finishes its file, then the summary says how to go on.
    interrupt::install();
    // Per device, the next file is read and the last one written while the model runs
    // (`pipelined`): on a GPU those, not the model, would otherwise take most of the time.
    let work = |inferencer: &mut Inferencer| {
        let preparer = inferencer.preparer();
        pipelined(
            || plan.jobs.get(next.fetch_add(1, Ordering::Relaxed)),
            |job: &&Job| -> Result<Prepared> {
                if let Some(c) = &job.conflict {
                    bail!("{c}");
                }
                Ok(preparer.prepare_file(&job.input)?)
            },
            |job, prepared| {
                if let Some(name) = job.input.file_name() {
                    bar.set_message(name.to_string_lossy().into_owned());
                }
                Ok(inferencer.infer_prepared(&prepared, &job.input)?)
            },
            |job, inferred| {
                let result = inferred.and_then(|out| write_outputs(job, out, &made_by));
                report(&bar, job, &args.input, result, &failed);
                done.fetch_add(1, Ordering::Relaxed);
            },
            || interrupt::requested().is_none(),
        )
    };
    let stages = match inferencers.as_mut_slice() {
        [only] => work(only),
        many => std::thread::scope(|scope| {
            let devices: Vec<_> = many
                .iter_mut()
                .map(|inferencer| scope.spawn(|| work(inferencer)))
                .collect();
            let mut total = StageTimes::default();
            for d in devices {
                total += d
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            }
            total
        }),
    };
    bar.finish_and_clear();
    eprintln!("time in each stage (all devices): {}", stages.line("write"));
    crate::profiles::print();
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    let total = done.into_inner();
    if let Some(signal) = interrupt::requested() {
        println!(
            "infer: stopped by {} after {total} of {} file(s): {} written, {} failed, {:.1} s -> {}",
            interrupt::name(signal),
            plan.jobs.len(),
            total - failed.len(),
            failed.len(),
            t0.elapsed().as_secs_f64(),
            plan.out_dir.display()
        );
        eprintln!("continue with the same command and --skip-existing");
        return Ok(interrupt::exit_code(signal));
    }
    let already = match already_done {
        0 => String::new(),
        n => format!(", {n} already done"),
    };
    println!(
        "infer: {total} file(s): {} written, {} failed, {} skipped{already}, {:.1} s -> {}",
        total - failed.len(),
        failed.len(),
        plan.left_out(),
        t0.elapsed().as_secs_f64(),
        plan.out_dir.display()
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("failed: {}", failed.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// The files of the input folder a run leaves out, on stderr: a line each for the first
/// few of each kind, then how many more (an archive may hold thousands).
pub(crate) fn report_skipped(other_kind: &[PathBuf], ours: &[(PathBuf, OutputKind)], dims: usize) {
    const SHOWN: usize = 10;
    let more = |n: usize, what: &str| {
        if n > SHOWN {
            eprintln!("skipped: ... and {} more {what}", n - SHOWN);
        }
    };
    for s in other_kind.iter().take(SHOWN) {
        eprintln!(
            "skipped: {} (a {dims}D model does not read it)",
            s.display()
        );
    }
    more(other_kind.len(), "file(s) of the other kind");
    for (s, kind) in ours.iter().take(SHOWN) {
        eprintln!(
            "skipped: {} (written by medvae-fast: it holds `{}`, not a scan)",
            s.display(),
            kind.word()
        );
    }
    more(ours.len(), "file(s) written by medvae-fast");
}

/// The line of one file: `ok …` on stdout, or `FAILED …` on stderr (its name kept for the
/// summary: the path below the input folder `root`, as subfolders may repeat file names).
fn report(
    bar: &ProgressBar,
    job: &Job,
    root: &std::path::Path,
    result: Result<Inferred>,
    failed: &Mutex<Vec<String>>,
) {
    match result {
        Ok(out) => bar.suspend(|| {
            println!(
                "ok {} -> {} (input {}, latent {}{})",
                job.input.display(),
                job.latent.display(),
                describe(&out.input_shape),
                describe(&out.latent.shape),
                if out.windows > 1 {
                    format!(", {} windows", out.windows)
                } else {
                    String::new()
                }
            )
        }),
        Err(e) => {
            bar.suspend(|| eprintln!("FAILED {}: {e}", job.input.display()));
            let name = job
                .input
                .strip_prefix(root)
                .ok()
                .filter(|p| !p.as_os_str().is_empty())
                .or_else(|| job.input.file_name().map(std::path::Path::new))
                .unwrap_or(&job.input);
            if let Ok(mut list) = failed.lock() {
                list.push(name.display().to_string());
            }
        }
    }
    bar.inc(1);
}

/// The NIfTI descriptions this run gives its outputs.
struct Outputs {
    latent: String,
    decoded: String,
    /// `--source-affine`: the model's downsampling factor, to place latent voxels.
    source_affine: Option<usize>,
}

/// Write one file's outputs (the writer thread of `pipelined`).
fn write_outputs(job: &Job, out: Inferred, made_by: &Outputs) -> Result<Inferred> {
    // The scan's geometry (`--source-affine`): the reconstruction on the preprocessed grid,
    // the latent on its f-times coarser one. Arrays with a channel axis first keep the identity.
    let image_affine = made_by.source_affine.and(out.affine);
    let latent_affine = made_by
        .source_affine
        .zip(out.affine)
        .map(|(f, a)| latent_affine(&a, f));
    write_array(
        &job.latent,
        &out.latent,
        &made_by.latent,
        latent_affine.as_ref(),
    )?;
    if let (Some(path), Some(dec)) = (&job.decoded, &out.decoded) {
        write_array(path, dec, &made_by.decoded, image_affine.as_ref())?;
    }
    Ok(out)
}
