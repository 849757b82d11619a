//! The inference driver: one file in, the reference's output arrays out.
//!
//! What the reference (`medvae_inference` → `MVAE.forward`, medvae 0.1.7) computes:
//!
//! | model | preprocessing | latent | `--decode` also gives |
//! |---|---|---|---|
//! | 2D | `load_2d`: native size, per-channel min-max, `(x − 0.5) / 0.5`, channel mean for 1-channel models | `channel_proj(channel_ds(z) + z)` (`z` with [`InferOptions::latent_z`]) | `decoder(z)` |
//! | 3D | `load_mri_3d` / `load_ct_3d`: RAS, intensity rule, `CropForeground(k_divisible=16)` | `z`, stitched by a gaussian sliding window over windows of `roi_size_calc(shape, roi_size)` | `decoder(z)` per window, stitched the same way |
//!
//! One deliberate difference: `z` is the posterior mode (the mean). The reference's forward
//! *samples* `z = mean + std · eps` with fresh noise on every call, so its latents differ run to
//! run; the mode is what that noise is centred on, and makes a latent archive reproducible.
//!
//! Outputs are returned as the reference hands them to nibabel: channels-first, batch and
//! every size-1 axis squeezed (`tensor.squeeze()`), C order.

use super::error::InferError;
use super::provenance::OutputKind;
use super::window::{roi_size_calc, SlidingWindow};
use crate::autoencoder::{AutoencoderKL, Sampling};
use crate::layer::{move_params, Ctx};
use medvae_runtime::data::image2d::{load_2d, Image2d, Preprocess2d};
use medvae_runtime::data::volume3d::{load_inference, Affine, Modality as VolumeModality, Volume};
use medvae_runtime::layout::to_channels_first;
use medvae_runtime::{Device, Tensor};
use std::path::Path;

/// The imaging modality (`-modality` of the reference); it picks the 3D intensity rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Xray,
    Ct,
    Mri,
}

/// The file kinds inference reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Png,
    Nifti,
}

const SUFFIXES: [(&str, InputKind); 3] = [
    (".png", InputKind::Png),
    (".nii.gz", InputKind::Nifti),
    (".nii", InputKind::Nifti),
];

/// The kind of `path` by its name (`.png`, `.nii`, `.nii.gz`, any case), if it is one.
pub fn input_kind(path: &Path) -> Option<InputKind> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    SUFFIXES
        .iter()
        .find(|(s, _)| name.ends_with(s) && name.len() > s.len())
        .map(|&(_, k)| k)
}

/// The file name without its image suffix: the reference names each latent after its source
/// (`name.split('.')[0] + ".nii.gz"`; only the suffix is cut here, so dots inside a name stay).
pub fn output_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for (s, _) in SUFFIXES {
        if lower.ends_with(s) && name.len() > s.len() {
            return name[..name.len() - s.len()].to_string();
        }
    }
    name
}

/// What to compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferOptions {
    pub modality: Modality,
    /// Also decode (the reconstruction, in the normalised [-1, 1] intensity space).
    pub decode: bool,
    /// Largest window edge for 3D sliding-window inference (the reference's `gpu_dim`).
    pub roi_size: usize,
    /// Overlap between neighbouring 3D windows.
    pub overlap: f64,
    /// Where the model runs (preprocessing and window stitching stay on the CPU).
    pub device: Device,
    /// Write the 2D models' `z` instead of their stage-2 latent (3D latents are always `z`).
    pub latent_z: bool,
}

/// An array as the reference gives it to nibabel: NumPy shape, C-order data.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The outputs for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub latent: Array,
    pub decoded: Option<Array>,
    /// Shape of the preprocessed input (`[C, H, W]` or `[D0, D1, D2]`).
    pub input_shape: Vec<usize>,
    /// Sliding windows run (1 for 2D).
    pub windows: usize,
    /// Where the preprocessed volume's voxels lie in the source file's world space (3D files;
    /// see `medvae_runtime::data::volume3d::load_inference`).
    pub affine: Option<Affine>,
}

