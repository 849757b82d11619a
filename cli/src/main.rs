//! medvae-fast: MedVAE finetuning and inference on a hand-written tensor runtime.
//! The binary is thin: argument parsing and presentation; the work lives in the libraries.

mod cmd_bench;
mod cmd_convert;
mod cmd_data;
mod cmd_decode;
mod cmd_eval;
mod cmd_finetune;
mod cmd_infer;
mod cmd_kernels;
mod cmd_kernels_sass;
mod cmd_model;
mod cmd_plot;
mod cmd_verify;
mod interrupt;
mod model_args;
mod outputs;
mod profiles;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "medvae-fast",
    version,
    about = "MedVAE finetuning and inference in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the engine against a directory of golden reference cases.
    Verify {
        /// Directory laid out like shared/golden (searched recursively for *.safetensors).
        #[arg(long)]
        golden: PathBuf,
        /// Only cases whose path under DIR starts with this prefix (e.g. `ops/conv`).
        #[arg(long)]
        filter: Option<String>,
        /// Device to run on: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Data pipeline: decode datasets into memory-mapped shards, inspect them.
    Data(cmd_data::DataArgs),
    /// CUDA kernels: list them, or compile every one through NVRTC (no GPU needed).
    Kernels {
        #[command(subcommand)]
        action: KernelsAction,
    },
    /// The published MedVAE models: their parameter keys and shapes.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Convert a checkpoint between torch .ckpt/.bin and .safetensors (same key names).
    Convert(cmd_convert::ConvertArgs),
    /// Finetune a MedVAE from a YAML experiment config (configs/*.yaml) with key=value overrides.
    Finetune(cmd_finetune::FinetuneArgs),
    /// Loss curves of a finetune run as PNGs (RUN_DIR/plots/*.png) from its metrics.jsonl.
    Plot {
        /// The run folder (`output_dir` of the finetune config).
        run_dir: PathBuf,
    },
    /// Time the model workloads (random weights); one JSON line like torch_baseline.py.
    Bench(cmd_bench::BenchArgs),
    /// Images (.png) or volumes (.nii/.nii.gz) to latent .nii.gz files (3D: sliding window).
    Infer(cmd_infer::InferArgs),
    /// z latent files (infer --latent z, or 3D infer) back to images (3D: sliding window).
    Decode(cmd_decode::DecodeArgs),
    /// Reconstruction quality (PSNR, SSIM, MS-SSIM, LPIPS) on images, volumes or a split.
    Eval(cmd_eval::EvalArgs),
}

#[derive(Subcommand)]
enum ModelAction {
    /// Print `key [shape]` for every parameter and buffer of a zoo model, in state_dict order.
    Keys {
        /// medvae_4_1_2d, medvae_4_3_2d, medvae_4_4_2d, medvae_8_1_2d, medvae_8_4_2d,
        /// medvae_4_1_3d or medvae_8_1_3d.
        name: String,
    },
}

#[derive(Subcommand)]
enum KernelsAction {
    /// Every CUDA module with its entry points.
    List,
    /// Compile every kernel for each architecture; fails if any does not compile.
    Compile {
        /// Target architecture, e.g. sm_90 (repeatable; default sm_80 and sm_90).
        #[arg(long = "arch")]
        archs: Vec<String>,
        /// Skip the `ptxas -v` resource report even when ptxas is found.
        #[arg(long)]
        no_ptxas: bool,
        /// Also print each tensor-core kernel's main-loop instruction mix from its SASS (needs
        /// ptxas and nvdisasm): other instructions per MMA, copies, ldmatrix, branches.
        #[arg(long)]
        sass: bool,
        /// Only this module, e.g. conv_bf16 (repeatable; `kernels list` names them).
        #[arg(long = "module")]
        modules: Vec<String>,
        /// Keep each module's PTX, cubin and SASS in this folder.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    restore_sigpipe();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Rust starts with SIGPIPE ignored, so output piped into `head` made every later print panic.
/// With the default action restored the process ends quietly, as other command-line tools do
/// (a checkpoint being written is safe either way: it is renamed into place when complete).
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Verify {
            golden,
            filter,
            device,
        } => cmd_verify::run(&golden, filter, &device),
        Command::Data(args) => cmd_data::run(args),
        Command::Kernels { action } => {
            match action {
                KernelsAction::List => cmd_kernels::run_kernels_list(),
                KernelsAction::Compile {
                    archs,
                    no_ptxas,
                    sass,
                    modules,
                    keep,
                } => cmd_kernels::run_kernels_compile(
                    &archs,
                    &cmd_kernels::CompileOptions {
                        ptxas: !no_ptxas,
                        sass,
                        modules,
                        keep,
                    },
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Model {
            action: ModelAction::Keys { name },
        } => cmd_model::run_model_keys(&name).map(|()| ExitCode::SUCCESS),
        Command::Convert(args) => cmd_convert::run(args).map(|()| ExitCode::SUCCESS),
        Command::Finetune(args) => cmd_finetune::run(args),
        Command::Plot { run_dir } => cmd_plot::run(&run_dir).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => cmd_bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::Infer(args) => cmd_infer::run(args),
        Command::Decode(args) => cmd_decode::run(args),
        Command::Eval(args) => cmd_eval::run(args),
    }
}
