//! Memory-mappable sample shards: the output of `data prepare` and the input of training.
//!
//! A prepared dataset is a folder holding, per split (`train`, `val`, `test`), one index
//! (`<split>.index.json`, see [`SplitIndex`]) and the shard files it lists
//! (`<split>-00000.shard`, `<split>-00001.shard`, …). The index is written last, atomically, so
//! a split with an index is complete; shard files are never modified after their rename.
//!
//! # Shard file format, version 1
//!
//! All integers little-endian; offsets and lengths in bytes.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"MVAESHRD"` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | dtype: `1` = f32, `2` = f16 (IEEE binary16) |
//! | 16 | 4 | alignment: `64` or `4096`; every sample's data offset is a multiple of it |
//! | 20 | 4 | table entry size, `48` |
//! | 24 | 8 | sample count `n` |
//! | 32 | 8 | table offset (after the last sample, a multiple of 64) |
//! | 40 | 8 | file length (a shorter file is truncated, a longer one corrupt) |
//! | 48 | 8 | checksum of the table bytes |
//! | 56 | 8 | checksum of header bytes 0..56 |
//! | 64 | … | sample data, each sample at a multiple of `alignment`, gaps zero-filled |
//! | table offset | 48·n | the sample table |
//!
//! A table entry (48 bytes): rank `u32` (1..=4); dims `[u32; 4]` (the first `rank` used, the
//! rest 0); data offset `u64`; data length `u64` (= product of dims × dtype size); data
//! checksum `u64`; 4 reserved zero bytes.
//!
//! Sample values are row-major (C order) over the dims, channels-last: a 2D image is
//! `[H, W, C]`, a 3D volume `[D, H, W, 1]` in RAS array order, values normalised to [-1, 1].
//!
//! Checksums are FNV-1a over 64-bit little-endian words (a short tail is zero-padded), with the
//! FNV-64 offset basis and prime: cheap enough to compute while writing. The header and table
//! checksums are verified on every open; sample checksums by [`ShardReader::verify`].
//!
//! The table sits at the end so samples stream to disk as they are appended; the header is
//! written last, then the file is fsynced and renamed into place ([`ShardWriter::finish`]).

mod error;
mod format;
mod index;
mod reader;
mod writer;

pub use error::ShardError;
pub use format::{checksum, SampleShape, ShardDtype, FORMAT_VERSION, MAGIC, MAX_RANK};
pub(crate) use index::write_json_atomically;
pub use index::{
    index_path, IndexedSample, ShardEntry, ShardSet, SplitIndex, SplitWriter, INDEX_FORMAT,
};
pub use reader::{SampleValues, SampleView, ShardReader};
pub use writer::{ShardSummary, ShardWriter};

/// Allowed sample alignments: 64 (cache lines, SIMD loads) and 4096 (pages, direct IO).
pub const ALIGNMENTS: [usize; 2] = [64, 4096];
