//! The data pipeline: CSV splits, reference-exact PNG / NIfTI preprocessing, memory-mapped
//! shards and the streaming loader.

pub mod dataset;
pub mod image2d;
pub mod loader;
pub mod shard;
pub mod volume3d;
