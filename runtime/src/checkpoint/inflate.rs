//! Initialising a 3D MedVAE from a 2D checkpoint, as the reference's
//! `AutoencoderKL_3D.init_from_ckpt` does:
//! * a tensor whose shape equals the 3D model's is copied;
//! * a 4D kernel `(o, i, kh, kw)` meeting a 5D one `(o, i, kh, kw, kd)` is placed in the
//!   middle slice `kd / 2` of the LAST axis, every other slice zero, so that at initialisation
//!   the 3D conv applies the 2D filter to each depth slice independently;
//! * any other shape difference leaves the 3D parameter at the model's own initialisation
//!   (the reference lists those as "missing"), and so do parameters the checkpoint lacks.
//!
//! One deliberate difference: the reference assigns through broadcasting, so a 4D tensor that
//! merely broadcasts to `(o, i, kh, kw)` would be accepted there; here the four leading
//! dimensions must match exactly, since a broadcast kernel is never a correct inflation.

use super::state_dict::{NamedTensor, StateDict, TensorData};

/// What [`inflate_2d_to_3d_with_report`] did with each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InflationReport {
    /// Keys copied unchanged (equal shapes).
    pub copied: Vec<String>,
    /// 4D kernels inflated to 5D.
    pub inflated: Vec<String>,
    /// `(key, shape in the checkpoint, 3D shape)` where neither rule applies: the 3D model
    /// keeps its own initialisation.
    pub shape_skipped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// 3D keys absent from the checkpoint (they keep the model's initialisation).
    pub absent: Vec<String>,
    /// Checkpoint keys the 3D model does not have.
    pub unexpected: Vec<String>,
}

/// The 3D state to load over a freshly initialised 3D model: only keys that come from the
/// checkpoint are present, in `target_3d_shapes` order.
pub fn inflate_2d_to_3d(src2d: &StateDict, target_3d_shapes: &[(String, Vec<usize>)]) -> StateDict {
    inflate_2d_to_3d_with_report(src2d, target_3d_shapes).0
}

/// [`inflate_2d_to_3d`] plus a report of what happened to every key.
pub fn inflate_2d_to_3d_with_report(
    src2d: &StateDict,
    target_3d_shapes: &[(String, Vec<usize>)],
) -> (StateDict, InflationReport) {
    let mut out = StateDict::new(src2d.source());
    let mut report = InflationReport::default();
    let mut target_keys = std::collections::HashSet::new();
    for (key, shape3) in target_3d_shapes {
        target_keys.insert(key.as_str());
        let Some(src) = src2d.get(key) else {
            report.absent.push(key.clone());
            continue;
        };
        let tensor = if &src.shape == shape3 {
            report.copied.push(key.clone());
            src.clone()
        } else if let Some(t) =
            (shape3.len() == 5 && src.shape.len() == 4 && src.shape[..] == shape3[..4])
                .then(|| inflate_kernel(src, shape3[4]))
                .flatten()
        {
            report.inflated.push(key.clone());
            t
        } else {
            report
                .shape_skipped
                .push((key.clone(), src.shape.clone(), shape3.clone()));
            continue;
        };
        // Shapes and lengths agree by construction, so insertion does not fail; should it, the
        // key keeps the model's initialisation and the report says so.
        if out.insert(key.clone(), tensor).is_err() {
            report.copied.retain(|k| k != key);
            report.inflated.retain(|k| k != key);
            report
                .shape_skipped
                .push((key.clone(), src.shape.clone(), shape3.clone()));
        }
    }
    report.unexpected = src2d
        .keys()
        .filter(|k| !target_keys.contains(k))
        .map(str::to_owned)
        .collect();
    (out, report)
}

/// `(o, i, kh, kw)` -> `(o, i, kh, kw, depth)`, zero except slice `depth / 2` of the last axis.
/// `None` if the element count overflows.
fn inflate_kernel(src: &NamedTensor, depth: usize) -> Option<NamedTensor> {
    src.data.len().checked_mul(depth)?;
    let mut shape = src.shape.clone();
    shape.push(depth);
    let middle = depth / 2;
    let data = match &src.data {
        TensorData::Float(v) => TensorData::Float(spread(v, depth, middle, 0.0)),
        TensorData::Int(v) => TensorData::Int(spread(v, depth, middle, 0)),
    };
    Some(NamedTensor {
        shape,
        dtype: src.dtype,
        data,
    })
}

fn spread<T: Copy>(src: &[T], depth: usize, middle: usize, zero: T) -> Vec<T> {
    let mut out = vec![zero; src.len() * depth];
    if depth > 0 {
        for (j, &x) in src.iter().enumerate() {
            out[j * depth + middle] = x;
        }
    }
    out
}
