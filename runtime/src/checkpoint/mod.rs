//! Checkpoint IO: PyTorch `torch.save` files (Lightning `.ckpt` with a `state_dict` entry, plain
//! state-dict `.bin`/`.pt`) and safetensors, read into one format-neutral [`StateDict`]; writing
//! safetensors atomically; key comparison against a model; 2D -> 3D inflation.
//!
//! # Safety of reading pickles
//! A `torch.save` file is a zip whose `data.pkl` is a Python pickle, and unpickling a pickle
//! with Python runs whatever callables it names. The reader here is a pickle *interpreter in
//! Rust* that never imports or calls anything: each global is classified by name and "calling"
//! it builds plain data. Globals fall in three tiers:
//!
//! 1. **Interpreted**: `collections.OrderedDict` (and dict-likes), `builtins.set`/`frozenset`/
//!    `bytearray`, `_codecs.encode` (protocol-2 bytes), `torch.Size`, the storage types
//!    (`torch.FloatStorage`, `HalfStorage`, `BFloat16Storage`, `DoubleStorage`, `LongStorage`,
//!    ...), dtypes (`torch.float16`, ...), and the tensor rebuild functions
//!    (`torch._utils._rebuild_tensor[_v2|_v3]`, `_rebuild_parameter[_with_state]`,
//!    `torch._tensor._rebuild_from_type_v2`).
//! 2. **Forbidden**: names that in a pickle can only mean "run code" (`os.*`/`posix.*`,
//!    `subprocess.*`, `builtins.eval`/`exec`/`__import__`/`open`, `runpy`, `importlib`,
//!    `pickle`, `torch.hub`, `torch.jit`, ...). The whole file is refused with
//!    [`CheckpointError::ForbiddenGlobal`], wherever the name occurs: such a file is an attack
//!    or not a checkpoint, and refusing it is the useful answer even though nothing would run.
//! 3. **Anything else** (Lightning's `AttributeDict`, omegaconf containers, `pathlib` paths,
//!    user classes in `hyper_parameters`, ...): an inert placeholder whose contents are
//!    dropped. This is safe because nothing is executed, and it keeps real Lightning checkpoints
//!    loadable. A placeholder is an error ([`CheckpointError::UnknownGlobal`], naming the key
//!    and the global) only where the state dict needs a tensor; elsewhere it is merely listed in
//!    [`LoadedCheckpoint::ignored_globals`].
//!
//! Only the state dict's tensors are read from the archive; optimizer moments and other
//! tensors elsewhere in the file are parsed as views and never materialised.
//!
//! Legacy (pre-1.6, non-zip) `torch.save` streams (LPIPS' `vgg.pth`, older torchvision weights)
//! are read too ([`CheckpointFormat::TorchLegacy`]): the same interpreter and global tiers
//! apply to each of their pickles. Only the oldest tar-based format (PyTorch < 0.1.10) is
//! refused, with a clear message.

mod atomic_write;
pub use atomic_write::write_atomically;
mod error;
mod inflate;
mod pickle;
mod pickle_value;
mod pickled_state;
mod safetensors_io;
mod state_dict;
mod tensor_view;
mod torch_globals;
mod torch_legacy;
mod torch_write;
mod torch_zip;

use std::path::Path;

pub use error::CheckpointError;
pub use inflate::{inflate_2d_to_3d, inflate_2d_to_3d_with_report, InflationReport};
pub use safetensors_io::{
    read_safetensors, safetensors_bytes, save_safetensors, save_safetensors_with, FloatFormat,
    SaveOptions,
};
pub use state_dict::{compare_keys, KeyReport, NamedTensor, StateDict, StoredDType, TensorData};
pub use torch_write::{save_torch, torch_bytes, TorchLayout, TorchSaveOptions};

/// The container a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `torch.save` zip (PyTorch >= 1.6).
    TorchZip,
    /// Legacy `torch.save` stream (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`):
    /// its own variant because the container differs, though the state dict is found and read
    /// exactly as for [`CheckpointFormat::TorchZip`].
    TorchLegacy,
    Safetensors,
}

/// A checkpoint's state dict and what else was learnt while reading it.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    pub state: StateDict,
    pub format: CheckpointFormat,
    /// Top-level entries beside `state_dict` (`epoch`, `optimizer_states`, ...), not loaded.
    pub other_top_level_keys: Vec<String>,
    /// Globals outside the state dict kept as inert placeholders (see the module docs).
    pub ignored_globals: Vec<String>,
    /// Safetensors `__metadata__` (empty for torch files).
    pub metadata: std::collections::HashMap<String, String>,
}

