//! Reader for the zip format of `torch.save` (PyTorch >= 1.6): `<archive>/data.pkl` holds the
//! pickled object graph, `<archive>/data/<key>` the raw bytes of each storage, and
//! `<archive>/byteorder` their byte order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::error::CheckpointError;
use super::pickle::{unpickle, PickleError, Unpickled};
use super::pickle_value::{Arena, Object, TensorRef, Value};
use super::state_dict::{NamedTensor, StateDict};
use super::tensor_view::{read_view, ByteOrder, ViewError};

/// What was read from a torch zip checkpoint besides the state dict.
#[derive(Debug, Clone, Default)]
pub struct TorchZipInfo {
    /// Top-level keys of a wrapper dict (`epoch`, `optimizer_states`, ...), when the state dict
    /// sat under `state_dict`; empty for a plain state-dict file.
    pub other_top_level_keys: Vec<String>,
    /// Globals kept as inert placeholders (neither interpreted nor forbidden), e.g. the classes
    /// of Lightning hyper-parameters. Informational: nothing was imported or run.
    pub ignored_globals: Vec<String>,
}

struct Archive<'a> {
    file: &'a str,
    bytes: &'a [u8],
    zip: ZipArchive<Cursor<&'a [u8]>>,
    /// `<archive>/`, the folder that holds `data.pkl`.
    prefix: String,
    order: ByteOrder,
    /// Storages already read, by key (only compressed records need a copy).
    cache: HashMap<String, Cow<'a, [u8]>>,
}

fn zip_error(file: &str, e: ZipError) -> CheckpointError {
    CheckpointError::Zip {
        file: file.to_owned(),
        detail: e.to_string(),
    }
}

impl<'a> Archive<'a> {
    fn open(file: &'a str, bytes: &'a [u8]) -> Result<Self, CheckpointError> {
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_error(file, e))?;
        // torch names the folder after the file it first saved to; find it by its data.pkl.
        let pickle_name = zip
            .file_names()
            .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
            .min_by_key(|n| n.len())
            .map(str::to_owned)
            .ok_or_else(|| CheckpointError::UnrecognizedFormat {
                file: file.to_owned(),
                reason: "zip archive without a `data.pkl` record (not written by torch.save)"
                    .into(),
            })?;
        let prefix = pickle_name[..pickle_name.len() - "data.pkl".len()].to_owned();
        let mut archive = Archive {
            file,
            bytes,
            zip,
            prefix,
            order: ByteOrder::Little,
            cache: HashMap::new(),
        };
        let byteorder_name = format!("{}byteorder", archive.prefix);
        if archive.zip.index_for_name(&byteorder_name).is_some() {
            let order = archive.record(&byteorder_name)?;
            archive.order = match order.trim_ascii() {
                b"little" => ByteOrder::Little,
                b"big" => ByteOrder::Big,
                other => {
                    return Err(CheckpointError::UnrecognizedFormat {
                        file: file.to_owned(),
                        reason: format!("byteorder record `{}`", String::from_utf8_lossy(other)),
                    })
                }
            };
        }
        Ok(archive)
    }

    /// The bytes of a record: borrowed straight from the file when stored uncompressed (as
    /// torch.save does), decompressed otherwise.
    fn record(&mut self, name: &str) -> Result<Cow<'a, [u8]>, CheckpointError> {
        let file = self.file;
        let mut entry = self.zip.by_name(name).map_err(|e| match e {
            ZipError::FileNotFound => CheckpointError::MissingStorage {
                file: file.to_owned(),
                record: name.to_owned(),
            },
            e => zip_error(file, e),
        })?;
        let size = entry.size();
        if entry.compression() == CompressionMethod::Stored {
            let start = entry.data_start();
            let range = usize::try_from(start)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(s, n)| Some(s..s.checked_add(n)?))
                .filter(|r| r.end <= self.bytes.len());
            return match range {
                Some(r) => Ok(Cow::Borrowed(&self.bytes[r])),
                None => Err(CheckpointError::Zip {
                    file: file.to_owned(),
                    detail: format!("record `{name}` extends past the end of the file"),
                }),
            };
        }
        // Compressed (a re-zipped checkpoint): never trust the declared size for allocation.
        let mut out = Vec::with_capacity(size.min(self.bytes.len() as u64 * 4) as usize);
        entry
            .read_to_end(&mut out)
            .map_err(|e| CheckpointError::Zip {
                file: file.to_owned(),
                detail: format!("record `{name}`: {e}"),
            })?;
        Ok(Cow::Owned(out))
    }

    fn storage(&mut self, key: &str) -> Result<Cow<'a, [u8]>, CheckpointError> {
        if let Some(bytes) = self.cache.get(key) {
            return Ok(bytes.clone());
        }
        let name = format!("{}data/{key}", self.prefix);
        let bytes = self.record(&name)?;
        // Borrowed records are free to re-slice; only keep decompressed ones.
        if let Cow::Owned(_) = &bytes {
            self.cache.insert(key.to_owned(), bytes.clone());
        }
        Ok(bytes)
    }

    fn materialise(&mut self, key: &str, t: &TensorRef) -> Result<NamedTensor, CheckpointError> {
        let file = self.file;
        let dtype = t
            .dtype
            .clone()
            .map_err(|name| CheckpointError::InvalidTensor {
                file: file.to_owned(),
                key: key.to_owned(),
                detail: format!("element type `{name}` is not supported"),
            })?;
        let storage = self.storage(&t.storage_key)?;
        let data =
            read_view(&storage, dtype, self.order, t.offset, &t.shape, &t.stride).map_err(|e| {
                match e {
                    ViewError::TooShort { needed, available } => CheckpointError::StorageTooShort {
                        file: file.to_owned(),
                        key: key.to_owned(),
                        record: format!("data/{}", t.storage_key),
                        needed,
                        available,
                    },
                    ViewError::TooLarge => CheckpointError::InvalidTensor {
                        file: file.to_owned(),
                        key: key.to_owned(),
                        detail: format!("shape {:?} has too many elements", t.shape),
                    },
                }
            })?;
        Ok(NamedTensor {
            shape: t.shape.clone(),
            dtype,
            data,
        })
    }
}

