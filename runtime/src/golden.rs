//! Golden reference cases: one safetensors file per case, as documented in
//! `shared/golden/README.md` (`in.*`, `param.*`, `gout.*`, `out.*`, `grad.*`, `buf.*` tensors
//! in PyTorch layout, and a JSON description under the metadata key `case`).
//!
//! Loading never panics: a corrupt header, a missing tensor or an unexpected dtype is an error
//! naming the file (and the tensor).

use crate::error::{Result, RuntimeError};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A host tensor in the file's (PyTorch) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One golden case.
#[derive(Debug, Clone)]
pub struct GoldenCase {
    pub path: PathBuf,
    /// The parsed `case` metadata (`Value::Null` if the file has none).
    pub meta: serde_json::Value,
    pub tensors: BTreeMap<String, HostTensor>,
}

impl GoldenCase {
    /// Read and parse a case file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| RuntimeError::file(path, format!("cannot read: {e}")))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parse a case from memory (`path` is used in messages).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| RuntimeError::file(path, format!("not a valid safetensors file: {e}")))?;
        let meta = match header.metadata().as_ref().and_then(|m| m.get("case")) {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                RuntimeError::file(path, format!("metadata `case` is not JSON: {e}"))
            })?,
            None => serde_json::Value::Null,
        };
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| RuntimeError::file(path, format!("not a valid safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = decode(view.dtype(), view.data()).ok_or_else(|| {
                RuntimeError::file(
                    path,
                    format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
                )
            })?;
            let shape = view.shape().to_vec();
            if shape.iter().product::<usize>() != data.len() {
                return Err(RuntimeError::file(
                    path,
                    format!("tensor `{name}`: data does not match shape {shape:?}"),
                ));
            }
            tensors.insert(name, HostTensor { shape, data });
        }
        Ok(GoldenCase {
            path: path.to_path_buf(),
            meta,
            tensors,
        })
    }

    /// A required tensor; missing is an error naming the file and the tensor.
    pub fn tensor(&self, name: &str) -> Result<&HostTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| RuntimeError::file(&self.path, format!("missing tensor `{name}`")))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names with a prefix, the prefix stripped (`names_with("param.")` gives parameter keys).
    pub fn names_with<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tensors
            .keys()
            .filter_map(move |k| k.strip_prefix(prefix))
    }

    /// A metadata field as f64 (errors name the file and field).
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        self.meta.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
            RuntimeError::file(
                &self.path,
                format!("metadata field `{key}` missing or not a number"),
            )
        })
    }

    /// A metadata field as f64, or `default` when absent.
    pub fn meta_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.meta.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(_) => self.meta_f64(key),
        }
    }

    /// A metadata string field, if present.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(|v| v.as_str())
    }

    /// A metadata array of integers (`None` when absent or null).
    pub fn meta_usizes(&self, key: &str) -> Result<Option<Vec<usize>>> {
        match self.meta.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    RuntimeError::file(
                        &self.path,
                        format!("metadata `{key}` is not a list of integers"),
                    )
                }),
            Some(v) => v.as_u64().map(|x| Some(vec![x as usize])).ok_or_else(|| {
                RuntimeError::file(
                    &self.path,
                    format!("metadata `{key}` is not an integer list"),
                )
            }),
        }
    }
}

fn decode(dtype: Dtype, raw: &[u8]) -> Option<Vec<f32>> {
    let chunks = |n: usize| raw.chunks_exact(n);
    Some(match dtype {
        Dtype::F32 => chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => chunks(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::I64 => chunks(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => return None,
    })
}

/// Every `*.safetensors` file under `dir`, recursively, in a stable (sorted) order.
pub fn find_cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| RuntimeError::file(dir, format!("cannot list: {e}")))?;
    for entry in entries {
        let path = entry
            .map_err(|e| RuntimeError::file(dir, e.to_string()))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            out.push(path);
        }
    }
    Ok(())
}

/// Relative error ‖got − want‖ / ‖want‖ over the whole tensor (absolute when ‖want‖ = 0).
/// Any NaN/Inf in `got`, or a length mismatch, gives +∞: it never passes.
pub fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    rel_error_at_scale(got, want, 0.0)
}

/// Below this fraction of its case's scale a reference tensor is zero up to f32 rounding.
pub const NUMERICALLY_ZERO: f64 = 1e-6;

/// [`rel_error`] for a tensor of a case whose tensors have norms up to `scale`. A gradient
/// that is zero in exact arithmetic (a key bias under softmax, a bias feeding a one-channel
/// group norm) comes out of any f32 implementation as rounding noise of size ~1e-8·scale,
/// and its norm-relative error is noise over noise. Such a reference, one with
/// ‖want‖ < [`NUMERICALLY_ZERO`]·scale, is measured against `scale` instead:
/// ‖got − want‖ / scale. Everything else is measured as [`rel_error`].
pub fn rel_error_at_scale(got: &[f32], want: &[f32], scale: f64) -> f64 {
    if got.len() != want.len() || got.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        let d = a as f64 - b as f64;
        num += d * d;
        den += (b as f64) * (b as f64);
    }
    let (num, den) = (num.sqrt(), den.sqrt());
    if den < NUMERICALLY_ZERO * scale {
        num / scale
    } else if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// The Euclidean norm of a tensor, in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_error_rejects_nan_and_length_mismatch() {
        assert!(rel_error(&[f32::NAN], &[1.0]).is_infinite());
        assert!(rel_error(&[1.0], &[1.0, 2.0]).is_infinite());
        assert_eq!(rel_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_error(&[1.1], &[1.0]) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn numerically_zero_references_are_measured_against_the_case_scale() {
        // A rounding-noise reference and rounding-noise output: fine against scale 40.
        let noise = rel_error_at_scale(&[2e-7, -1e-7], &[5e-16, 0.0], 40.0);
        assert!(noise < 1e-8, "{noise}");
        assert!(rel_error(&[2e-7, -1e-7], &[5e-16, 0.0]) > 1e8);
        // A real error on a zero gradient still fails.
        assert!(rel_error_at_scale(&[0.1, 0.0], &[5e-16, 0.0], 40.0) > 1e-4);
        // Small but not numerically zero: ordinary relative error.
        let rel = rel_error_at_scale(&[1.1e-3], &[1e-3], 40.0);
        assert!((rel - 0.1).abs() < 1e-4, "{rel}");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let err = GoldenCase::from_bytes(
            Path::new("x/bad.safetensors"),
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
        )
        .unwrap_err();
        assert!(err.to_string().contains("x/bad.safetensors"), "{err}");
    }
}
