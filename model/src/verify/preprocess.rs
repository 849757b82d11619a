//! Golden cases with a `loader` in their metadata: what the reference data loaders return for a
//! real file (tensor `img`, channels-first as the reference returns it).

use super::Produced;
use medvae_runtime::data::image2d::{load_2d, Preprocess2d};
use medvae_runtime::data::volume3d::{
    load_ct_3d, load_ct_3d_finetune, load_mri_3d, load_mri_3d_finetune, Volume,
};
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::{Result, RuntimeError};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Run a loader case. `Ok(None)`: the loader is not implemented.
pub fn run(case: &GoldenCase) -> Result<Option<Produced>> {
    let loader = case.meta_str("loader").unwrap_or_default();
    let file = case.meta_str("file").ok_or_else(|| {
        RuntimeError::file(&case.path, "loader case without `file` in its metadata")
    })?;
    let path = locate(&case.path, file)?;
    let merge = case
        .meta
        .get("merge_channels")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    // The finetune crops are seeded; the reference cases are chosen so the crop is the whole
    // padded volume, so any fixed seed reproduces them.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let err = |e: &dyn std::fmt::Display| RuntimeError::Other(e.to_string());
    let img = match loader {
        "load_2d" | "load_2d_finetune" => {
            let p = if loader == "load_2d" {
                Preprocess2d::inference(merge)
            } else {
                Preprocess2d::finetune(merge)
            };
            let im = load_2d(&path, &p).map_err(|e| err(&e))?;
            channels_first(&im.data, im.height * im.width, im.channels)
        }
        "load_mri_3d" => volume(load_mri_3d(&path).map_err(|e| err(&e))?),
        "load_ct_3d" => volume(load_ct_3d(&path).map_err(|e| err(&e))?),
        "load_mri_3d_finetune" => {
            volume(load_mri_3d_finetune(&path, &mut rng).map_err(|e| err(&e))?)
        }
        "load_ct_3d_finetune" => volume(load_ct_3d_finetune(&path, &mut rng).map_err(|e| err(&e))?),
        _ => return Ok(None),
    };
    Ok(Some(Produced::from([("img".to_string(), img)])))
}

/// The case's `file` is relative to the folder holding the golden folder: look for it beside
/// each ancestor of the case file, so a sub-folder of a golden set can be verified alone.
fn locate(case_path: &Path, file: &str) -> Result<PathBuf> {
    for dir in case_path.ancestors().skip(1) {
        let candidate = dir.join(file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(RuntimeError::file(
        case_path,
        format!("input file `{file}` not found beside any parent folder of the case"),
    ))
}

fn channels_first(data: &[f32], pixels: usize, channels: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for p in 0..pixels {
        for c in 0..channels {
            out[c * pixels + p] = data[p * channels + c];
        }
    }
    out
}

/// A RAS volume is already in the reference's `[1, D0, D1, D2]` element order.
fn volume(v: Volume) -> Vec<f32> {
    v.data
}
