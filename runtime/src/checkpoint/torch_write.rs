//! Writing `torch.save`-compatible zip files, so a state dict trained here loads with plain
//! `torch.load(path, weights_only=True)` in the reference code.
//!
//! The archive is what PyTorch >= 1.6 writes: every record under one top-level folder,
//! `data.pkl` (a protocol-2 pickle of the object), `data/<n>` (one raw little-endian storage
//! per tensor), `version` and `byteorder`. Records are stored uncompressed and 64-byte aligned
//! as PyTorch aligns them (needed for `torch.load(mmap=True)`).
//!
//! The pickle uses only globals the safe reader and `weights_only=True` accept:
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the storage types.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::atomic_write::replace_atomically;
use super::error::CheckpointError;
use super::safetensors_io::{encoded_storage, FloatFormat};
use super::state_dict::StateDict;

/// What object the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TorchLayout {
    /// A Lightning-style checkpoint: `{"state_dict": OrderedDict}` (`.ckpt`).
    #[default]
    Lightning,
    /// The bare `OrderedDict` of `model.state_dict()` (`.bin`, `.pt`, `.pth`).
    PlainStateDict,
}

/// Options of [`save_torch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TorchSaveOptions {
    pub layout: TorchLayout,
    pub float_format: FloatFormat,
}

/// The folder every record lives in (PyTorch uses the file stem; any single name works).
const ARCHIVE: &str = "archive";

/// Writes `state` as a `torch.save` zip at `path`, atomically (temp file, fsync, rename).
pub fn save_torch(
    path: &Path,
    state: &StateDict,
    options: TorchSaveOptions,
) -> Result<(), CheckpointError> {
    let bytes = torch_bytes(state, options).map_err(|source| CheckpointError::Write {
        file: path.display().to_string(),
        cause: source,
    })?;
    replace_atomically(path, |tmp| std::fs::write(tmp, &bytes)).map_err(|source| {
        CheckpointError::Write {
            file: path.display().to_string(),
            cause: source,
        }
    })
}

/// The bytes of a `torch.save` zip holding `state`.
pub fn torch_bytes(state: &StateDict, options: TorchSaveOptions) -> io::Result<Vec<u8>> {
    let mut storages: Vec<(&'static str, Cow<'_, [u8]>)> = Vec::with_capacity(state.len());
    let mut pickle = Pickle::default();
    pickle.proto();
    if options.layout == TorchLayout::Lightning {
        pickle.op(EMPTY_DICT);
        pickle.unicode("state_dict");
    }
    pickle.global("collections", "OrderedDict");
    pickle.op(EMPTY_TUPLE);
    pickle.op(REDUCE);
    pickle.op(MARK);
    for (index, (key, tensor)) in state.iter().enumerate() {
        let (storage_type, bytes) = encoded_storage(tensor, options.float_format);
        pickle.unicode(key);
        pickle.tensor(index, storage_type, &tensor.shape);
        storages.push((storage_type, bytes));
    }
    pickle.op(SETITEMS);
    if options.layout == TorchLayout::Lightning {
        pickle.op(SETITEM);
    }
    pickle.op(STOP);

    let mut zip = ZipWriter::new(io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment(64);
    let mut record = |name: &str, data: &[u8]| -> io::Result<()> {
        zip.start_file(format!("{ARCHIVE}/{name}"), stored)
            .map_err(io::Error::other)?;
        zip.write_all(data)
    };
    record("data.pkl", &pickle.out)?;
    record("byteorder", b"little")?;
    for (index, (_, bytes)) in storages.iter().enumerate() {
        record(&format!("data/{index}"), bytes)?;
    }
    record("version", b"3\n")?;
    let cursor = zip.finish().map_err(io::Error::other)?;
    Ok(cursor.into_inner())
}

// Pickle opcodes (protocol 2).
const PROTO: u8 = 0x80;
const GLOBAL: u8 = b'c';
const EMPTY_TUPLE: u8 = b')';
const EMPTY_DICT: u8 = b'}';
const REDUCE: u8 = b'R';
const MARK: u8 = b'(';
const TUPLE: u8 = b't';
const BINUNICODE: u8 = b'X';
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const BINPERSID: u8 = b'Q';
const NEWFALSE: u8 = 0x89;
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
const STOP: u8 = b'.';

#[derive(Default)]
struct Pickle {
    out: Vec<u8>,
}

impl Pickle {
    fn op(&mut self, op: u8) {
        self.out.push(op);
    }

    fn proto(&mut self) {
        self.out.extend_from_slice(&[PROTO, 2]);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(GLOBAL);
        self.out
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn unicode(&mut self, s: &str) {
        self.op(BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(small) => {
                self.op(BININT);
                self.out.extend_from_slice(&small.to_le_bytes());
            }
            Err(_) => {
                // LONG1: little-endian two's complement; 9 bytes hold any u64 as positive.
                self.op(LONG1);
                self.out.push(9);
                self.out.extend_from_slice(&(v as u64).to_le_bytes());
                self.out.push(0);
            }
        }
    }

    fn tuple_of(&mut self, values: &[usize]) {
        self.op(MARK);
        for &v in values {
            self.int(v);
        }
        self.op(TUPLE);
    }

    /// `_rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())` with
    /// the storage a persistent id `('storage', Type, '<index>', 'cpu', numel)`.
    fn tensor(&mut self, index: usize, storage_type: &str, shape: &[usize]) {
        let numel: usize = shape.iter().product();
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1].max(1);
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(MARK);
        self.op(MARK);
        self.unicode("storage");
        self.global("torch", storage_type);
        self.unicode(&index.to_string());
        self.unicode("cpu");
        self.int(numel);
        self.op(TUPLE);
        self.op(BINPERSID);
        self.int(0);
        self.tuple_of(shape);
        self.tuple_of(&strides);
        self.op(NEWFALSE);
        self.global("collections", "OrderedDict");
        self.op(EMPTY_TUPLE);
        self.op(REDUCE);
        self.op(TUPLE);
        self.op(REDUCE);
    }
}
