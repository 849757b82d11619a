//! A split of a prepared dataset: several shard files and one JSON index
//! (`<split>.index.json`) listing them in order with per-sample provenance. The index is written
//! after every shard is in place (temp file, fsync, rename), so its presence marks a complete
//! split.

use super::error::ShardError;
use super::format::ShardDtype;
use super::reader::{SampleView, ShardReader};
use super::writer::{sync_parent, ShardWriter};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `format` field of every index file.
pub const INDEX_FORMAT: &str = "medvae-shards";
const INDEX_VERSION: u32 = 1;

/// The JSON index of one split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitIndex {
    pub format: String,
    pub version: u32,
    pub split: String,
    pub dtype: ShardDtype,
    pub alignment: usize,
    /// Shard files (names relative to the index's folder), in sample order.
    pub shards: Vec<ShardEntry>,
    /// One entry per sample, in order (global sample index = position).
    pub samples: Vec<IndexedSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub samples: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexedSample {
    /// The source file the sample was decoded from.
    pub source: String,
    /// Position of its dataset in the prepare call's list of datasets.
    pub dataset: usize,
    /// Channels-last shape.
    pub shape: Vec<usize>,
}

/// Where a split's index lives.
pub fn index_path(dir: &Path, split: &str) -> PathBuf {
    dir.join(format!("{split}.index.json"))
}

fn check_split_name(dir: &Path, split: &str) -> Result<(), ShardError> {
    let ok = !split.is_empty()
        && split
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ShardError::Index {
            path: dir.to_path_buf(),
            msg: format!("split name {split:?} must be ASCII letters, digits, '_' or '-'"),
        })
    }
}

/// Writes one split: appends go to the current shard, a new shard starts once the current one
/// holds `max_shard_bytes`; `finish` closes the last shard and writes the index.
#[derive(Debug)]
pub struct SplitWriter {
    dir: PathBuf,
    split: String,
    dtype: ShardDtype,
    alignment: usize,
    max_shard_bytes: u64,
    current: Option<ShardWriter>,
    shards: Vec<ShardEntry>,
    samples: Vec<IndexedSample>,
}

