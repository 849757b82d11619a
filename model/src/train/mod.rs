//! Finetuning: the configuration, the stage-1 training loop, validation metrics and the
//! run checkpoints. The CLI (`medvae-fast finetune`) adds data preparation, progress and logs.

pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod parallel;
pub mod stage2;
pub mod trainer;

pub use config::TrainConfig;
pub use parallel::DataParallel;
pub use trainer::{StepKind, StepLog, Trainer, Update, ValidationLog};
