//! `medvae-fast decode`: `z` latent files (`infer --latent z` for 2D models, `infer` for 3D)
//! back to images, `<name>_decoded.nii.gz` in the normalised [-1, 1] intensities. The work is
//! `medvae_model::infer::LatentDecoder`; this is options, the provenance checks, progress and
//! the report.
//!
//! A latent medvae-fast wrote says what it holds and which encoder made it (its NIfTI
//! description): a file that is not `z` is skipped in a folder (and refused alone), and a `z`
//! from another encoder is refused, since a decoder only inverts its own encoder. Files from
//! elsewhere (the reference's, through nibabel) carry no such record and are decoded when their
//! shape fits.

use crate::cmd_infer::{check_device, describe, progress_bar};
use crate::interrupt;
use crate::model_args::{ModelArgs, WindowArgs};
use crate::outputs::skip_done;
use anyhow::{bail, Result};
use clap::Args;
use medvae_model::infer::{
    decoded_path, fingerprints, pipelined, plan, write_array, Array, Fingerprints, LatentDecoder,
    OutputKind, Provenance, Select,
};
use medvae_runtime::data::volume3d::{
    image_affine_of_latent, read_nifti_array, read_nifti_descrip, NiftiArray, IDENTITY_AFFINE,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Input: a z latent .nii / .nii.gz file, or a folder of them.
    #[arg(short = 'i', long = "input")]
    input: PathBuf,
    /// With a folder input: also read its subfolders (not hidden ones, nor the output
    /// folder); the outputs mirror them.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Output: a folder (one <name>_decoded.nii.gz per latent), or a .nii.gz / .nii file for
    /// one input.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Decode latents that record another encoder than these weights' (refused otherwise).
    #[arg(long)]
    any_encoder: bool,
    /// Leave out latents whose reconstruction already exists, made by these weights from a z
    /// of the same options: continues an interrupted run. Reconstructions made otherwise are
    /// an error, never skipped.
    #[arg(long)]
    skip_existing: bool,
    // --weights: the checkpoint whose encoder made the latents, or a finetune that kept that
    // encoder (as stage 2 does).
    #[command(flatten)]
    net: ModelArgs,
    // --roi-size: the latent is decoded in windows of this size divided by the downsampling
    // factor.
    #[command(flatten)]
    window: WindowArgs,
}

/// How one file went.
enum Outcome {
    Written {
        latent: Vec<usize>,
        image: Vec<usize>,
        windows: usize,
    },
    /// A medvae-fast file that is not z (what it holds).
    NotZ(OutputKind),
}

