//! Fuzzes the checkpoint reader from raw bytes. Each input is tried twice:
//! * as a whole file (format detection, zip and safetensors parsing, and all behind them);
//! * as the `data.pkl` of an otherwise well-formed torch.save archive with a few storages,
//!   so that mutations reach the unpickler and the tensor views without first having to
//!   survive zip structure checks.
//!
//! Any panic, overflow, or out-of-memory is a bug: the reader must return errors.
#![no_main]

use std::io::{Cursor, Write};

use libfuzzer_sys::fuzz_target;
use medvae_runtime::checkpoint::load_checkpoint_bytes;

fn wrap_as_torch_zip(pickle: &[u8]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let storage: Vec<u8> = (0..64u8).collect();
    let records: [(&str, &[u8]); 5] = [
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &storage),
        ("archive/data/1", &storage[..12]),
        ("archive/data/2", &[]),
    ];
    for (name, data) in records {
        if out.start_file(name, options).is_err() || out.write_all(data).is_err() {
            return Vec::new();
        }
    }
    out.finish().map(|c| c.into_inner()).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let _ = load_checkpoint_bytes(data, "fuzz");
    let _ = load_checkpoint_bytes(&wrap_as_torch_zip(data), "fuzz");
});
