//! Writing one shard: samples stream to `<name>.tmp` beside the target; `finish` appends the
//! table, writes the header, fsyncs, renames into place and fsyncs the folder, so a shard either
//! exists complete or not at all. A writer dropped without `finish` removes its temp file.

use super::error::ShardError;
use super::format::{
    align_up, checksum, Entry, Header, SampleShape, ShardDtype, HEADER_BYTES, TABLE_ALIGN,
};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What a finished shard holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSummary {
    pub path: PathBuf,
    pub samples: usize,
    pub bytes: u64,
}

pub struct ShardWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    file: Option<BufWriter<File>>,
    dtype: ShardDtype,
    alignment: u64,
    pos: u64,
    entries: Vec<Entry>,
    /// Reused conversion buffers (f16 values, bytes), so appends do not allocate once warm.
    half_buf: Vec<f16>,
    byte_buf: Vec<u8>,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("samples", &self.entries.len())
            .finish()
    }
}

impl ShardWriter {
    /// Start a shard at `path` (written as `path` + `.tmp` until [`finish`](Self::finish)).
    pub fn create(path: &Path, dtype: ShardDtype, alignment: usize) -> Result<Self, ShardError> {
        if !super::ALIGNMENTS.contains(&alignment) {
            return Err(ShardError::Sample {
                path: path.to_path_buf(),
                msg: format!(
                    "alignment {alignment} is not one of {:?}",
                    super::ALIGNMENTS
                ),
            });
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp_path = path.with_file_name(tmp_name);
        let file = File::create(&tmp_path).map_err(|e| ShardError::io(&tmp_path, "create", e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        // placeholder header, rewritten by `finish`
        file.write_all(&[0u8; HEADER_BYTES])
            .map_err(|e| ShardError::io(&tmp_path, "write", e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp_path,
            file: Some(file),
            dtype,
            alignment: alignment as u64,
            pos: HEADER_BYTES as u64,
            entries: Vec::new(),
            half_buf: Vec::new(),
            byte_buf: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Bytes written so far (header and samples; the table comes at `finish`).
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// Append one sample (row-major values of `shape`, channels-last). Values must be finite
    /// (and within f16 range for an f16 shard). Returns the sample's index in this shard.
    pub fn append(&mut self, shape: &[usize], data: &[f32]) -> Result<usize, ShardError> {
        let bad = |msg: String| ShardError::Sample {
            path: self.path.clone(),
            msg,
        };
        let shape =
            SampleShape::new(shape).ok_or_else(|| bad(format!("invalid shape {shape:?}")))?;
        if shape.numel() != data.len() {
            return Err(bad(format!(
                "{} values for shape {:?}",
                data.len(),
                shape.dims()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "value {} at element {i} is not finite",
                data[i]
            )));
        }
        self.byte_buf.clear();
        match self.dtype {
            ShardDtype::F32 => {
                self.byte_buf.reserve(data.len() * 4);
                for v in data {
                    self.byte_buf.extend_from_slice(&v.to_le_bytes());
                }
            }
            ShardDtype::F16 => {
                self.half_buf.clear();
                self.half_buf.resize(data.len(), f16::ZERO);
                self.half_buf.convert_from_f32_slice(data);
                if let Some(i) = self.half_buf.iter().position(|h| h.is_infinite()) {
                    return Err(bad(format!(
                        "value {} at element {i} overflows f16",
                        data[i]
                    )));
                }
                self.byte_buf.reserve(data.len() * 2);
                for h in &self.half_buf {
                    self.byte_buf.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
        let offset = align_up(self.pos, self.alignment);
        let entry = Entry {
            shape,
            offset,
            len: self.byte_buf.len() as u64,
            checksum: checksum(&self.byte_buf),
        };
        self.write_padding(offset)?;
        let bytes = std::mem::take(&mut self.byte_buf);
        let written = self.write(&bytes);
        self.byte_buf = bytes;
        written?;
        self.entries.push(entry);
        Ok(self.entries.len() - 1)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ShardError> {
        let file = self.file.as_mut().ok_or_else(|| ShardError::Sample {
            path: self.path.clone(),
            msg: "writer already finished".into(),
        })?;
        file.write_all(bytes)
            .map_err(|e| ShardError::io(&self.tmp_path, "write", e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn write_padding(&mut self, to: u64) -> Result<(), ShardError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < to {
            let n = ((to - self.pos) as usize).min(ZEROS.len());
            self.write(&ZEROS[..n])?;
        }
        Ok(())
    }

    /// Write the table and header, fsync, rename into place, fsync the folder.
    pub fn finish(mut self) -> Result<ShardSummary, ShardError> {
        let table_offset = align_up(self.pos, TABLE_ALIGN as u64);
        self.write_padding(table_offset)?;
        let mut table = Vec::with_capacity(self.entries.len() * super::format::ENTRY_BYTES);
        for e in &self.entries {
            e.encode(&mut table);
        }
        self.write(&table)?;
        let header = Header {
            dtype: self.dtype,
            alignment: self.alignment as u32,
            count: self.entries.len() as u64,
            table_offset,
            file_len: self.pos,
            table_checksum: checksum(&table),
        };
        let Some(file) = self.file.take() else {
            return Err(ShardError::Sample {
                path: self.path.clone(),
                msg: "writer already finished".into(),
            });
        };
        let tmp = self.tmp_path.clone();
        let mut file = file
            .into_inner()
            .map_err(|e| ShardError::io(&tmp, "flush", e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header.encode()))
            .and_then(|_| file.sync_all())
            .map_err(|e| ShardError::io(&tmp, "finish", e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| ShardError::io(&self.path, "rename into place", e))?;
        sync_parent(&self.path)?;
        Ok(ShardSummary {
            path: self.path.clone(),
            samples: self.entries.len(),
            bytes: self.pos,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // unfinished: leave nothing half-written behind (best effort; nothing to report to)
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// fsync the folder holding `path`, so a rename survives a crash (no-op where unsupported).
pub(crate) fn sync_parent(path: &Path) -> Result<(), ShardError> {
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ShardError::io(dir, "fsync folder", e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
