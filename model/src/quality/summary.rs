//! Statistics of the per-sample metrics over a whole evaluation.

use super::Quality;
use serde::Serialize;

/// Mean, standard deviation (n − 1, as `numpy.std(ddof=1)` / pandas), median and range of one
/// metric over the samples that have it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            count: n,
            mean,
            std,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// Every metric's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub l1: Option<Stats>,
    pub mse: Option<Stats>,
    pub psnr: Option<Stats>,
    pub ssim: Option<Stats>,
    /// Over the samples large enough for MS-SSIM only (see `count`).
    pub ms_ssim: Option<Stats>,
    /// Over the samples with an LPIPS value (none without LPIPS weights).
    pub lpips: Option<Stats>,
}

impl Summary {
    pub fn of(samples: &[Quality]) -> Summary {
        let pick = |f: &dyn Fn(&Quality) -> Option<f64>| {
            Stats::of(&samples.iter().filter_map(f).collect::<Vec<_>>())
        };
        Summary {
            samples: samples.len(),
            l1: pick(&|q| Some(q.l1)),
            mse: pick(&|q| Some(q.mse)),
            psnr: pick(&|q| Some(q.psnr)),
            ssim: pick(&|q| Some(q.ssim)),
            ms_ssim: pick(&|q| q.ms_ssim),
            lpips: pick(&|q| q.lpips),
        }
    }

    /// `(name, stats)` in report order.
    pub fn rows(&self) -> [(&'static str, Option<Stats>); 6] {
        [
            ("psnr_db", self.psnr),
            ("ssim", self.ssim),
            ("ms_ssim", self.ms_ssim),
            ("lpips", self.lpips),
            ("l1", self.l1),
            ("mse", self.mse),
        ]
    }
}

/// One metric of a model against a baseline on the same samples: the per-sample differences
/// (model − baseline) and how many samples each side wins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedStats {
    /// Samples where both have the metric.
    pub count: usize,
    pub mean_difference: f64,
    /// Standard deviation of the differences (n − 1).
    pub std_difference: f64,
    /// Samples where the model is better (higher PSNR / SSIM / MS-SSIM, lower LPIPS / L1 /
    /// MSE).
    pub better: usize,
    pub worse: usize,
}

/// Per metric, in [`Summary::rows`] order: `(name, paired statistics)`.
pub fn paired(model: &[Quality], baseline: &[Quality]) -> Vec<(&'static str, Option<PairedStats>)> {
    type Pick = fn(&Quality) -> Option<f64>;
    // (name, value, whether higher is better)
    let metrics: [(&str, Pick, bool); 6] = [
        ("psnr_db", |q| Some(q.psnr), true),
        ("ssim", |q| Some(q.ssim), true),
        ("ms_ssim", |q| q.ms_ssim, true),
        ("lpips", |q| q.lpips, false),
        ("l1", |q| Some(q.l1), false),
        ("mse", |q| Some(q.mse), false),
    ];
    metrics
        .iter()
        .map(|&(name, pick, higher_is_better)| {
            let diffs: Vec<f64> = model
                .iter()
                .zip(baseline)
                .filter_map(|(m, b)| Some(pick(m)? - pick(b)?))
                // A perfect reconstruction on both sides (inf − inf) says nothing.
                .filter(|d| !d.is_nan())
                .collect();
            let stats = Stats::of(&diffs).map(|s| {
                let wins = |d: &&f64| {
                    if higher_is_better {
                        **d > 0.0
                    } else {
                        **d < 0.0
                    }
                };
                let losses = |d: &&f64| {
                    if higher_is_better {
                        **d < 0.0
                    } else {
                        **d > 0.0
                    }
                };
                PairedStats {
                    count: s.count,
                    mean_difference: s.mean,
                    std_difference: s.std,
                    better: diffs.iter().filter(wins).count(),
                    worse: diffs.iter().filter(losses).count(),
                }
            });
            (name, stats)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_by_hand() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            (s.count, s.mean, s.median, s.min, s.max),
            (4, 2.5, 2.5, 1.0, 4.0)
        );
        // Σ(v − 2.5)² = 5 over n − 1 = 3.
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let one = Stats::of(&[7.0]).unwrap();
        assert_eq!((one.std, one.median), (0.0, 7.0));
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn paired_differences_and_wins_by_hand() {
        let q = |psnr, l1| Quality {
            l1,
            mse: 0.01,
            psnr,
            ssim: 0.5,
            ms_ssim: None,
            lpips: None,
        };
        let model = [q(30.0, 0.1), q(20.0, 0.3), q(25.0, 0.2)];
        let base = [q(28.0, 0.2), q(21.0, 0.2), q(25.0, 0.2)];
        let rows = paired(&model, &base);
        let psnr = rows[0].1.unwrap();
        assert_eq!(rows[0].0, "psnr_db");
        // differences +2, -1, 0
        assert!((psnr.mean_difference - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((psnr.better, psnr.worse, psnr.count), (1, 1, 3));
        // L1: lower is better: -0.1 (better), +0.1 (worse), 0.
        let l1 = rows[4].1.unwrap();
        assert_eq!((l1.better, l1.worse), (1, 1));
        assert!(rows[2].1.is_none(), "no MS-SSIM on either side");
    }

    #[test]
    fn ms_ssim_counts_only_the_samples_that_have_it() {
        let q = |ms| Quality {
            l1: 0.1,
            mse: 0.01,
            psnr: 26.0,
            ssim: 0.9,
            ms_ssim: ms,
            lpips: None,
        };
        let s = Summary::of(&[q(Some(0.8)), q(None), q(Some(0.6))]);
        assert_eq!(s.samples, 3);
        assert_eq!(s.ssim.unwrap().count, 3);
        let ms = s.ms_ssim.unwrap();
        assert_eq!(ms.count, 2);
        assert!((ms.mean - 0.7).abs() < 1e-12);
    }
}
