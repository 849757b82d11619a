//! Byte layout of the shard header and table (documented in the module docs of `shard`):
//! encoding, decoding and every validation a reader must do before trusting an offset.

use super::error::ShardError;
use std::path::Path;

pub const MAGIC: [u8; 8] = *b"MVAESHRD";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
pub const ENTRY_BYTES: usize = 48;
/// Samples have at most this many dimensions (`[D, H, W, C]`).
pub const MAX_RANK: usize = 4;
/// The table starts at a multiple of this.
pub const TABLE_ALIGN: usize = 64;

/// Element type of the sample data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardDtype {
    F32,
    F16,
}

impl ShardDtype {
    pub fn size(self) -> usize {
        match self {
            ShardDtype::F32 => 4,
            ShardDtype::F16 => 2,
        }
    }
    fn code(self) -> u32 {
        match self {
            ShardDtype::F32 => 1,
            ShardDtype::F16 => 2,
        }
    }
    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(ShardDtype::F32),
            2 => Some(ShardDtype::F16),
            _ => None,
        }
    }
}

impl std::fmt::Display for ShardDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardDtype::F32 => "f32",
            ShardDtype::F16 => "f16",
        })
    }
}

/// A sample's shape (rank 1..=4, channels-last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleShape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl SampleShape {
    /// `None` for rank 0, rank above 4, a zero extent, or a size that overflows.
    pub fn new(dims: &[usize]) -> Option<Self> {
        if dims.is_empty()
            || dims.len() > MAX_RANK
            || dims.contains(&0)
            || dims.iter().any(|&d| d > u32::MAX as usize)
        {
            return None;
        }
        dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        let mut all = [0; MAX_RANK];
        all[..dims.len()].copy_from_slice(dims);
        Some(SampleShape {
            dims: all,
            rank: dims.len(),
        })
    }
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }
}

/// One table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub shape: SampleShape,
    pub offset: u64,
    pub len: u64,
    pub checksum: u64,
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub dtype: ShardDtype,
    pub alignment: u32,
    pub count: u64,
    pub table_offset: u64,
    pub file_len: u64,
    pub table_checksum: u64,
}

/// FNV-1a over 64-bit little-endian words (a short tail zero-padded).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h = crate::hash::Fnv1a::new();
    h.words_le(bytes);
    h.value()
}

pub fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.dtype.code().to_le_bytes());
        b[16..20].copy_from_slice(&self.alignment.to_le_bytes());
        b[20..24].copy_from_slice(&(ENTRY_BYTES as u32).to_le_bytes());
        b[24..32].copy_from_slice(&self.count.to_le_bytes());
        b[32..40].copy_from_slice(&self.table_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.file_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.table_checksum.to_le_bytes());
        let own = checksum(&b[..56]);
        b[56..64].copy_from_slice(&own.to_le_bytes());
        b
    }

    /// Parse and validate the header against the real file length.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Header, ShardError> {
        let actual = bytes.len() as u64;
        if bytes.len() < HEADER_BYTES {
            if bytes.len() >= 8 && bytes[..8] == MAGIC {
                return Err(ShardError::Truncated {
                    path: path.to_path_buf(),
                    expected: HEADER_BYTES as u64,
                    actual,
                });
            }
            return Err(ShardError::corrupt(
                path,
                format!("{actual} bytes: not a shard file"),
            ));
        }
        if bytes[..8] != MAGIC {
            return Err(ShardError::corrupt(
                path,
                "bad magic: not a medvae shard file",
            ));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(ShardError::corrupt(
                path,
                format!("format version {version}, this build reads version {FORMAT_VERSION}"),
            ));
        }
        if checksum(&bytes[..56]) != u64_at(56) {
            return Err(ShardError::corrupt(path, "header checksum mismatch"));
        }
        let dtype = ShardDtype::from_code(u32_at(12)).ok_or_else(|| {
            ShardError::corrupt(path, format!("unknown dtype code {}", u32_at(12)))
        })?;
        let alignment = u32_at(16);
        if !super::ALIGNMENTS.contains(&(alignment as usize)) {
            return Err(ShardError::corrupt(
                path,
                format!("alignment {alignment} is not 64 or 4096"),
            ));
        }
        if u32_at(20) as usize != ENTRY_BYTES {
            return Err(ShardError::corrupt(
                path,
                format!("table entry size {} != {ENTRY_BYTES}", u32_at(20)),
            ));
        }
        let header = Header {
            dtype,
            alignment,
            count: u64_at(24),
            table_offset: u64_at(32),
            file_len: u64_at(40),
            table_checksum: u64_at(48),
        };
        if actual < header.file_len {
            return Err(ShardError::Truncated {
                path: path.to_path_buf(),
                expected: header.file_len,
                actual,
            });
        }
        if actual > header.file_len {
            return Err(ShardError::corrupt(
                path,
                format!("{actual} bytes, the header says {}", header.file_len),
            ));
        }
        let table_len = header
            .count
            .checked_mul(ENTRY_BYTES as u64)
            .ok_or_else(|| ShardError::corrupt(path, "sample count overflows"))?;
        let table_end = header.table_offset.checked_add(table_len);
        if header.table_offset < HEADER_BYTES as u64 || table_end != Some(header.file_len) {
            return Err(ShardError::corrupt(
                path,
                format!(
                    "table at {} with {} entries does not end the {}-byte file",
                    header.table_offset, header.count, header.file_len
                ),
            ));
        }
        Ok(header)
    }
}