fn pickle_error(file: &str, record: &str, e: PickleError) -> CheckpointError {
    match e {
        PickleError::Malformed { offset, detail } => CheckpointError::BadPickle {
            file: file.to_owned(),
            record: record.to_owned(),
            offset,
            detail,
        },
        PickleError::Forbidden { global } => CheckpointError::ForbiddenGlobal {
            file: file.to_owned(),
            global,
        },
    }
}

fn is_tensor(arena: &Arena, v: &Value) -> bool {
    matches!(arena.object(v), Some(Object::Tensor(_)))
}

/// The state dict's `(key, value)` entries and the other top-level keys beside it.
struct FoundStateDict<'u> {
    entries: &'u [(Value, Value)],
    other_top_level_keys: Vec<String>,
}

/// Locates the state dict: the value of a top-level `state_dict` key (Lightning and most
/// training scripts), else the top-level dict itself when it holds tensors (a plain
/// `torch.save(model.state_dict())`).
fn find_state_dict<'u>(
    file: &str,
    u: &'u Unpickled,
) -> Result<FoundStateDict<'u>, CheckpointError> {
    let no_state_dict = |detail: String| CheckpointError::NoStateDict {
        file: file.to_owned(),
        detail,
    };
    let Some(Object::Dict(root)) = u.arena.object(&u.root) else {
        return Err(no_state_dict(format!(
            "the file holds a {}, not a dict",
            u.root.kind(&u.arena)
        )));
    };
    if let Some(inner) = root.get_str("state_dict") {
        let Some(Object::Dict(sd)) = u.arena.object(inner) else {
            return Err(no_state_dict(format!(
                "`state_dict` is a {}, not a dict",
                inner.kind(&u.arena)
            )));
        };
        let others = root
            .entries()
            .iter()
            .filter_map(|(k, _)| match k {
                Value::Str(s) if &**s != "state_dict" => Some(s.to_string()),
                _ => None,
            })
            .collect();
        return Ok(FoundStateDict {
            entries: sd.entries(),
            other_top_level_keys: others,
        });
    }
    if root.entries().iter().any(|(_, v)| is_tensor(&u.arena, v)) {
        return Ok(FoundStateDict {
            entries: root.entries(),
            other_top_level_keys: Vec::new(),
        });
    }
    let keys: Vec<String> = root
        .entries()
        .iter()
        .take(20)
        .map(|(k, _)| match k {
            Value::Str(s) => s.to_string(),
            other => format!("<{}>", other.kind(&u.arena)),
        })
        .collect();
    Err(no_state_dict(format!(
        "no `state_dict` entry and no tensors at the top level (keys: {})",
        keys.join(", ")
    )))
}

/// Reads the state dict of a `torch.save` zip held in `bytes`; `file` names it in errors.
pub fn read_torch_zip(
    file: &str,
    bytes: &[u8],
) -> Result<(StateDict, TorchZipInfo), CheckpointError> {
    let mut archive = Archive::open(file, bytes)?;
    let pickle_record = format!("{}data.pkl", archive.prefix);
    let pickle_bytes = archive.record(&pickle_record)?;
    let unpickled = unpickle(&pickle_bytes).map_err(|e| pickle_error(file, &pickle_record, e))?;
    let FoundStateDict {
        entries,
        other_top_level_keys,
    } = find_state_dict(file, &unpickled)?;
    let mut state = StateDict::new(file);
    for (k, v) in entries {
        let key = match k {
            Value::Str(s) => s.to_string(),
            other => {
                return Err(CheckpointError::NoStateDict {
                    file: file.to_owned(),
                    detail: format!(
                        "state dict key is a {}, not a str",
                        other.kind(&unpickled.arena)
                    ),
                })
            }
        };
        let tensor = match unpickled.arena.object(v) {
            Some(Object::Tensor(t)) => archive.materialise(&key, t)?,
            Some(Object::Opaque(class)) => {
                return Err(CheckpointError::UnknownGlobal {
                    file: file.to_owned(),
                    key,
                    global: class.to_string(),
                })
            }
            Some(Object::Global(g)) => {
                return Err(CheckpointError::UnknownGlobal {
                    file: file.to_owned(),
                    key,
                    global: g.name().to_owned(),
                })
            }
            _ => {
                return Err(CheckpointError::InvalidTensor {
                    file: file.to_owned(),
                    detail: format!("expected a tensor, found {}", v.kind(&unpickled.arena)),
                    key,
                })
            }
        };
        state.insert(key, tensor)?;
    }
    Ok((
        state,
        TorchZipInfo {
            other_top_level_keys,
            ignored_globals: unpickled.opaque_globals,
        },
    ))
}
