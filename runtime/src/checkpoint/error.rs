//! Errors of checkpoint reading and writing. Each names the file and, where one is involved,
//! the state-dict key, so that a user with several checkpoints knows which one is broken.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    // The cause is part of the message and deliberately not a `source()`: error chains
    // (`{:#}`) would print it twice.
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },

    #[error("{file}: cannot write: {cause}")]
    Write { file: String, cause: std::io::Error },

    #[error("{file}: not a readable checkpoint: {reason}")]
    UnrecognizedFormat { file: String, reason: String },

    #[error("{file}: corrupt or truncated zip archive: {detail}")]
    Zip { file: String, detail: String },

    #[error("{file}: malformed pickle at byte {offset} of `{record}`: {detail}")]
    BadPickle {
        file: String,
        record: String,
        offset: usize,
        detail: String,
    },

    #[error(
        "{file}: refusing to load: the pickle references `{global}`, which can run code \
         (the file is hostile or not a checkpoint; nothing was executed)"
    )]
    ForbiddenGlobal { file: String, global: String },

    #[error(
        "{file}: key `{key}`: value is an instance of `{global}`, an unknown global (not a \
         tensor this loader can rebuild without running Python code; nothing was executed)"
    )]
    UnknownGlobal {
        file: String,
        key: String,
        global: String,
    },

    #[error("{file}: corrupt or truncated legacy torch.save file: {detail}")]
    LegacyStream { file: String, detail: String },

    #[error("{file}: storage record `{record}` is missing from the archive")]
    MissingStorage { file: String, record: String },

    #[error(
        "{file}: key `{key}`: storage `{record}` holds {available} elements but the tensor \
         view reaches element {needed}"
    )]
    StorageTooShort {
        file: String,
        key: String,
        record: String,
        needed: u128,
        available: usize,
    },

    #[error("{file}: key `{key}`: {detail}")]
    InvalidTensor {
        file: String,
        key: String,
        detail: String,
    },

    #[error("{file}: no state dict found: {detail}")]
    NoStateDict { file: String, detail: String },

    #[error("{file}: key `{key}`: shape mismatch: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        file: String,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{file}: keys do not match the model: {report}")]
    KeyMismatch { file: String, report: String },

    #[error("{file}: key `{key}`: non-finite value {value} at flat index {index}")]
    NonFinite {
        file: String,
        key: String,
        index: usize,
        value: f32,
    },

    #[error("{file}: safetensors: {detail}")]
    Safetensors { file: String, detail: String },
}