/// `[1, spatial.., C]` channels-last → channels-first with every size-1 axis squeezed (as
/// `torch.squeeze()`; an all-ones shape keeps one axis).
pub fn reference_array(t: &Tensor) -> Result<Array, InferError> {
    let host = t.on_device(Device::Cpu)?;
    let (data, shape) = to_channels_first(host.f32s("reference_array")?, t.shape())?;
    let mut squeezed: Vec<usize> = shape.into_iter().filter(|&d| d != 1).collect();
    if squeezed.is_empty() {
        squeezed.push(1);
    }
    Ok(Array {
        shape: squeezed,
        data,
    })
}

/// An input after preprocessing, as the model reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    Image(Image2d),
    /// With where its voxels lie in the source file's world space, when read from a file.
    Volume(Volume, Option<Affine>),
}

impl Prepared {
    /// The values channels-first (as the decoded [`Array`] holds them), the channel count and
    /// the spatial sizes.
    pub fn channels_first(&self) -> Result<(Vec<f32>, usize, Vec<usize>), InferError> {
        Ok(match self {
            Prepared::Image(img) => {
                let shape = [1, img.height, img.width, img.channels];
                let (data, _) = to_channels_first(&img.data, &shape)?;
                (data, img.channels, vec![img.height, img.width])
            }
            Prepared::Volume(vol, _) => (vol.data.clone(), 1, vol.shape.to_vec()),
        })
    }
}

/// Reads and preprocesses files for one model and modality ([`Inferencer::preparer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preparer {
    reads: InputKind,
    /// 1-channel models average the channels of colour images, as the reference does.
    merge_channels: bool,
    modality: Modality,
}

impl Preparer {
    /// Read and preprocess one file.
    pub fn prepare_file(&self, path: &Path) -> Result<Prepared, InferError> {
        let want = self.reads;
        match input_kind(path) {
            Some(k) if k == want => {}
            _ => {
                let (what, ext) = match want {
                    InputKind::Png => ("2D", ".png images"),
                    InputKind::Nifti => ("3D", ".nii / .nii.gz volumes"),
                };
                return Err(InferError::Input {
                    path: path.to_path_buf(),
                    msg: format!("a {what} model reads {ext}"),
                });
            }
        }
        if want == InputKind::Png {
            Ok(Prepared::Image(load_2d(
                path,
                &Preprocess2d::inference(self.merge_channels),
            )?))
        } else {
            let rule = match self.modality {
                Modality::Ct => VolumeModality::Ct,
                _ => VolumeModality::Mri,
            };
            let (vol, affine) = load_inference(path, rule)?;
            Ok(Prepared::Volume(vol, Some(affine)))
        }
    }
}

/// Runs a loaded model on files.
#[derive(Debug)]
pub struct Inferencer {
    model: AutoencoderKL,
    opts: InferOptions,
}

impl Inferencer {
    /// Check that the model and the options go together.
    pub fn new(mut model: AutoencoderKL, opts: InferOptions) -> Result<Inferencer, InferError> {
        move_params(&mut model, opts.device)?;
        let cfg = &model.config;
        if cfg.dims == 3 {
            if opts.modality == Modality::Xray {
                return Err(InferError::Setup(
                    "a 3D model reads CT or MRI volumes: use --modality ct or mri (xray is 2D)"
                        .into(),
                ));
            }
            if cfg.in_channels != 1 {
                return Err(InferError::Setup(format!(
                    "a 3D model must take 1 input channel (volumes are single-channel), this \
                     one takes {}",
                    cfg.in_channels
                )));
            }
        }
        if opts.roi_size == 0 {
            return Err(InferError::Setup("--roi-size must be positive".into()));
        }
        Ok(Inferencer { model, opts })
    }

    /// 2 or 3.
    pub fn dims(&self) -> usize {
        self.model.config.dims
    }

    /// What the latent outputs hold: the 2D stage-2 latent (the reference's output, for
    /// models with the latent head, unless `z` was asked for) or `z`.
    pub fn latent_kind(&self) -> OutputKind {
        if self.dims() == 2 && self.model.head.is_some() && !self.opts.latent_z {
            OutputKind::Latent
        } else {
            OutputKind::Z
        }
    }

    /// The file kind this model reads.
    pub fn reads(&self) -> InputKind {
        if self.dims() == 2 {
            InputKind::Png
        } else {
            InputKind::Nifti
        }
    }

