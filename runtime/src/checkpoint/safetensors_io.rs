//! Safetensors reading and writing with PyTorch state-dict key names, so that the engine's
//! checkpoints load back into the Python MedVAE (`safetensors.torch.load_file`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, View};
use safetensors::{SafeTensorError, SafeTensors};

use super::atomic_write::replace_atomically;
use super::error::CheckpointError;
use super::state_dict::{NamedTensor, StateDict, StoredDType, TensorData};
use super::tensor_view::{decode_contiguous, ByteOrder};

/// Element type used for float tensors when writing. Integer tensors are always written as
/// i64 (PyTorch's type for `num_batches_tracked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatFormat {
    #[default]
    F32,
    F16,
    BF16,
}

/// Options of [`save_safetensors_with`].
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    pub float_format: FloatFormat,
    /// Free-form `__metadata__` entries (e.g. the model config).
    pub metadata: Option<HashMap<String, String>>,
}

fn st_error(file: &str, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Safetensors {
        file: file.to_owned(),
        detail: e.to_string(),
    }
}

fn stored_dtype(dtype: Dtype) -> Option<StoredDType> {
    Some(match dtype {
        Dtype::F32 => StoredDType::F32,
        Dtype::F64 => StoredDType::F64,
        Dtype::F16 => StoredDType::F16,
        Dtype::BF16 => StoredDType::BF16,
        Dtype::I64 => StoredDType::I64,
        Dtype::I32 => StoredDType::I32,
        Dtype::I16 => StoredDType::I16,
        Dtype::I8 => StoredDType::I8,
        Dtype::U8 => StoredDType::U8,
        Dtype::BOOL => StoredDType::Bool,
        _ => return None,
    })
}

/// The file length a safetensors header declares: 8 + header + the end of the last tensor's
/// data. `None` when the header cannot be parsed.
fn declared_len(bytes: &[u8]) -> Option<u64> {
    let header_len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..usize::try_from(header_len).ok()?.checked_add(8)?)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let data_end = json
        .as_object()?
        .iter()
        .filter(|(key, _)| *key != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    8u64.checked_add(header_len)?.checked_add(data_end)
}

/// Reads a safetensors file held in `bytes`. Keys come in data-offset order (the file's
/// physical order); the `__metadata__` map is returned beside the tensors.
pub fn read_safetensors(
    file: &str,
    bytes: &[u8],
) -> Result<(StateDict, HashMap<String, String>), CheckpointError> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| match e {
        SafeTensorError::MetadataIncompleteBuffer => st_error(
            file,
            format!(
                "the file is {} bytes, but the tensors its header lists need {}: it was cut \
                 short (or has bytes appended)",
                bytes.len(),
                declared_len(bytes).map_or("another length".to_owned(), |n| n.to_string())
            ),
        ),
        other => st_error(file, other),
    })?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| st_error(file, e))?;
    let mut state = StateDict::new(file);
    for key in header.offset_keys() {
        let view = tensors.tensor(&key).map_err(|e| st_error(file, e))?;
        let dtype = stored_dtype(view.dtype()).ok_or_else(|| CheckpointError::InvalidTensor {
            file: file.to_owned(),
            key: key.clone(),
            detail: format!("element type {:?} is not supported", view.dtype()),
        })?;
        let shape = view.shape().to_vec();
        // Safetensors data is contiguous, little-endian, and its length was validated against
        // the shape by `deserialize`.
        let data = decode_contiguous(view.data(), dtype, ByteOrder::Little);
        state.insert(key, NamedTensor { shape, dtype, data })?;
    }
    Ok((state, header.metadata().clone().unwrap_or_default()))
}

/// A tensor encoded for writing.
struct Encoded<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    bytes: Cow<'a, [u8]>,
}

impl View for &Encoded<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Little-endian bytes of `values`, `N` bytes each.
fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&to_le(v));
    }
    out
}

/// The torch storage type name and little-endian bytes of `tensor` in `format` (for the
/// `torch.save` writer, which stores the same bytes as safetensors does).
pub(super) fn encoded_storage(
    tensor: &NamedTensor,
    format: FloatFormat,
) -> (&'static str, Cow<'_, [u8]>) {
    let e = encode(tensor, format);
    let name = match e.dtype {
        Dtype::F16 => "HalfStorage",
        Dtype::BF16 => "BFloat16Storage",
        Dtype::I64 => "LongStorage",
        _ => "FloatStorage",
    };
    (name, e.bytes)
}

fn encode(tensor: &NamedTensor, format: FloatFormat) -> Encoded<'_> {
    let (dtype, bytes) = match (&tensor.data, format) {
        // f32 is stored as is: borrowed without a copy on little-endian hosts.
        (TensorData::Float(v), FloatFormat::F32) if cfg!(target_endian = "little") => (
            Dtype::F32,
            Cow::Borrowed(bytemuck::cast_slice::<f32, u8>(v)),
        ),
        (TensorData::Float(v), FloatFormat::F32) => {
            (Dtype::F32, Cow::Owned(le_bytes(v, f32::to_le_bytes)))
        }
        (TensorData::Float(v), FloatFormat::F16) => (
            Dtype::F16,
            Cow::Owned(le_bytes(v, |x| f16::from_f32(x).to_le_bytes())),
        ),
        (TensorData::Float(v), FloatFormat::BF16) => (
            Dtype::BF16,
            Cow::Owned(le_bytes(v, |x| bf16::from_f32(x).to_le_bytes())),
        ),
        (TensorData::Int(v), _) => (Dtype::I64, Cow::Owned(le_bytes(v, i64::to_le_bytes))),
    };
    Encoded {
        dtype,
        shape: &tensor.shape,
        bytes,
    }
}

fn encode_all(state: &StateDict, format: FloatFormat) -> Vec<(&str, Encoded<'_>)> {
    state.iter().map(|(k, t)| (k, encode(t, format))).collect()
}

/// Encodes a state dict as safetensors bytes.
pub fn safetensors_bytes(
    state: &StateDict,
    options: &SaveOptions,
) -> Result<Vec<u8>, CheckpointError> {
    let encoded = encode_all(state, options.float_format);
    safetensors::serialize(
        encoded.iter().map(|(k, e)| (*k, e)),
        options.metadata.clone(),
    )
    .map_err(|e| st_error(state.source(), e))
}

/// Writes `state` as f32 safetensors at `path`, atomically (see [`save_safetensors_with`]).
pub fn save_safetensors(path: &Path, state: &StateDict) -> Result<(), CheckpointError> {
    save_safetensors_with(path, state, &SaveOptions::default())
}

/// Writes `state` at `path`: into a temporary file in the same folder, fsynced, renamed over
/// `path`, then the folder fsynced, so a crash leaves either the old file or the new one.
pub fn save_safetensors_with(
    path: &Path,
    state: &StateDict,
    options: &SaveOptions,
) -> Result<(), CheckpointError> {
    let encoded = encode_all(state, options.float_format);
    // Streamed to disk by the safetensors crate: no second full-size buffer in memory.
    replace_atomically(path, |tmp| {
        safetensors::serialize_to_file(
            encoded.iter().map(|(k, e)| (*k, e)),
            options.metadata.clone(),
            tmp,
        )
        .map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
    .map_err(|source| CheckpointError::Write {
        file: path.display().to_string(),
        cause: source,
    })
}
