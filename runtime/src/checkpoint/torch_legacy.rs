//! Reader for the legacy `torch.save` format (PyTorch < 1.6, or `torch.save(...,
//! _use_new_zipfile_serialization=False)`), in which LPIPS' `vgg.pth` and torchvision's older
//! VGG weights are stored. The file is a stream of five pickles and raw storages, back to back
//! (torch/serialization.py, `_legacy_save`):
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`;
//! 2. the protocol version, 1001;
//! 3. a `sys_info` dict (byte order and C type sizes of the writer);
//! 4. the object itself, whose storages are persistent ids
//!    `('storage', type, key, location, numel, view_metadata)`;
//! 5. the list of storage keys, in the order their bytes follow;
//!
//! then for each key an element count (i64, little-endian) and the storage's bytes. Both are
//! little-endian whatever machine wrote them (torch converts on big-endian hosts), so
//! `sys_info` is parsed (a forbidden global in it still refuses the file) but not needed.
//!
//! Every pickle goes through the same non-executing interpreter and global tiers as the zip
//! format; only the persistent ids differ. Storage bytes are borrowed from the input.

use std::collections::HashMap;
use std::rc::Rc;

use super::error::CheckpointError;
use super::pickle::{unpickle_prefix, PersistentIds, Unpickled};
use super::pickle_value::{Object, StorageKind, StorageRef, Value};
use super::pickled_state::{build_state_dict, pickle_error, view_tensor, PickledInfo};
use super::state_dict::StateDict;
use super::tensor_view::ByteOrder;

/// The magic number's pickle body: `LONG1`, 10 bytes, `0x1950a86a20f9469cfc6c` little-endian.
const MAGIC_LONG1: [u8; 12] = [
    0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];
const PROTOCOL_VERSION: i64 = 1001;

/// Whether `bytes` start like a legacy stream: a pickle (`PROTO`, for protocol >= 4 also a
/// `FRAME`) whose first value is a 10-byte `LONG1`. Whether it is torch's magic number is
/// checked by the reader, so that a wrong one gets a precise error.
pub(crate) fn looks_legacy(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x80)
        && bytes
            .get(..16)
            .unwrap_or(bytes)
            .windows(2)
            .any(|w| w == [0x8a, 0x0a])
}

/// The storage bytes of one key, as found in the stream.
struct Stored<'a> {
    bytes: &'a [u8],
    /// The file ends inside this storage: `bytes` is what is left of it.
    truncated: bool,
}

/// The storages found in the data section, by key, and the key of the storage the file ends
/// in, if it is truncated.
type Storages<'a> = (HashMap<Rc<str>, Stored<'a>>, Option<Rc<str>>);

/// The stream being read, pickle by pickle.
struct Stream<'a> {
    file: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Stream<'a> {
    fn pickle(&mut self, what: &str, pids: PersistentIds) -> Result<Unpickled, CheckpointError> {
        let record = format!("legacy stream: {what}");
        let rest = &self.bytes[self.pos..];
        let (u, n) = unpickle_prefix(rest, pids)
            .map_err(|e| pickle_error(self.file, &record, self.pos, e))?;
        self.pos += n;
        Ok(u)
    }

    fn corrupt(&self, detail: String) -> CheckpointError {
        CheckpointError::LegacyStream {
            file: self.file.to_owned(),
            detail,
        }
    }

    fn unrecognized(&self, reason: String) -> CheckpointError {
        CheckpointError::UnrecognizedFormat {
            file: self.file.to_owned(),
            reason,
        }
    }

    /// Checks the magic number, protocol version and `sys_info` pickles.
    fn header(&mut self) -> Result<(), CheckpointError> {
        let start = self.pos;
        let magic = self.pickle("magic number", PersistentIds::Legacy)?;
        let body = &self.bytes[start..self.pos];
        // 80 bits do not fit the interpreter's i64, so the magic is compared as pickle bytes:
        // CPython writes an int of this size as exactly this `LONG1` at every protocol >= 2.
        if !matches!(magic.root, Value::BigInt) || !body[..body.len() - 1].ends_with(&MAGIC_LONG1) {
            return Err(self.unrecognized(
                "a pickle stream whose first value is not torch's magic number (a corrupt \
                 legacy torch.save file, or not a checkpoint)"
                    .into(),
            ));
        }
        let version = self.pickle("protocol version", PersistentIds::Legacy)?;
        match version.root {
            Value::Int(PROTOCOL_VERSION) => {}
            Value::Int(v) => {
                return Err(self.unrecognized(format!(
                    "legacy torch.save protocol version {v} (only {PROTOCOL_VERSION} exists)"
                )))
            }
            ref other => {
                return Err(self.unrecognized(format!(
                    "legacy torch.save protocol version is a {}, not an int",
                    other.kind(&version.arena)
                )))
            }
        }
        self.pickle("sys_info", PersistentIds::Legacy)?;
        Ok(())
    }

    /// The pickled list of storage keys.
    fn storage_keys(&mut self) -> Result<Vec<Rc<str>>, CheckpointError> {
        let keys = self.pickle("storage key list", PersistentIds::Legacy)?;
        let items = match keys.arena.object(&keys.root) {
            Some(Object::List(items) | Object::Tuple(items)) => items,
            _ => {
                return Err(self.corrupt(format!(
                    "the storage key list is a {}, not a list",
                    keys.root.kind(&keys.arena)
                )))
            }
        };
        items
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.clone()),
                Value::Int(i) => Ok(i.to_string().into()),
                other => Err(self.corrupt(format!(
                    "a storage key is a {}, not a str",
                    other.kind(&keys.arena)
                ))),
            })
            .collect()
    }

    /// Splits the data section into storages, in key order. Stops at the end of the file: the
    /// storage cut there is marked truncated, the ones after it are absent.
    fn storages(
        &mut self,
        keys: &[Rc<str>],
        refs: &HashMap<Rc<str>, &StorageRef>,
    ) -> Result<Storages<'a>, CheckpointError> {
        let bytes: &'a [u8] = self.bytes;
        let mut out = HashMap::new();
        for key in keys {
            let Some(s) = refs.get(key) else {
                return Err(self.corrupt(format!(
                    "storage `{key}` is listed but the pickle never refers to it"
                )));
            };
            let elem = element_size(&s.kind).ok_or_else(|| {
                self.corrupt(format!(
                    "storage `{key}` has type `{}`, whose element size is unknown",
                    s.kind.name
                ))
            })?;
            let Some(head) = self
                .pos
                .checked_add(8)
                .and_then(|end| bytes.get(self.pos..end))
            else {
                return Ok((out, Some(key.clone())));
            };
            let mut count = [0u8; 8];
            count.copy_from_slice(head);
            let count = u64::from_le_bytes(count);
            if let Some(n) = s.numel.filter(|&n| n as u64 != count) {
                return Err(self.corrupt(format!(
                    "storage `{key}` at byte {}: the stream says {count} elements, the pickle \
                     {n}",
                    self.pos
                )));
            }
            let start = self.pos + 8;
            let left = bytes.len() - start;
            match count.checked_mul(elem as u64).filter(|&n| n <= left as u64) {
                Some(n) => {
                    let end = start + n as usize;
                    let stored = Stored {
                        bytes: &bytes[start..end],
                        truncated: false,
                    };
                    out.insert(key.clone(), stored);
                    self.pos = end;
                }
                None => {
                    let stored = Stored {
                        bytes: &bytes[start..],
                        truncated: true,
                    };
                    out.insert(key.clone(), stored);
                    return Ok((out, Some(key.clone())));
                }
            }
        }
        Ok((out, None))
    }
}

/// Bytes per element of a storage type, also for the types the engine cannot use (so that a
/// complex storage outside the state dict does not hide the storages after it).
fn element_size(kind: &StorageKind) -> Option<usize> {
    if let Ok(dtype) = &kind.dtype {
        return Some(dtype.size_bytes());
    }
    let short = kind.name.rsplit('.').next().unwrap_or_default();
    match short {
        "ComplexDoubleStorage" => Some(16),
        "ComplexFloatStorage" => Some(8),
        "ComplexHalfStorage" | "QInt32Storage" => Some(4),
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => Some(1),
        _ => None,
    }
}

/// Reads the state dict of a legacy `torch.save` stream held in `bytes`; `file` names it in
/// errors.
pub(crate) fn read_torch_legacy(
    file: &str,
    bytes: &[u8],
) -> Result<(StateDict, PickledInfo), CheckpointError> {
    let mut stream = Stream {
        file,
        bytes,
        pos: 0,
    };
    stream.header()?;
    let object = stream.pickle("object", PersistentIds::Legacy)?;
    let keys = stream.storage_keys()?;
    // The first persistent id of a key fixes its element type, as in torch's loader.
    let mut refs: HashMap<Rc<str>, &StorageRef> = HashMap::new();
    for obj in object.arena.objects() {
        if let Object::Storage(s) = obj {
            refs.entry(s.key.clone()).or_insert(s);
        }
    }
    let (storages, truncated_in) = stream.storages(&keys, &refs)?;
    let (state, info) = build_state_dict(file, &object, |key, t| {
        let Some(stored) = storages.get(&t.storage_key) else {
            return Err(match &truncated_in {
                Some(cut) => CheckpointError::InvalidTensor {
                    file: file.to_owned(),
                    key: key.to_owned(),
                    detail: format!(
                        "its storage `{}` lies past the end of the file (truncated: the file \
                         ends inside storage `{cut}`)",
                        t.storage_key
                    ),
                },
                None => CheckpointError::MissingStorage {
                    file: file.to_owned(),
                    record: format!("legacy storage {} (not in the storage list)", t.storage_key),
                },
            });
        };
        let record = if stored.truncated {
            format!("legacy storage {} (truncated file)", t.storage_key)
        } else {
            format!("legacy storage {}", t.storage_key)
        };
        view_tensor(file, key, &record, stored.bytes, ByteOrder::Little, t)
    })?;
    if let Some(cut) = truncated_in {
        // The state dict's tensors happen to be complete, but the file is not.
        return Err(stream.corrupt(format!(
            "the file ends inside storage `{cut}` ({} bytes): truncated?",
            bytes.len()
        )));
    }
    Ok((state, info))
}
