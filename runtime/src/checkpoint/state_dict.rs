//! The format-neutral result of reading a checkpoint: an ordered map from PyTorch state-dict
//! key to a named tensor, whatever file format it came from.

use std::collections::HashMap;
use std::fmt;

use super::error::CheckpointError;

/// Element type a tensor had in the file it was read from. Floating values are converted to
/// f32 on load (the engine computes in f32); integer and bool values are widened to i64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StoredDType {
    /// Bytes per element in the file.
    pub fn size_bytes(self) -> usize {
        match self {
            StoredDType::F64 | StoredDType::I64 => 8,
            StoredDType::F32 | StoredDType::I32 => 4,
            StoredDType::F16 | StoredDType::BF16 | StoredDType::I16 => 2,
            StoredDType::I8 | StoredDType::U8 | StoredDType::Bool => 1,
        }
    }

    /// Whether values of this type are held as [`TensorData::Float`].
    pub fn is_float(self) -> bool {
        matches!(
            self,
            StoredDType::F32 | StoredDType::F64 | StoredDType::F16 | StoredDType::BF16
        )
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoredDType::F32 => "f32",
            StoredDType::F64 => "f64",
            StoredDType::F16 => "f16",
            StoredDType::BF16 => "bf16",
            StoredDType::I64 => "i64",
            StoredDType::I32 => "i32",
            StoredDType::I16 => "i16",
            StoredDType::I8 => "i8",
            StoredDType::U8 => "u8",
            StoredDType::Bool => "bool",
        })
    }
}

/// Tensor values in row-major (PyTorch contiguous) order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// f32/f64/f16/bf16 in the file, converted to f32.
    Float(Vec<f32>),
    /// Integer or bool in the file (e.g. BatchNorm's `num_batches_tracked`), widened to i64.
    Int(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Int(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One state-dict entry: PyTorch shape (NCHW / OIHW order, as in the file) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub shape: Vec<usize>,
    /// The element type in the source file (before conversion to f32 / i64).
    pub dtype: StoredDType,
    pub data: TensorData,
}

impl NamedTensor {
    /// A float tensor; `data.len()` must equal the product of `shape` (checked by callers that
    /// build from untrusted input: the readers and [`StateDict::insert`] via `numel`).
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor {
            shape,
            dtype: StoredDType::F32,
            data: TensorData::Float(data),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The f32 values, or `None` for integer tensors.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(v) => Some(v),
            TensorData::Int(_) => None,
        }
    }

    /// The i64 values, or `None` for float tensors.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int(v) => Some(v),
            TensorData::Float(_) => None,
        }
    }
}

/// Ordered map key -> tensor, in file order. `source` names the file it came from, so that
/// later checks ([`StateDict::check_finite`], key comparison) can say which file is at fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    source: String,
    entries: Vec<(String, NamedTensor)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    pub fn new(source: impl Into<String>) -> Self {
        StateDict {
            source: source.into(),
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The file (or description) this state dict was read from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Inserts or replaces `key`. A replaced key keeps its original position, as assigning to
    /// an existing key of a Python dict does. Fails if the data length does not match the shape.
    pub fn insert(&mut self, key: String, tensor: NamedTensor) -> Result<(), CheckpointError> {
        let numel = checked_numel(&tensor.shape);
        if numel != Some(tensor.data.len()) {
            return Err(CheckpointError::InvalidTensor {
                file: self.source.clone(),
                key,
                detail: format!(
                    "shape {:?} does not match {} stored values",
                    tensor.shape,
                    tensor.data.len()
                ),
            });
        }
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, tensor));
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&NamedTensor> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &NamedTensor)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// `(key, shape)` of every entry, in file order: what a model config is derived from
    /// (`ModelConfig::from_state_dict_shapes`) and key reports compare against.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.entries
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone()))
            .collect()
    }

    /// Consumes the map, yielding entries in file order.
    pub fn into_entries(self) -> Vec<(String, NamedTensor)> {
        self.entries
    }

    /// Fails on the first NaN or infinity, naming the key and the flat (row-major) index.
    /// Diverged training runs save such weights; loading them silently would only move the
    /// failure to a confusing place later.
    pub fn check_finite(&self) -> Result<(), CheckpointError> {
        for (key, tensor) in &self.entries {
            if let TensorData::Float(values) = &tensor.data {
                if let Some((index, &value)) =
                    values.iter().enumerate().find(|(_, v)| !v.is_finite())
                {
                    return Err(CheckpointError::NonFinite {
                        file: self.source.clone(),
                        key: key.clone(),
                        index,
                        value,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Product of a shape, `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// How a checkpoint's keys relate to the keys a model expects, reported the way PyTorch's
/// `load_state_dict(strict=False)` does (missing / unexpected, in expected resp. file order),
/// plus the shape mismatches that PyTorch raises on even when not strict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyReport {
    /// Expected keys absent from the checkpoint.
    pub missing: Vec<String>,
    /// Checkpoint keys the model does not have.
    pub unexpected: Vec<String>,
    /// `(key, expected shape, shape in the checkpoint)`.
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl KeyReport {
    /// True when every key matches in name and shape.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatch.is_empty()
    }

    /// Strict loading: the first shape mismatch, else a missing/unexpected key, is an error
    /// naming `file` and the key.
    pub fn ensure_exact(&self, file: &str) -> Result<(), CheckpointError> {
        if let Some((key, expected, found)) = self.shape_mismatch.first() {
            return Err(CheckpointError::ShapeMismatch {
                file: file.to_owned(),
                key: key.clone(),
                expected: expected.clone(),
                found: found.clone(),
            });
        }
        if !self.missing.is_empty() || !self.unexpected.is_empty() {
            return Err(CheckpointError::KeyMismatch {
                file: file.to_owned(),
                report: self.to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} missing, {} unexpected, {} shape mismatches",
            self.missing.len(),
            self.unexpected.len(),
            self.shape_mismatch.len()
        )?;
        if !self.missing.is_empty() {
            write!(f, "; missing: {}", self.missing.join(", "))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected: {}", self.unexpected.join(", "))?;
        }
        for (key, expected, found) in &self.shape_mismatch {
            write!(f, "; {key}: expected {expected:?}, found {found:?}")?;
        }
        Ok(())
    }
}

/// Compares a checkpoint against the `(key, shape)` list a model expects.
pub fn compare_keys(expected: &[(String, Vec<usize>)], got: &StateDict) -> KeyReport {
    let mut report = KeyReport::default();
    let mut expected_keys = std::collections::HashSet::with_capacity(expected.len());
    for (key, shape) in expected {
        expected_keys.insert(key.as_str());
        match got.get(key) {
            None => report.missing.push(key.clone()),
            Some(t) if &t.shape != shape => {
                report
                    .shape_mismatch
                    .push((key.clone(), shape.clone(), t.shape.clone()))
            }
            Some(_) => {}
        }
    }
    report.unexpected = got
        .keys()
        .filter(|k| !expected_keys.contains(k))
        .map(str::to_owned)
        .collect();
    report
}
