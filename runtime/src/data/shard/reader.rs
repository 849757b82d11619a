//! Reading a shard through a read-only memory map. `open` validates the header (magic,
//! version, dtype, alignment, file length, checksum) and every table entry (shape, length,
//! alignment, bounds), so afterwards every sample slice is in bounds: a truncated or corrupt
//! shard is an error naming the file, never a panic or garbage.

use super::error::ShardError;
use super::format::{checksum, Entry, Header, SampleShape, ShardDtype};
use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A sample's values, borrowed from the mapping.
#[derive(Debug, Clone, Copy)]
pub enum SampleValues<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl SampleValues<'_> {
    pub fn len(&self) -> usize {
        match self {
            SampleValues::F32(v) => v.len(),
            SampleValues::F16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Convert into `dst` (same length; f16 → f32 uses the CPU's conversion instructions where
    /// present).
    pub fn copy_to_f32(&self, dst: &mut [f32]) {
        match self {
            SampleValues::F32(v) => dst.copy_from_slice(v),
            SampleValues::F16(v) => v.convert_to_f32_slice(dst),
        }
    }
}

/// One sample: shape (channels-last) and values.
#[derive(Debug, Clone, Copy)]
pub struct SampleView<'a> {
    pub shape: &'a [usize],
    pub values: SampleValues<'a>,
}

pub struct ShardReader {
    path: PathBuf,
    map: Mmap,
    dtype: ShardDtype,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for ShardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardReader")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("samples", &self.entries.len())
            .finish()
    }
}

impl ShardReader {
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        if cfg!(target_endian = "big") {
            return Err(ShardError::corrupt(
                path,
                "shards are little-endian; this host is big-endian",
            ));
        }
        let file = File::open(path).map_err(|e| ShardError::io(path, "open", e))?;
        // SAFETY: the map is read-only and shards are never modified after their atomic rename
        // (writers create new files); truncating a shard under a running loader is outside the
        // contract, as for any memory-mapped input.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ShardError::io(path, "memory-map", e))?;
        let header = Header::decode(path, &map[..])?;
        let table_start = header.table_offset as usize;
        let entries = Entry::decode_table(path, &header, &map[table_start..])?;
        Ok(ShardReader {
            path: path.to_path_buf(),
            map,
            dtype: header.dtype,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn dtype(&self) -> ShardDtype {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The shape of sample `i`.
    pub fn shape(&self, i: usize) -> Result<&SampleShape, ShardError> {
        self.entry(i).map(|e| &e.shape)
    }

    fn entry(&self, i: usize) -> Result<&Entry, ShardError> {
        self.entries.get(i).ok_or_else(|| ShardError::OutOfRange {
            path: self.path.clone(),
            index: i,
            len: self.entries.len(),
        })
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        // in bounds: checked against the file length by `decode_table`
        &self.map[e.offset as usize..(e.offset + e.len) as usize]
    }

    /// Sample `i`, borrowed from the mapping.
    pub fn sample(&self, i: usize) -> Result<SampleView<'_>, ShardError> {
        let e = self.entry(i)?;
        let bytes = self.bytes(e);
        let misaligned = || {
            ShardError::corrupt(
                &self.path,
                format!("sample {i}: data not aligned in memory"),
            )
        };
        let values = match self.dtype {
            ShardDtype::F32 => {
                SampleValues::F32(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            ShardDtype::F16 => {
                SampleValues::F16(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
        };
        Ok(SampleView {
            shape: e.shape.dims(),
            values,
        })
    }

    /// Sample `i` converted to a new f32 vector (for inspection and tests; the loader converts
    /// straight into its batch buffers).
    pub fn read_f32(&self, i: usize) -> Result<Vec<f32>, ShardError> {
        let s = self.sample(i)?;
        let mut out = vec![0.0; s.values.len()];
        s.values.copy_to_f32(&mut out);
        Ok(out)
    }

    /// Check every sample's data checksum (reads the whole file).
    pub fn verify(&self) -> Result<(), ShardError> {
        for (i, e) in self.entries.iter().enumerate() {
            if checksum(self.bytes(e)) != e.checksum {
                return Err(ShardError::corrupt(
                    &self.path,
                    format!("sample {i}: data checksum mismatch"),
                ));
            }
        }
        Ok(())
    }

    /// Size of the mapped file in bytes.
    pub fn file_len(&self) -> usize {
        self.map.len()
    }
}
