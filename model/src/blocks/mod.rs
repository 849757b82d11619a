//! Composite blocks of the MedVAE networks (and the PatchGAN discriminator), each with its
//! forward and explicit backward side by side.

pub mod attention;
pub mod mid;
pub mod norm_conv;
pub mod patch_gan;
pub mod resample;
pub mod resnet;

pub use attention::AttnBlock;
pub use mid::MidBlock;
pub use patch_gan::NLayerDiscriminator;
pub use resample::{Downsample, Upsample};
pub use resnet::ResnetBlock;
