//! Validation metrics, accumulated over an epoch as torchmetrics does: MSE is the mean squared
//! error over every pixel seen; PSNR is `10·log10(range² / MSE)` with `range` the spread
//! (max − min) of every target seen (torchmetrics' `PeakSignalNoiseRatio()` without a fixed
//! `data_range`).

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconstructionMetrics {
    sq_err: f64,
    count: u64,
    target_min: f32,
    target_max: f32,
}

impl Default for ReconstructionMetrics {
    fn default() -> Self {
        ReconstructionMetrics {
            sq_err: 0.0,
            count: 0,
            target_min: f32::INFINITY,
            target_max: f32::NEG_INFINITY,
        }
    }
}

impl ReconstructionMetrics {
    pub fn update(&mut self, target: &[f32], reconstruction: &[f32]) {
        for (&t, &r) in target.iter().zip(reconstruction) {
            let d = (r - t) as f64;
            self.sq_err += d * d;
            self.target_min = self.target_min.min(t);
            self.target_max = self.target_max.max(t);
        }
        self.count += target.len().min(reconstruction.len()) as u64;
    }

    pub fn mse(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sq_err / self.count as f64
        }
    }

    pub fn psnr(&self) -> f64 {
        let range = (self.target_max - self.target_min) as f64;
        10.0 * (range * range / self.mse()).log10()
    }
}

/// A running mean of logged values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }
    pub fn get(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.sum / self.n as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_and_mse_by_hand() {
        let mut m = ReconstructionMetrics::default();
        m.update(&[-1.0, 1.0], &[-0.5, 1.0]);
        m.update(&[0.0, 0.0], &[0.0, 0.5]);
        // Σd² = 0.25 + 0.25 over 4 pixels; range 2.
        assert!((m.mse() - 0.125).abs() < 1e-12);
        assert!((m.psnr() - 10.0 * (4.0f64 / 0.125).log10()).abs() < 1e-9);
        let mut mean = Mean::default();
        assert!(mean.get().is_nan());
        mean.add(1.0);
        mean.add(2.0);
        assert_eq!(mean.get(), 1.5);
    }
}
