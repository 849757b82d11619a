//! From an unpickled `torch.save` object graph to a [`StateDict`], shared by the zip and the
//! legacy reader (they differ only in where a storage's bytes live): locating the state dict
//! (Lightning `state_dict` entry or a plain dict of tensors), and reading each tensor view with
//! errors that name the file, the key and the storage.

use super::error::CheckpointError;
use super::pickle::{PickleError, Unpickled};
use super::pickle_value::{Arena, Object, TensorRef, Value};
use super::state_dict::{NamedTensor, StateDict};
use super::tensor_view::{read_view, ByteOrder, ViewError};

/// What was read from a torch checkpoint besides the state dict.
#[derive(Debug, Clone, Default)]
pub(crate) struct PickledInfo {
    /// Top-level keys of a wrapper dict (`epoch`, `optimizer_states`, ...), when the state dict
    /// sat under `state_dict`; empty for a plain state-dict file.
    pub(crate) other_top_level_keys: Vec<String>,
    /// Globals kept as inert placeholders (neither interpreted nor forbidden), e.g. the classes
    /// of Lightning hyper-parameters. Informational: nothing was imported or run.
    pub(crate) ignored_globals: Vec<String>,
}

/// Maps an unpickling failure of `record` to a checkpoint error; `base` is the byte position of
/// the pickle in `record` (non-zero for the later pickles of a legacy stream).
pub(crate) fn pickle_error(
    file: &str,
    record: &str,
    base: usize,
    e: PickleError,
) -> CheckpointError {
    match e {
        PickleError::Malformed { offset, detail } => CheckpointError::BadPickle {
            file: file.to_owned(),
            record: record.to_owned(),
            offset: base + offset,
            detail,
        },
        PickleError::Forbidden { global } => CheckpointError::ForbiddenGlobal {
            file: file.to_owned(),
            global,
        },
    }
}

/// Reads the tensor view `t` of `storage` (the bytes of `record`) as state-dict entry `key`.
pub(crate) fn view_tensor(
    file: &str,
    key: &str,
    record: &str,
    storage: &[u8],
    order: ByteOrder,
    t: &TensorRef,
) -> Result<NamedTensor, CheckpointError> {
    let dtype = t
        .dtype
        .clone()
        .map_err(|name| CheckpointError::InvalidTensor {
            file: file.to_owned(),
            key: key.to_owned(),
            detail: format!("element type `{name}` is not supported"),
        })?;
    let data =
        read_view(storage, dtype, order, t.offset, &t.shape, &t.stride).map_err(|e| match e {
            ViewError::TooShort { needed, available } => CheckpointError::StorageTooShort {
                file: file.to_owned(),
                key: key.to_owned(),
                record: record.to_owned(),
                needed,
                available,
            },
            ViewError::TooLarge => CheckpointError::InvalidTensor {
                file: file.to_owned(),
                key: key.to_owned(),
                detail: format!("shape {:?} has too many elements", t.shape),
            },
        })?;
    Ok(NamedTensor {
        shape: t.shape.clone(),
        dtype,
        data,
    })
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

/// Builds the state dict of `unpickled`, reading each tensor with `materialise(key, view)`.
pub(crate) fn build_state_dict(
    file: &str,
    unpickled: &Unpickled,
    mut materialise: impl FnMut(&str, &TensorRef) -> Result<NamedTensor, CheckpointError>,
) -> Result<(StateDict, PickledInfo), CheckpointError> {
    let FoundStateDict {
        entries,
        other_top_level_keys,
    } = find_state_dict(file, unpickled)?;
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
            Some(Object::Tensor(t)) => materialise(&key, t)?,
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
        PickledInfo {
            other_top_level_keys,
            ignored_globals: unpickled.opaque_globals.clone(),
        },
    ))
}