pub fn run(args: DecodeArgs) -> Result<ExitCode> {
    if args.device.contains(',') {
        bail!(
            "decode runs on one device; --device {} names several",
            args.device
        );
    }
    let device = check_device(&args.device, &args.net.precision)?;
    let loaded = args.net.load()?;
    let mut model = loaded.model;
    let cfg = model.config.clone();
    eprintln!(
        "model: {} ({}D, {} latent channels, {}x downsampling, weights: {})",
        loaded.name.as_deref().unwrap_or("from checkpoint"),
        cfg.dims,
        cfg.embed_dim,
        cfg.downsample_factor(),
        loaded.weights
    );
    let ours = fingerprints(&mut model);
    let mut decoder = LatentDecoder::new(model, device, args.window.roi_size, args.window.overlap)?;

    let mut plan = plan(
        &args.input,
        &args.output,
        Select::latents(args.recursive),
        false,
    )?;
    if !plan.named_output {
        for job in &mut plan.jobs {
            job.latent = decoded_path(&job.latent);
        }
    }
    plan.check_inputs_kept()?;
    let single = !args.input.is_dir();
    let precision = args.net.precision_on(&[device]);
    let already_done = if args.skip_existing {
        skip_done(
            &mut plan,
            "latent(s) already have their reconstruction",
            |job| {
                // A latent whose header cannot be read, or that is not z, is left to the run
                // to report.
                let made_by = Provenance::parse(&read_nifti_descrip(&job.input).ok()?);
                if made_by.as_ref().is_some_and(|p| p.kind != OutputKind::Z) {
                    return None;
                }
                let want = decoded_descrip(made_by, ours, precision);
                Some(vec![(job.latent.clone(), want)])
            },
        )?
    } else {
        0
    };
    plan.create_folders()?;

    let t0 = Instant::now();
    let bar = progress_bar(plan.jobs.len());
    let (mut written, mut failed, mut not_z) = (0, Vec::new(), 0);
    let factor = decoder.factor();
    interrupt::install();
    // The next latent is read and the last reconstruction written while the model decodes
    // (see `pipelined`).
    let mut next = plan.jobs.iter();
    let stages = pipelined(
        || next.next(),
        |job| read_z(&job.input, &args, ours),
        |job, read| {
            if let Some(name) = job.input.file_name() {
                bar.set_message(name.to_string_lossy().into_owned());
            }
            Ok(match read {
                ReadZ::NotZ(kind) => Decoded::NotZ(kind),
                ReadZ::Z(z, made_by) => {
                    let (image, windows) = decoder.decode_array(&z.shape, &z.data, &job.input)?;
                    Decoded::Image {
                        z,
                        made_by,
                        image,
                        windows,
                    }
                }
            })
        },
        |job, decoded| {
            let result = decoded.and_then(|d| write_image(d, &job.latent, factor, ours, precision));
            bar.suspend(|| match result {
                Ok(Outcome::Written {
                    latent,
                    image,
                    windows,
                }) => {
                    written += 1;
                    let windows = if windows > 1 {
                        format!(", {windows} windows")
                    } else {
                        String::new()
                    };
                    println!(
                        "ok {} -> {} (latent {}, image {}{windows})",
                        job.input.display(),
                        job.latent.display(),
                        describe(&latent),
                        describe(&image)
                    );
                }
                Ok(Outcome::NotZ(kind)) if !single => {
                    not_z += 1;
                    eprintln!(
                        "skipped: {} (holds `{}`, not z)",
                        job.input.display(),
                        kind.word()
                    );
                }
                Ok(Outcome::NotZ(kind)) => {
                    eprintln!("FAILED {}: {}", job.input.display(), not_z_message(kind));
                    failed.push(job.input.display().to_string());
                }
                Err(e) => {
                    eprintln!("FAILED {}: {e:#}", job.input.display());
                    failed.push(job.input.display().to_string());
                }
            });
            bar.inc(1);
        },
        || interrupt::requested().is_none(),
    );
    bar.finish_and_clear();
    eprintln!("time in each stage: {}", stages.line("write"));
    crate::profiles::print();
    let already = match already_done {
        0 => String::new(),
        n => format!(", {n} already done"),
    };
    let summary = format!(
        "{written} written, {} failed, {not_z} not z{already}, {:.1} s -> {}",
        failed.len(),
        t0.elapsed().as_secs_f64(),
        plan.out_dir.display()
    );
    if let Some(signal) = interrupt::requested() {
        println!("decode: stopped by {}: {summary}", interrupt::name(signal));
        eprintln!("continue with the same command and --skip-existing");
        return Ok(interrupt::exit_code(signal));
    }
    println!("decode: {} file(s): {summary}", plan.jobs.len());
    if written == 0 && failed.is_empty() && already_done == 0 {
        bail!(
            "nothing decoded: no file in {} holds a z latent (2D models write theirs with \
             `medvae-fast infer --latent z`)",
            args.input.display()
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn not_z_message(kind: OutputKind) -> String {
    match kind {
        OutputKind::Latent => "holds the 2D stage-2 latent, which the decoder does not read; \
                               encode with `medvae-fast infer --latent z`"
            .to_string(),
        other => format!("holds `{}`, not a z latent", other.word()),
    }
}

/// The description of the reconstruction of a z made as `made_by` says: these weights, and
/// the options the z was made with (for a z from elsewhere, the precision).
fn decoded_descrip(made_by: Option<Provenance>, ours: Fingerprints, precision: &str) -> String {
    let settings = made_by.map_or_else(|| precision.to_string(), |p| p.settings);
    Provenance::new(OutputKind::Decoded, ours, &settings).descrip()
}

/// A latent file read (the reader stage).
enum ReadZ {
    /// A medvae-fast file that is not z (what it holds).
    NotZ(OutputKind),
    /// A z, with the record of what made it (none for files from elsewhere).
    Z(Box<NiftiArray>, Option<Provenance>),
}

/// A latent after the model (the device stage).
enum Decoded {
    NotZ(OutputKind),
    Image {
        z: Box<NiftiArray>,
        made_by: Option<Provenance>,
        image: Array,
        windows: usize,
    },
}

/// Read a latent and check that these weights may decode it.
fn read_z(input: &Path, args: &DecodeArgs, ours: Fingerprints) -> Result<ReadZ> {
    let z = read_nifti_array(input)?;
    let made_by = Provenance::parse(&z.descrip);
    if let Some(p) = &made_by {
        if p.kind != OutputKind::Z {
            return Ok(ReadZ::NotZ(p.kind));
        }
        if p.fingerprints.encoder != ours.encoder && !args.any_encoder {
            bail!(
                "this z was made by another encoder (e={:012x}) than these weights' \
                 (e={:012x}); a decoder only inverts its own encoder. Decode with the \
                 weights that encoded it, or pass --any-encoder",
                p.fingerprints.encoder,
                ours.encoder
            );
        }
    }
    Ok(ReadZ::Z(Box::new(z), made_by))
}

/// Write a reconstruction (the writer stage); `factor` is the model's downsampling.
fn write_image(
    decoded: Decoded,
    output: &Path,
    factor: usize,
    ours: Fingerprints,
    precision: &str,
) -> Result<Outcome> {
    let (z, made_by, image, windows) = match decoded {
        Decoded::NotZ(kind) => return Ok(Outcome::NotZ(kind)),
        Decoded::Image {
            z,
            made_by,
            image,
            windows,
        } => (z, made_by, image, windows),
    };
    // A z placed in a scan's space (`infer --source-affine`) gives its image grid to the
    // reconstruction; the reference's identity stays the identity.
    let image_affine = z
        .affine
        .filter(|a| *a != IDENTITY_AFFINE)
        .map(|a| image_affine_of_latent(&a, factor));
    write_array(
        output,
        &image,
        &decoded_descrip(made_by, ours, precision),
        image_affine.as_ref(),
    )?;
    Ok(Outcome::Written {
        latent: z.shape,
        image: image.shape,
        windows,
    })
}
