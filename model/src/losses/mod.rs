//! The training losses and the frozen networks inside them.
//!
//! * [`vgg`]: VGG16 features in LPIPS' five slices (frozen, backward to the input);
//! * [`lpips`]: LPIPS (scaling layer, VGG16, unit-normalised squared differences, 1×1 lin
//!   layers), weights from the user's files; its scaling layer and per-layer distance are
//!   runtime ops (`medvae_runtime::ops::perceptual`), so it runs on the CPU or a GPU;
//! * [`lpips3d`]: LPIPS of volumes, the mean over all slices of the three axes, batched;
//! * [`discriminator_loss`]: the PatchGAN hinge step;
//! * [`stage1`]: the stage-1 generator loss with the adaptive discriminator weight;
//! * [`stage2`]: the stage-2 BiomedCLIP latent loss (frozen ViT tower, see [`crate::vit`]).

pub mod discriminator_loss;
pub mod lpips;
pub mod lpips3d;
pub mod stage1;
pub mod stage2;
pub mod vgg;

pub use discriminator_loss::{discriminator_step, DiscStep};
pub use lpips::{Lpips, LpipsGrads, Need};
pub use stage1::{GeneratorStep, Stage1Config, Stage1Log, Stage1Loss};
pub use vgg::{Vgg16Features, VGG16_WIDTHS};
