//! `medvae-fast data split|prepare|inspect`: split a folder of images into the CSV a data
//! config names, decode datasets once into memory-mappable shards, and look at what was
//! written. The work lives in `medvae_runtime::data`; this module parses
//! arguments, reads the YAML config, draws the progress bar and prints summaries.
//! See docs/DATA.md.

mod config;
mod contact_sheet;
pub mod fingerprint;
mod inspect;
mod prepare;
mod split;

pub use inspect::InspectArgs;
#[cfg(test)]
pub use prepare::DtypeArg;
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
    /// Write the train/val/test CSV (and a data config) for a folder tree of images, split by
    /// patient folder.
    Split(split::SplitArgs),
    /// Decode every image of the datasets once into shards per split (f16 or f32).
    Prepare(PrepareArgs),
    /// Print per-split counts, shapes and value statistics of a prepared folder; optionally
    /// write a PNG contact sheet.
    Inspect(InspectArgs),
}

/// An error and its causes as one line, leaving out each cause whose text its parent already
/// quotes (the library errors name their cause in their own message, so printing the whole
/// chain would repeat it).
pub(crate) fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// `data prepare` with these arguments (used by `finetune` to prepare on first use).
pub fn run_prepare(args: &PrepareArgs) -> Result<ExitCode> {
    prepare::run(args)
}

/// Run a `data` subcommand.
pub fn run(args: DataArgs) -> Result<ExitCode> {
    match args.command {
        DataCommand::Split(a) => split::run(&a),
        DataCommand::Prepare(a) => prepare::run(&a),
        DataCommand::Inspect(a) => inspect::run(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;
    use std::fmt;

    /// An error with a fixed message and an optional cause.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn quoted_causes_are_not_repeated() {
        let fire = || Some(Box::new(E("disk on fire", None)));
        let quoting = E("reading a.png: disk on fire", fire());
        assert_eq!(error_line(&quoting), "reading a.png: disk on fire");
        let silent = E("reading b.png", fire());
        assert_eq!(error_line(&silent), "reading b.png: disk on fire");
        let two = E("prepare failed", Some(Box::new(E("reading c.png", fire()))));
        assert_eq!(
            error_line(&two),
            "prepare failed: reading c.png: disk on fire"
        );
    }
}
