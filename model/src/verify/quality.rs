//! Golden cases with `"metric": "quality"`: the reconstruction metrics of `medvae-fast eval`
//! (PSNR, SSIM, its contrast term, MS-SSIM; one value per image of `in.preds` / `in.target`).

use super::Produced;
use crate::quality::ssim::{ssim_terms, Grid};
use crate::quality::{measure, widened, VALUE_RANGE};
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::{Result, RuntimeError};

pub fn handles(case: &GoldenCase) -> bool {
    case.meta_str("metric") == Some("quality")
}

pub fn run(case: &GoldenCase) -> Result<Option<Produced>> {
    // The engine computes with the range [-1, 1] only: a case for another range is not ours.
    let range = case
        .meta
        .get("data_range")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>());
    if range != Some(vec![VALUE_RANGE.0, VALUE_RANGE.1]) {
        return Ok(None);
    }
    let preds = case.tensor("in.preds")?;
    let target = case.tensor("in.target")?;
    let bad = |msg: String| RuntimeError::file(&case.path, msg);
    if preds.shape != target.shape || !(4..=5).contains(&preds.shape.len()) {
        return Err(bad(format!(
            "in.preds {:?} and in.target {:?} must be one [N, C, spatial..] shape with 2 or 3 \
             spatial axes",
            preds.shape, target.shape
        )));
    }
    let (n, channels, spatial) = (preds.shape[0], preds.shape[1], &preds.shape[2..]);
    let per_image = preds.data.len() / n.max(1);
    let mut out = Produced::new();
    for i in 0..n {
        let p = &preds.data[i * per_image..(i + 1) * per_image];
        let t = &target.data[i * per_image..(i + 1) * per_image];
        let q = measure(p, t, channels, spatial).map_err(|e| bad(format!("image {i}: {e}")))?;
        let (pc, tc) = (widened(p), widened(t));
        let grid = |data| Grid {
            data,
            channels,
            spatial,
        };
        let cs = ssim_terms(grid(&pc), grid(&tc), VALUE_RANGE)
            .map_err(|e| bad(format!("image {i}: {e}")))?
            .cs;
        let mut push = |name: &str, v: f64| {
            out.entry(name.to_string()).or_default().push(v as f32);
        };
        push("out.psnr", q.psnr);
        push("out.ssim", q.ssim);
        push("out.cs", cs);
        if let Some(ms) = q.ms_ssim {
            push("out.ms_ssim", ms);
        }
    }
    Ok(Some(out))
}