impl Entry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.shape.rank as u32).to_le_bytes());
        for d in self.shape.dims {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
    }

    /// Parse the table and check each entry's shape, alignment and bounds (samples lie between
    /// the header and the table, in order, without overlap).
    pub fn decode_table(
        path: &Path,
        header: &Header,
        table: &[u8],
    ) -> Result<Vec<Entry>, ShardError> {
        if checksum(table) != header.table_checksum {
            return Err(ShardError::corrupt(path, "table checksum mismatch"));
        }
        let mut entries = Vec::with_capacity(header.count as usize);
        let mut prev_end = HEADER_BYTES as u64;
        for (i, e) in table.chunks_exact(ENTRY_BYTES).enumerate() {
            let u32_at =
                |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]) as usize;
            let u64_at = |o: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&e[o..o + 8]);
                u64::from_le_bytes(b)
            };
            let bad = |msg: String| ShardError::corrupt(path, format!("sample {i}: {msg}"));
            let rank = u32_at(0);
            let dims: Vec<usize> = (0..rank.min(MAX_RANK)).map(|k| u32_at(4 + 4 * k)).collect();
            let shape = SampleShape::new(&dims)
                .filter(|_| rank <= MAX_RANK)
                .ok_or_else(|| bad(format!("invalid shape (rank {rank}, dims {dims:?})")))?;
            let entry = Entry {
                shape,
                offset: u64_at(20),
                len: u64_at(28),
                checksum: u64_at(36),
            };
            let expected_len = (shape.numel() as u64).checked_mul(header.dtype.size() as u64);
            if expected_len != Some(entry.len) {
                return Err(bad(format!(
                    "{} bytes for shape {:?} of {}",
                    entry.len,
                    shape.dims(),
                    header.dtype
                )));
            }
            // alignment is 64 or 4096 (checked with the header): a power of two
            if entry.offset & (header.alignment as u64 - 1) != 0 {
                return Err(bad(format!(
                    "offset {} not aligned to {}",
                    entry.offset, header.alignment
                )));
            }
            let end = match entry.offset.checked_add(entry.len) {
                Some(end) if entry.offset >= prev_end && end <= header.table_offset => end,
                _ => {
                    return Err(bad(format!(
                        "data [{}, +{}) outside the sample area [{prev_end}, {})",
                        entry.offset, entry.len, header.table_offset
                    )))
                }
            };
            prev_end = end;
            entries.push(entry);
        }
        Ok(entries)
    }
}
