//! medvae-model: MedVAE layers with explicit forward/backward, networks, losses, and the
//! golden-case verifier behind `medvae-fast verify`.
//!
//! * [`layer`]: the contract (`Param`, `Ctx`, `Layer`, `Parameters`);
//! * [`layers`]: convolution, normalisations, activations, dropout, init, state-dict IO;
//! * [`blocks`]: ResnetBlock, AttnBlock, resampling, the middle block, the PatchGAN
//!   discriminator;
//! * [`autoencoder`]: `AutoencoderKL` (encoder, decoder, latent head), 2D and 3D;
//! * [`lora`]: LoRA on convolutions; [`zoo`]: the published models and their configuration;
//! * [`infer`]: inference (latents from images/volumes, 3D sliding window);
//! * [`quality`]: reconstruction metrics (PSNR, SSIM, MS-SSIM) for `medvae-fast eval`;
//! * [`workloads`]: the benchmark workloads shared by `medvae-fast bench` and criterion.

pub mod autoencoder;
pub mod blocks;
pub mod infer;
pub mod layer;
pub mod layers;
pub mod lora;
pub mod losses;
pub mod optim;
pub mod quality;
pub mod train;
pub mod verify;
pub mod vit;
pub mod workloads;
pub mod zoo;
