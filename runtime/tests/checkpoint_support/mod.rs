//! Helpers of tests/checkpoint.rs: file locations, an independent reader for the expected
//! tensors, zip re-packing, and the deterministic mutation "fuzz" run in the normal suite.

pub mod fuzz;
pub mod pickle_cases;
pub mod pickle_writer;

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use medvae_runtime::checkpoint::{NamedTensor, StateDict, StoredDType, TensorData};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

pub use fuzz::mutation_fuzz;

/// The golden folder: `$MEDVAE_GOLDEN`, else `shared/golden` beside the repository.
pub fn golden_dir() -> PathBuf {
    let dir = std::env::var_os("MEDVAE_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"));
    assert!(
        dir.join("checkpoints").is_dir(),
        "golden files not found at {} (set MEDVAE_GOLDEN to the golden folder)",
        dir.display()
    );
    dir
}

pub fn golden_checkpoint(name: &str) -> PathBuf {
    let path = golden_dir().join("checkpoints").join(name);
    assert!(path.is_file(), "golden file {} is missing", path.display());
    path
}

/// A fixture made by tests/data/gen_checkpoint_fixtures.py.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A fresh, empty temporary folder for this test process.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medvae-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Reads expected tensors (f32 / i64 safetensors written by Python) with the `safetensors`
/// crate and a decode written here, independent of the reader under test. Keys lose `prefix`.
pub fn read_expected(path: &Path, prefix: &str) -> StateDict {
    let bytes = std::fs::read(path).expect("read expected file");
    let st = SafeTensors::deserialize(&bytes).expect("parse expected file");
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let mut out = StateDict::new(path.display().to_string());
    for name in names {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        let view = st.tensor(&name).unwrap();
        let (dtype, data) = match view.dtype() {
            Dtype::F32 => (
                StoredDType::F32,
                TensorData::Float(
                    view.data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            ),
            Dtype::I64 => (
                StoredDType::I64,
                TensorData::Int(
                    view.data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
            ),
            other => panic!("{name}: unexpected dtype {other:?} in expected file"),
        };
        let shape = view.shape().to_vec();
        out.insert(key.to_owned(), NamedTensor { shape, dtype, data })
            .unwrap();
    }
    out
}

/// Every record of a zip, in archive order.
pub fn zip_records(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().to_owned(), data)
        })
        .collect()
}

/// Packs records into an uncompressed zip, as torch.save does.
pub fn rezip(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    rezip_with(records, zip::CompressionMethod::Stored)
}

/// Packs records into a zip with the given compression.
pub fn rezip_with(records: &[(String, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in records {
        out.start_file(name.as_str(), options).unwrap();
        out.write_all(data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// A torch.save-like archive: `archive/data.pkl`, a `byteorder` record and `data/<key>` storages.
pub fn torch_zip(pickle: Vec<u8>, storages: &[(String, Vec<u8>)]) -> Vec<u8> {
    torch_zip_with_order(pickle, storages, "little")
}

/// [`torch_zip`] with the given `byteorder` record.
pub fn torch_zip_with_order(
    pickle: Vec<u8>,
    storages: &[(String, Vec<u8>)],
    order: &str,
) -> Vec<u8> {
    let mut records = vec![("archive/data.pkl".to_owned(), pickle)];
    records.push(("archive/byteorder".to_owned(), order.as_bytes().to_vec()));
    for (key, bytes) in storages {
        records.push((format!("archive/data/{key}"), bytes.clone()));
    }
    rezip(&records)
}
