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
        }
    }

    /// `(name, stats)` in report order.
    pub fn rows(&self) -> [(&'static str, Option<Stats>); 5] {
        [
            ("psnr_db", self.psnr),
            ("ssim", self.ssim),
            ("ms_ssim", self.ms_ssim),
            ("l1", self.l1),
            ("mse", self.mse),
        ]
    }
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
    fn ms_ssim_counts_only_the_samples_that_have_it() {
        let q = |ms| Quality {
            l1: 0.1,
            mse: 0.01,
            psnr: 26.0,
            ssim: 0.9,
            ms_ssim: ms,
        };
        let s = Summary::of(&[q(Some(0.8)), q(None), q(Some(0.6))]);
        assert_eq!(s.samples, 3);
        assert_eq!(s.ssim.unwrap().count, 3);
        let ms = s.ms_ssim.unwrap();
        assert_eq!(ms.count, 2);
        assert!((ms.mean - 0.7).abs() < 1e-12);
    }
}
