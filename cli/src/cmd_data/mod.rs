//! `medvae-fast data prepare|inspect`: decode datasets once into memory-mappable shards, and
//! look at what was written. The work lives in `medvae_runtime::data`; this module parses
//! arguments, reads the YAML config, draws the progress bar and prints summaries.
//! See docs/DATA.md.

mod config;
mod contact_sheet;
mod inspect;
mod prepare;

pub use config::DataConfig;
pub use inspect::InspectArgs;
pub use prepare::PrepareArgs;

use anyhow::Result;
use std::process::ExitCode;

/// `medvae-fast data …`.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Decode every image of the datasets once into shards per split (f16 or f32).
    Prepare(PrepareArgs),
    /// Print per-split counts, shapes and value statistics of a prepared folder; optionally
    /// write a PNG contact sheet.
    Inspect(InspectArgs),
}

/// Run a `data` subcommand.
pub fn run(args: DataArgs) -> Result<ExitCode> {
    match args.command {
        DataCommand::Prepare(a) => prepare::run(&a),
        DataCommand::Inspect(a) => inspect::run(&a),
    }
}