/// Reads the state dict of the checkpoint at `path` (format detected from the content).
pub fn load_checkpoint(path: &Path) -> Result<StateDict, CheckpointError> {
    load_checkpoint_detailed(path).map(|c| c.state)
}

/// [`load_checkpoint`] with the details of [`LoadedCheckpoint`].
pub fn load_checkpoint_detailed(path: &Path) -> Result<LoadedCheckpoint, CheckpointError> {
    let name = path.display().to_string();
    // Read whole rather than memory-mapped: a mapping of a file that another process rewrites
    // (a training run saving `last.ckpt`) is undefined behaviour, and checkpoints fit in RAM.
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        file: name.clone(),
        cause: source,
    })?;
    load_checkpoint_bytes_detailed(&bytes, &name)
}

/// Reads a state dict from checkpoint bytes; `name` identifies the source in errors.
pub fn load_checkpoint_bytes(bytes: &[u8], name: &str) -> Result<StateDict, CheckpointError> {
    load_checkpoint_bytes_detailed(bytes, name).map(|c| c.state)
}

/// [`load_checkpoint_bytes`] with the details of [`LoadedCheckpoint`].
pub fn load_checkpoint_bytes_detailed(
    bytes: &[u8],
    name: &str,
) -> Result<LoadedCheckpoint, CheckpointError> {
    match detect_format(bytes) {
        Detected::TorchZip => {
            let (state, info) = torch_zip::read_torch_zip(name, bytes)?;
            Ok(LoadedCheckpoint {
                state,
                format: CheckpointFormat::TorchZip,
                other_top_level_keys: info.other_top_level_keys,
                ignored_globals: info.ignored_globals,
                metadata: Default::default(),
            })
        }
        Detected::TorchLegacy => {
            let (state, info) = torch_legacy::read_torch_legacy(name, bytes)?;
            Ok(LoadedCheckpoint {
                state,
                format: CheckpointFormat::TorchLegacy,
                other_top_level_keys: info.other_top_level_keys,
                ignored_globals: info.ignored_globals,
                metadata: Default::default(),
            })
        }
        Detected::Safetensors => {
            let (state, metadata) = read_safetensors(name, bytes)?;
            Ok(LoadedCheckpoint {
                state,
                format: CheckpointFormat::Safetensors,
                other_top_level_keys: Vec::new(),
                ignored_globals: Vec::new(),
                metadata,
            })
        }
        Detected::Unrecognized(reason) => Err(CheckpointError::UnrecognizedFormat {
            file: name.to_owned(),
            reason,
        }),
    }
}

enum Detected {
    TorchZip,
    TorchLegacy,
    Safetensors,
    Unrecognized(String),
}

fn detect_format(bytes: &[u8]) -> Detected {
    // Local file header, or the end-of-central-directory record of an empty archive.
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Detected::TorchZip;
    }
    if torch_legacy::looks_legacy(bytes) {
        return Detected::TorchLegacy;
    }
    if let Some(header_len) = bytes.get(..8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    }) {
        if bytes.get(8) == Some(&b'{') && header_len <= (bytes.len() - 8) as u64 {
            return Detected::Safetensors;
        }
    }
    let reason = if bytes.is_empty() {
        "the file is empty".to_owned()
    } else if bytes.get(257..262) == Some(b"ustar") {
        "a tar archive: the oldest torch.save format (PyTorch < 0.1.10) is not supported; \
         re-save it with a current PyTorch (torch.save(torch.load(f), f))"
            .to_owned()
    } else if bytes.first() == Some(&0x80) {
        "a bare pickle, not a torch.save zip archive".to_owned()
    } else if bytes.len() < 8 {
        format!("only {} bytes long", bytes.len())
    } else if bytes.get(8) == Some(&b'{') {
        // A safetensors header that runs past the end: the file was cut short (a copy or
        // download that stopped), which is worth saying plainly.
        format!(
            "a truncated safetensors file: its header alone declares {} bytes, the file has {}",
            u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()).saturating_add(8),
            bytes.len()
        )
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "neither a torch.save zip nor safetensors (starts with {})",
            head.join(" ")
        )
    };
    Detected::Unrecognized(reason)
}
