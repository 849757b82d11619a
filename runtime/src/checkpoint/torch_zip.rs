//! Reader for the zip format of `torch.save` (PyTorch >= 1.6): `<archive>/data.pkl` holds the
//! pickled object graph, `<archive>/data/<key>` the raw bytes of each storage, and
//! `<archive>/byteorder` their byte order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::error::CheckpointError;
use super::pickle::unpickle;
use super::pickle_value::TensorRef;
use super::pickled_state::{build_state_dict, pickle_error, view_tensor, PickledInfo};
use super::state_dict::{NamedTensor, StateDict};
use super::tensor_view::ByteOrder;

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
        let storage = self.storage(&t.storage_key)?;
        let record = format!("data/{}", t.storage_key);
        view_tensor(self.file, key, &record, &storage, self.order, t)
    }
}

/// Reads the state dict of a `torch.save` zip held in `bytes`; `file` names it in errors.
pub(crate) fn read_torch_zip(
    file: &str,
    bytes: &[u8],
) -> Result<(StateDict, PickledInfo), CheckpointError> {
    let mut archive = Archive::open(file, bytes)?;
    let pickle_record = format!("{}data.pkl", archive.prefix);
    let pickle_bytes = archive.record(&pickle_record)?;
    let unpickled =
        unpickle(&pickle_bytes).map_err(|e| pickle_error(file, &pickle_record, 0, e))?;
    build_state_dict(file, &unpickled, |key, t| archive.materialise(key, t))
}
