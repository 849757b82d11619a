//! What `eval` writes: the line of each sample, the CSV rows, the tables on stdout.

use crate::cmd_infer::describe;
use medvae_model::quality::ssim::MIN_MS_SSIM_SIZE;
use medvae_model::quality::{PairedStats, Quality, Stats, Summary};

/// One evaluated sample.
pub struct Row {
    pub name: String,
    /// Channels, then the spatial sizes.
    pub shape: Vec<usize>,
    pub quality: Quality,
    /// The `--baseline` model's metrics on the same sample.
    pub baseline: Option<Quality>,
    /// Sliding windows run (1 for 2D).
    pub windows: usize,
}

/// An optional value with `digits` decimals, or nothing.
fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |v| format!("{v:.digits$}"))
}

pub fn sample_line(r: &Row) -> String {
    let q = &r.quality;
    let win = if r.windows > 1 {
        format!(", {} windows", r.windows)
    } else {
        String::new()
    };
    let ms_text = q.ms_ssim.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut line = format!(
        "{} ({}{win}): PSNR {:.2} dB  SSIM {:.4}  MS-SSIM {ms_text}  L1 {:.4}",
        r.name,
        describe(&r.shape),
        q.psnr,
        q.ssim,
        q.l1
    );
    if let Some(lpips) = q.lpips {
        line.push_str(&format!("  LPIPS {lpips:.4}"));
    }
    if let Some(b) = &r.baseline {
        line.push_str(&format!(
            "  | baseline PSNR {:.2} dB  SSIM {:.4}",
            b.psnr, b.ssim
        ));
    }
    line
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const METRIC_COLUMNS: &str = "l1,mse,psnr_db,ssim,ms_ssim,lpips";

fn metric_fields(q: &Quality) -> String {
    format!(
        "{:.8},{:.8},{:.6},{:.8},{},{}",
        q.l1,
        q.mse,
        q.psnr,
        q.ssim,
        opt(q.ms_ssim, 8),
        opt(q.lpips, 8)
    )
}

pub fn csv_text(rows: &[Row]) -> String {
    let with_baseline = rows.iter().any(|r| r.baseline.is_some());
    let mut out = format!("name,shape,{METRIC_COLUMNS}");
    if with_baseline {
        let prefixed: Vec<String> = METRIC_COLUMNS
            .split(',')
            .map(|c| format!("baseline_{c}"))
            .collect();
        out.push(',');
        out.push_str(&prefixed.join(","));
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{},{},{}",
            csv_field(&r.name),
            describe(&r.shape),
            metric_fields(&r.quality)
        ));
        if let Some(b) = &r.baseline {
            out.push(',');
            out.push_str(&metric_fields(b));
        }
        out.push('\n');
    }
    out
}

pub fn summary_table(s: &Summary) -> String {
    let mut out = format!(
        "{:<8} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "metric", "n", "mean", "std", "median", "min", "max"
    );
    for (name, stats) in s.rows() {
        match stats {
            Some(Stats {
                count,
                mean,
                std,
                median,
                min,
                max,
            }) => out.push_str(&format!(
                "{name:<8} {count:>5} {mean:>10.4} {std:>10.4} {median:>10.4} {min:>10.4} {max:>10.4}\n"
            )),
            None if name == "ms_ssim" => out.push_str(&format!(
                "{name:<8} {:>5} (needs every side >= {MIN_MS_SSIM_SIZE} pixels)\n",
                0
            )),
            // Not asked for (no --lpips-vgg): no line.
            None if name == "lpips" => {}
            None => out.push_str(&format!("{name:<8} {:>5}\n", 0)),
        }
    }
    out
}

pub fn paired_table(rows: &[(&'static str, Option<PairedStats>)]) -> String {
    let mut out = format!(
        "{:<8} {:>5} {:>11} {:>10} {:>7} {:>7}\n",
        "metric", "n", "mean diff", "std diff", "better", "worse"
    );
    for (name, stats) in rows {
        if let Some(p) = stats {
            out.push_str(&format!(
                "{name:<8} {:>5} {:>+11.4} {:>10.4} {:>7} {:>7}\n",
                p.count, p.mean_difference, p.std_difference, p.better, p.worse
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_names_that_need_it() {
        assert_eq!(csv_field("a.png"), "a.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"hi\".png"), "\"say \"\"hi\"\".png\"");
    }

    #[test]
    fn csv_has_baseline_columns_only_with_a_baseline() {
        let q = Quality {
            l1: 0.5,
            mse: 0.25,
            psnr: 12.0,
            ssim: 0.75,
            ms_ssim: None,
            lpips: None,
        };
        let row = |baseline| Row {
            name: "a.png".into(),
            shape: vec![1, 8, 8],
            quality: q,
            baseline,
            windows: 1,
        };
        let plain = csv_text(&[row(None)]);
        assert_eq!(
            plain,
            "name,shape,l1,mse,psnr_db,ssim,ms_ssim,lpips\n\
             a.png,1x8x8,0.50000000,0.25000000,12.000000,0.75000000,,\n"
        );
        let both = csv_text(&[row(Some(q))]);
        let header = both.lines().next().unwrap();
        assert!(header.ends_with(",baseline_ssim,baseline_ms_ssim,baseline_lpips"));
        assert_eq!(both.lines().nth(1).unwrap().split(',').count(), 14);
    }
}
