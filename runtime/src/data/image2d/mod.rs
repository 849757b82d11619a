//! 2D PNG preprocessing, equal to the reference MedVAE loaders (medvae 0.1.7
//! `utils/loaders.py`):
//!
//! | function | reference | steps |
//! |---|---|---|
//! | [`load_2d`] with [`Preprocess2d::finetune`] | `load_2d_finetune` | `PIL.Image.open` → `ToTensor` → `Resize((384, 384), BICUBIC, antialias=True)` → per-channel min-max to [0, 1] → `(x − 0.5) / 0.5` → channel mean if merging |
//! | [`load_2d`] with [`Preprocess2d::inference`] | `load_2d` | the same without the resize |
//!
//! Images are channels-last: sample `(y, x, c)` is `data[(y * width + x) * channels + c]`, the
//! layout of a `[1, 1, H, W, C]` activation (the reference tensor is `[C, H, W]`).
//!
//! Decoding follows what Pillow and ToTensor do, quirks included (see [`png`]): alpha channels
//! are kept as channels, 16-bit colour keeps only the high byte, 16-bit greyscale becomes an
//! int16 tensor (wrapping above 32767) that the resize rounds back to integers.
//!
//! Unlike the reference, which prints the exception and returns an all-zero 384 × 384 image,
//! every problem is an [`Image2dError`] naming the file: unreadable, not a PNG, corrupt or
//! truncated data, palette PNGs, NaN/Inf values. A constant channel becomes −1, as MONAI's
//! min-max guard makes it (see [`preprocess_2d`]).

mod error;
pub mod png;
mod preprocess;

pub use error::Image2dError;
pub use png::{decode_png, load_png};
pub use preprocess::{preprocess_2d, Preprocess2d, FINETUNE_SIZE};

use std::path::Path;

/// How to interpret an image's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Samples {
    /// Real values: 8-bit samples divided by 255 (as ToTensor does for `uint8` images), or the
    /// output of preprocessing.
    Float,
    /// Integers in the int16 range: a 16-bit greyscale PNG that Pillow opens as `I;16` and
    /// ToTensor turns into an int16 tensor. Resizing rounds the result back to int16.
    Int16,
}

/// A 2D image, channels-last `[height, width, channels]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image2d {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<f32>,
    pub samples: Samples,
}

/// Read a PNG and preprocess it: the reference `load_2d_finetune` / `load_2d`, depending on `p`.
pub fn load_2d(path: &Path, p: &Preprocess2d) -> Result<Image2d, Image2dError> {
    preprocess_2d(&load_png(path)?, p, path)
}
