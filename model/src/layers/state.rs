//! Loading parameters into a model from PyTorch-layout tensors, and exporting them back.
//!
//! The model side speaks plain `(key, shape, &[f32])` triples in PyTorch layout, so it does not
//! depend on any file format; [`load_state_dict`] / [`to_state_dict`] adapt the runtime's
//! checkpoint `StateDict` (torch `.ckpt`/`.bin`, safetensors) to it.

use crate::layer::{ParamKind, Parameters};
use medvae_runtime::checkpoint::{NamedTensor, StateDict, StoredDType, TensorData};
use medvae_runtime::{Result, RuntimeError};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How a set of tensors matched a model's parameters, as PyTorch's `load_state_dict` reports
/// it, plus shape mismatches (which PyTorch raises on). Mismatched tensors are not loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: usize,
    /// Model keys with no tensor given (they keep their current value).
    pub missing: Vec<String>,
    /// Given keys the model does not have.
    pub unexpected: Vec<String>,
    /// `(key, model's PyTorch shape, given shape)`.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// An error describing every problem unless the load was exact.
    pub fn ensure_exact(&self, source: &str) -> Result<()> {
        if self.is_exact() {
            Ok(())
        } else {
            Err(RuntimeError::file(
                source,
                format!("state dict does not match the model: {self}"),
            ))
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} loaded, {} missing, {} unexpected, {} shape mismatches",
            self.loaded,
            self.missing.len(),
            self.unexpected.len(),
            self.mismatched.len()
        )?;
        let list = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        if !self.missing.is_empty() {
            write!(f, "; missing: {}", list(&self.missing))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected: {}", list(&self.unexpected))?;
        }
        for (k, want, got) in self.mismatched.iter().take(8) {
            write!(f, "; {k}: model {want:?}, given {got:?}")?;
        }
        Ok(())
    }
}

/// Overwrite the parameters of `model` from PyTorch-layout `(key, shape, data)` entries.
/// Errors only on an inconsistent entry (data length ≠ shape); key problems are reported.
pub fn load_params<'a, I>(model: &mut dyn Parameters, entries: I) -> Result<LoadReport>
where
    I: IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
{
    let mut given: HashMap<&str, (&[usize], &[f32])> = HashMap::new();
    let mut order = Vec::new();
    for (key, shape, data) in entries {
        if shape.iter().product::<usize>() != data.len() {
            return Err(RuntimeError::shape(
                "load_params",
                format!("`{key}` has shape {shape:?} but {} values", data.len()),
            ));
        }
        given.insert(key, (shape, data));
        order.push(key);
    }
    let mut report = LoadReport::default();
    let mut seen = HashSet::new();
    let mut failure = None;
    model.visit_params("", &mut |key, p| {
        let Some(&(shape, data)) = given.get(key) else {
            report.missing.push(key.to_string());
            return;
        };
        seen.insert(key.to_string());
        let want = p.torch_shape();
        if want.as_slice() != shape {
            report
                .mismatched
                .push((key.to_string(), want, shape.to_vec()));
        } else if let Err(e) = p.load_torch(shape, data) {
            failure.get_or_insert(e);
        } else {
            report.loaded += 1;
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    report.unexpected = order
        .into_iter()
        .filter(|k| !seen.contains(*k))
        .map(str::to_string)
        .collect();
    Ok(report)
}

/// One exported tensor in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedTensor {
    pub key: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub kind: ParamKind,
}

/// Every parameter and buffer of `model` in PyTorch layout, in `state_dict` order.
pub fn export_params(model: &mut dyn Parameters) -> Vec<ExportedTensor> {
    let mut out = Vec::new();
    model.visit_params("", &mut |key, p| {
        out.push(ExportedTensor {
            key: key.to_string(),
            shape: p.torch_shape(),
            data: p.to_torch(),
            kind: p.kind,
        });
    });
    out
}

/// The accumulated gradients of `model` in PyTorch layout (parameters that have one).
pub fn export_grads(model: &mut dyn Parameters) -> Vec<ExportedTensor> {
    let mut out = Vec::new();
    model.visit_params("", &mut |key, p| {
        if let Some(data) = p.grad_to_torch() {
            out.push(ExportedTensor {
                key: key.to_string(),
                shape: p.torch_shape(),
                data,
                kind: p.kind,
            });
        }
    });
    out
}

/// `(key, PyTorch shape)` of every parameter and buffer, in `state_dict` order.
pub fn param_shapes(model: &mut dyn Parameters) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    model.visit_params("", &mut |key, p| {
        out.push((key.to_string(), p.torch_shape()))
    });
    out
}

/// [`load_params`] from a checkpoint's state dict (integer buffers are converted to f32).
pub fn load_state_dict(model: &mut dyn Parameters, state: &StateDict) -> Result<LoadReport> {
    let converted: Vec<(&str, &[usize], Vec<f32>)> = state
        .iter()
        .filter_map(|(k, t)| match &t.data {
            TensorData::Float(_) => None,
            TensorData::Int(v) => {
                Some((k, t.shape.as_slice(), v.iter().map(|&x| x as f32).collect()))
            }
        })
        .collect();
    let ints: HashMap<&str, &[f32]> = converted
        .iter()
        .map(|(k, _, v)| (*k, v.as_slice()))
        .collect();
    let entries = state.iter().filter_map(|(k, t)| match &t.data {
        TensorData::Float(v) => Some((k, t.shape.as_slice(), v.as_slice())),
        TensorData::Int(_) => ints.get(k).map(|v| (k, t.shape.as_slice(), *v)),
    });
    load_params(model, entries)
}

/// The parameters and buffers of `model` as a state dict (integer buffers as int64).
pub fn to_state_dict(model: &mut dyn Parameters, source: &str) -> Result<StateDict> {
    let mut sd = StateDict::new(source);
    for t in export_params(model) {
        let named = if t.kind == ParamKind::IntBuffer {
            NamedTensor {
                shape: t.shape,
                dtype: StoredDType::I64,
                data: TensorData::Int(t.data.iter().map(|&x| x.round() as i64).collect()),
            }
        } else {
            NamedTensor::from_f32(t.shape, t.data)
        };
        sd.insert(t.key.clone(), named)
            .map_err(|e| RuntimeError::Other(format!("to_state_dict: {e}")))?;
    }
    Ok(sd)
}
