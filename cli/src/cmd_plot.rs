//! `medvae-fast plot RUN_DIR`: loss curves from `metrics.jsonl` as PNG line charts, one per
//! logged quantity (`plots/train_aeloss.png`, `plots/valid_psnr.png`, ...). The y range and the
//! first/last step are written on the chart with a small built-in digit font (no font files).

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const W: u32 = 720;
const H: u32 = 400;
const MARGIN_L: u32 = 84;
const MARGIN_R: u32 = 20;
const MARGIN_T: u32 = 20;
const MARGIN_B: u32 = 40;

/// The quantities plotted, per split.
const SERIES: [(&str, &str); 10] = [
    ("train", "aeloss"),
    ("train", "rec_loss"),
    ("train", "kl"),
    ("train", "discloss"),
    ("train", "d_weight"),
    ("valid", "aeloss"),
    ("valid", "rec_loss"),
    ("valid", "mse"),
    ("valid", "psnr"),
    ("valid", "ssim"),
];

pub fn run(run_dir: &Path) -> Result<()> {
    let metrics = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("cannot read {} (is this a run folder?)", metrics.display()))?;
    let mut series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not JSON", metrics.display(), n + 1))?;
        let split = v["split"].as_str().unwrap_or_default();
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        for (s, key) in SERIES {
            if s == split {
                if let Some(y) = v[key].as_f64().filter(|y| y.is_finite()) {
                    series
                        .entry((s.to_string(), key.to_string()))
                        .or_default()
                        .push((step, y));
                }
            }
        }
    }
    if series.is_empty() {
        bail!("{}: no logged values to plot", metrics.display());
    }
    let out = run_dir.join("plots");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for ((split, key), points) in &series {
        let path = out.join(format!("{split}_{key}.png"));
        chart(points)
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        let (lo, hi) = y_range(points);
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(
            std::io::stdout(),
            "{}  {} points, steps {}..{}, range {lo:.4}..{hi:.4}",
            path.display(),
            points.len(),
            points[0].0,
            points[points.len() - 1].0
        );
    }
    Ok(())
}

fn y_range(points: &[(f64, f64)]) -> (f64, f64) {
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn chart(points: &[(f64, f64)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let grey = Rgb([120, 120, 120]);
    let (x0, x1) = (MARGIN_L, W - MARGIN_R);
    let (y0, y1) = (MARGIN_T, H - MARGIN_B);
    line(&mut img, (x0, y1), (x1, y1), grey);
    line(&mut img, (x0, y0), (x0, y1), grey);
    let (lo, mut hi) = y_range(points);
    if hi <= lo {
        hi = lo + 1.0;
    }
    let (s0, mut s1) = (points[0].0, points[points.len() - 1].0);
    if s1 <= s0 {
        s1 = s0 + 1.0;
    }
    let px = |(s, y): (f64, f64)| -> (u32, u32) {
        let fx = (s - s0) / (s1 - s0);
        let fy = (y - lo) / (hi - lo);
        (
            x0 + (fx * (x1 - x0) as f64).round() as u32,
            y1 - (fy * (y1 - y0) as f64).round() as u32,
        )
    };
    let blue = Rgb([31, 119, 180]);
    for pair in points.windows(2) {
        line(&mut img, px(pair[0]), px(pair[1]), blue);
    }
    if points.len() == 1 {
        let (x, y) = px(points[0]);
        line(&mut img, (x.saturating_sub(2), y), (x + 2, y), blue);
    }
    let black = Rgb([0, 0, 0]);
    text(&mut img, 4, y0, &short(hi), black);
    text(&mut img, 4, y1 - 7, &short(lo), black);
    text(&mut img, x0, y1 + 8, &short(s0), black);
    let last = short(s1);
    text(
        &mut img,
        x1.saturating_sub(6 * last.len() as u32),
        y1 + 8,
        &last,
        black,
    );
    img
}

/// A number in at most ~10 characters.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.2e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn line(img: &mut RgbImage, (xa, ya): (u32, u32), (xb, yb): (u32, u32), c: Rgb<u8>) {
    let (dx, dy) = (xb as f64 - xa as f64, yb as f64 - ya as f64);
    let n = dx.abs().max(dy.abs()).max(1.0) as u32;
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let x = (xa as f64 + t * dx).round() as u32;
        let y = (ya as f64 + t * dy).round() as u32;
        if x < img.width() && y < img.height() {
            img.put_pixel(x, y, c);
        }
    }
}

/// 3×5 glyphs of digits and `.-e+`, one row per 3-bit line, top to bottom.
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => [0; 5],
    }
}

/// Draw `s` at (x, y) in glyphs scaled ×2 (6×10 pixels with spacing).
fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, c: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let px = x + i as u32 * 8 + col * 2 + ox;
                        let py = y + row as u32 * 2 + oy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, c);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_logged_series_and_rejects_empty_runs() {
        let dir = std::env::temp_dir().join(format!("medvae-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(run(&dir).is_err(), "no metrics.jsonl");
        std::fs::write(
            dir.join("metrics.jsonl"),
            "{\"split\":\"train\",\"step\":0,\"aeloss\":2.0,\"rec_loss\":0.5}\n\
             {\"split\":\"train\",\"step\":5,\"aeloss\":1.0,\"rec_loss\":0.25}\n\
             {\"split\":\"valid\",\"step\":5,\"psnr\":12.5}\n",
        )
        .unwrap();
        run(&dir).unwrap();
        for f in ["train_aeloss.png", "train_rec_loss.png", "valid_psnr.png"] {
            let img = image::open(dir.join("plots").join(f)).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (W, H));
            // The curve is drawn: some pixels carry the line colour.
            assert!(img.pixels().any(|p| *p == Rgb([31, 119, 180])), "{f}");
        }
        assert!(!dir.join("plots/train_kl.png").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(123456.0), "1.23e5");
        assert_eq!(short(0.0001), "1.00e-4");
    }
}