    /// What reading and preprocessing a file needs, apart from the model: the reader
    /// thread of [`super::pipelined`] runs it while the model computes.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            reads: self.reads(),
            merge_channels: self.model.config.in_channels == 1,
            modality: self.opts.modality,
        }
    }

    /// Run a preprocessed input (`source` names it in errors).
    pub fn infer_prepared(
        &mut self,
        input: &Prepared,
        source: &Path,
    ) -> Result<Inferred, InferError> {
        match input {
            Prepared::Image(img) => self.infer_image(img, source),
            Prepared::Volume(vol, affine) => {
                let mut out = self.infer_volume(vol)?;
                out.affine = *affine;
                Ok(out)
            }
        }
    }

    /// Run a preprocessed image (`source` names it in errors).
    pub fn infer_image(&mut self, img: &Image2d, source: &Path) -> Result<Inferred, InferError> {
        let want = self.model.config.in_channels;
        if img.channels != want {
            return Err(InferError::Input {
                path: source.to_path_buf(),
                msg: format!(
                    "the image has {} channels after preprocessing, the model takes {want} \
                     (1-channel models average the channels of colour images; a 3-channel \
                     model needs RGB input)",
                    img.channels
                ),
            });
        }
        // Each stride-2 downsampling halves the plane (rounding down) and the last one needs
        // two pixels, so a side shorter than the factor would fail deep in the encoder with
        // a convolution shape error that names no file.
        let factor = self.model.config.downsample_factor();
        if img.height < factor || img.width < factor {
            return Err(InferError::Input {
                path: source.to_path_buf(),
                msg: format!(
                    "the image is {}x{} pixels; a {factor}x-downsampling model needs at least \
                     {factor}x{factor}",
                    img.height, img.width
                ),
            });
        }
        let x = Tensor::from_vec(&[1, img.height, img.width, img.channels], img.data.clone())?
            .into_device(self.opts.device)?;
        let mut ctx = Ctx::eval();
        let moments = self.model.encode(&x, &mut ctx)?;
        let (z, _) = self.model.sample(&moments, Sampling::Mode, &mut ctx)?;
        let latent = if self.latent_kind() == OutputKind::Latent {
            self.model.latent(&z, &mut ctx)?
        } else {
            z.clone()
        };
        let decoded = if self.opts.decode {
            Some(reference_array(&self.model.decode(&z, &mut ctx)?)?)
        } else {
            None
        };
        Ok(Inferred {
            latent: reference_array(&latent)?,
            decoded,
            input_shape: vec![img.channels, img.height, img.width],
            windows: 1,
            affine: None,
        })
    }

    /// Run a preprocessed volume through the gaussian sliding window.
    pub fn infer_volume(&mut self, vol: &Volume) -> Result<Inferred, InferError> {
        let roi = roi_size_calc(&vol.shape, self.opts.roi_size)?;
        let mut sw = SlidingWindow::gaussian(roi);
        sw.overlap = self.opts.overlap;
        let [d0, d1, d2] = vol.shape;
        let x = Tensor::from_vec(&[1, d0, d1, d2, 1], vol.data.clone())?;
        let decode = self.opts.decode;
        let device = self.opts.device;
        let model = &mut self.model;
        let mut windows = 0;
        let outs = sw.run(&x, |win| {
            windows += 1;
            let mut ctx = Ctx::eval();
            // Windows are cut and stitched on the host; only the model runs on `device`.
            let win = win.on_device(device)?;
            let moments = model.encode(&win, &mut ctx)?;
            let (z, _) = model.sample(&moments, Sampling::Mode, &mut ctx)?;
            let mut out = Vec::with_capacity(2);
            if decode {
                let dec = model.decode(&z, &mut ctx)?;
                out.push(z.into_device(Device::Cpu)?);
                out.push(dec.into_device(Device::Cpu)?);
            } else {
                out.push(z.into_device(Device::Cpu)?);
            }
            Ok(out)
        })?;
        let mut outs = outs.into_iter();
        let latent = outs
            .next()
            .ok_or_else(|| InferError::Window("no output".into()))?;
        let decoded = outs.next().map(|d| reference_array(&d)).transpose()?;
        Ok(Inferred {
            latent: reference_array(&latent)?,
            decoded,
            input_shape: vol.shape.to_vec(),
            windows,
            affine: None,
        })
    }
}
