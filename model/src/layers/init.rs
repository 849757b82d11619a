//! Parameter initialisation.
//!
//! `Init::Zeros` is for models about to be loaded from a checkpoint (no random-number work);
//! `Init::Random` reproduces PyTorch's default distributions (convolution weight and bias
//! `U(−1/√fan_in, 1/√fan_in)`, norm weight 1 and bias 0), not its exact numbers.

use medvae_runtime::ops::elementwise::{standard_normal, uniform_at};
use medvae_runtime::{Result, Tensor};

#[derive(Debug, Clone)]
pub enum Init {
    Zeros,
    /// Seeded random initialisation; each tensor draws a fresh stream.
    Random {
        seed: u64,
        counter: u64,
    },
}

impl Init {
    pub fn random(seed: u64) -> Init {
        Init::Random { seed, counter: 0 }
    }

    fn next_seed(&mut self) -> Option<u64> {
        match self {
            Init::Zeros => None,
            Init::Random { seed, counter } => {
                *counter += 1;
                Some(
                    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
                        ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )
            }
        }
    }

    /// `U(−bound, bound)` (zeros under `Init::Zeros`).
    pub fn uniform(&mut self, shape: &[usize], bound: f32) -> Result<Tensor> {
        let mut t = Tensor::zeros(shape);
        if let Some(seed) = self.next_seed() {
            for (i, v) in t.f32s_mut("Init::uniform")?.iter_mut().enumerate() {
                *v = (2.0 * uniform_at(seed, i as u64) - 1.0) * bound;
            }
        }
        Ok(t)
    }

    /// `N(0, std²)` (zeros under `Init::Zeros`).
    pub fn normal(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        match self.next_seed() {
            None => Ok(Tensor::zeros(shape)),
            Some(seed) => {
                let mut t = standard_normal(shape, seed)?;
                for v in t.f32s_mut("Init::normal")? {
                    *v *= std;
                }
                Ok(t)
            }
        }
    }

    /// A constant tensor (the same under every mode: norm weights are 1 in a fresh model).
    pub fn constant(&mut self, shape: &[usize], value: f32) -> Result<Tensor> {
        let mut t = Tensor::zeros(shape);
        if value != 0.0 {
            t.f32s_mut("Init::constant")?.fill(value);
        }
        Ok(t)
    }
}
