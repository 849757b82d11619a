//! medvae-fast: MedVAE finetuning and inference on a hand-written tensor runtime.
//! The binary is thin: argument parsing and presentation; the work lives in the libraries.

mod cmd_verify;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "medvae-fast", version, about = "MedVAE finetuning and inference in one binary")]
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
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Verify { golden, filter, device } => cmd_verify::run(&golden, filter, &device),
    }
}