impl SplitWriter {
    pub fn create(
        dir: &Path,
        split: &str,
        dtype: ShardDtype,
        alignment: usize,
        max_shard_bytes: u64,
    ) -> Result<Self, ShardError> {
        check_split_name(dir, split)?;
        if !super::ALIGNMENTS.contains(&alignment) {
            return Err(ShardError::Index {
                path: dir.to_path_buf(),
                msg: format!(
                    "alignment {alignment} is not one of {:?}",
                    super::ALIGNMENTS
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| ShardError::io(dir, "create folder", e))?;
        Ok(SplitWriter {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            dtype,
            alignment,
            max_shard_bytes: max_shard_bytes.max(1),
            current: None,
            shards: Vec::new(),
            samples: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Append a sample; returns its global index in the split.
    pub fn append(
        &mut self,
        shape: &[usize],
        data: &[f32],
        source: &str,
        dataset: usize,
    ) -> Result<usize, ShardError> {
        if self
            .current
            .as_ref()
            .is_some_and(|w| w.bytes_written() >= self.max_shard_bytes)
        {
            self.close_current()?;
        }
        let writer = match &mut self.current {
            Some(w) => w,
            None => {
                let name = format!("{}-{:05}.shard", self.split, self.shards.len());
                self.current.insert(ShardWriter::create(
                    &self.dir.join(name),
                    self.dtype,
                    self.alignment,
                )?)
            }
        };
        writer.append(shape, data)?;
        self.samples.push(IndexedSample {
            source: source.to_string(),
            dataset,
            shape: shape.to_vec(),
        });
        Ok(self.samples.len() - 1)
    }

    fn close_current(&mut self) -> Result<(), ShardError> {
        if let Some(w) = self.current.take() {
            let summary = w.finish()?;
            let file = summary
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.shards.push(ShardEntry {
                file,
                samples: summary.samples,
                bytes: summary.bytes,
            });
        }
        Ok(())
    }

    /// Close the last shard and write `<split>.index.json` atomically.
    pub fn finish(mut self) -> Result<SplitIndex, ShardError> {
        self.close_current()?;
        let index = SplitIndex {
            format: INDEX_FORMAT.to_string(),
            version: INDEX_VERSION,
            split: self.split.clone(),
            dtype: self.dtype,
            alignment: self.alignment,
            shards: std::mem::take(&mut self.shards),
            samples: std::mem::take(&mut self.samples),
        };
        let path = index_path(&self.dir, &self.split);
        write_json_atomically(&path, &index)?;
        Ok(index)
    }
}

/// Write `value` as pretty JSON to `path` via a temp file, fsync and rename.
pub(crate) fn write_json_atomically<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<(), ShardError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let text = serde_json::to_vec_pretty(value).map_err(|e| ShardError::Index {
        path: path.to_path_buf(),
        msg: format!("cannot serialise: {e}"),
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| ShardError::io(&tmp, "create", e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| ShardError::io(&tmp, "write", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| ShardError::io(path, "rename into place", e))?;
    sync_parent(path)
}

/// All shards of one split, opened and cross-checked against the index.
#[derive(Debug)]
pub struct ShardSet {
    dir: PathBuf,
    index: SplitIndex,
    readers: Vec<ShardReader>,
    /// Global index of each shard's first sample.
    starts: Vec<usize>,
}

impl ShardSet {
    /// Open `<dir>/<split>.index.json` and every shard it lists.
    pub fn open(dir: &Path, split: &str) -> Result<Self, ShardError> {
        check_split_name(dir, split)?;
        let path = index_path(dir, split);
        let text = std::fs::read(&path).map_err(|e| ShardError::io(&path, "read index", e))?;
        let bad = |msg: String| ShardError::Index {
            path: path.clone(),
            msg,
        };
        let index: SplitIndex =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not a valid index: {e}")))?;
        if index.format != INDEX_FORMAT || index.version != INDEX_VERSION {
            return Err(bad(format!(
                "format {:?} version {}, expected {INDEX_FORMAT:?} version {INDEX_VERSION}",
                index.format, index.version
            )));
        }
        let mut readers = Vec::with_capacity(index.shards.len());
        let mut starts = Vec::with_capacity(index.shards.len());
        let mut total = 0usize;
        for shard in &index.shards {
            if shard.file.contains('/') || shard.file.contains('\\') || shard.file.starts_with('.')
            {
                return Err(bad(format!(
                    "shard file name {:?} is not a plain name",
                    shard.file
                )));
            }
            let reader = ShardReader::open(&dir.join(&shard.file))?;
            if reader.len() != shard.samples || reader.dtype() != index.dtype {
                return Err(bad(format!(
                    "{} holds {} {} samples, the index says {} {}",
                    shard.file,
                    reader.len(),
                    reader.dtype(),
                    shard.samples,
                    index.dtype
                )));
            }
            for i in 0..reader.len() {
                let listed = index.samples.get(total + i).map(|s| s.shape.as_slice());
                if listed != Some(reader.shape(i)?.dims()) {
                    return Err(bad(format!(
                        "sample {} shape differs between the index and {}",
                        total + i,
                        shard.file
                    )));
                }
            }
            starts.push(total);
            total += reader.len();
            readers.push(reader);
        }
        if total != index.samples.len() {
            return Err(bad(format!(
                "shards hold {total} samples, the index lists {}",
                index.samples.len()
            )));
        }
        Ok(ShardSet {
            dir: dir.to_path_buf(),
            index,
            readers,
            starts,
        })
    }

    pub fn index(&self) -> &SplitIndex {
        &self.index
    }
    pub fn dtype(&self) -> ShardDtype {
        self.index.dtype
    }
    pub fn len(&self) -> usize {
        self.index.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.samples.is_empty()
    }
    pub fn readers(&self) -> &[ShardReader] {
        &self.readers
    }

    /// Sample `i` of the split (global index).
    pub fn sample(&self, i: usize) -> Result<SampleView<'_>, ShardError> {
        if i >= self.len() {
            return Err(ShardError::OutOfRange {
                path: index_path(&self.dir, &self.index.split),
                index: i,
                len: self.len(),
            });
        }
        // the last shard whose first sample is <= i
        let s = self.starts.partition_point(|&start| start <= i) - 1;
        self.readers[s].sample(i - self.starts[s])
    }

    /// Check every shard's sample checksums.
    pub fn verify(&self) -> Result<(), ShardError> {
        self.readers.iter().try_for_each(ShardReader::verify)
    }
}
