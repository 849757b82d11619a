//! Native CPU kernels. Every op has its forward and backward side by side in one file.
//! Parallelism is rayon (batch/channel/row splits) plus the `gemm` crate's own threading.

pub mod activation;
pub mod adam;
pub mod attention;
pub mod batch_norm;
pub mod conv;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod loss;
pub mod lpips;
pub mod pool;
pub mod reduce;
pub mod resize;
pub mod slices;
pub mod softmax;
pub mod strided;
pub mod upsample;
