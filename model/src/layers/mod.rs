//! Leaf layers: convolution, normalisations, dropout, parameter initialisation, and the
//! state-dict load/export of any [`crate::layer::Parameters`].

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod dropout;
pub mod group_norm;
pub mod init;
pub mod state;

pub use activation::Act;
pub use batch_norm::BatchNorm;
pub use conv::{Conv, ConvOp};
pub use group_norm::GroupNorm;
pub use init::Init;
