//! What a prepared folder was made from, so that a finetune never trains on shards of an older
//! split: a hash of the dataset specs (paths, kinds, columns) and each dataset's CSV text,
//! written beside the indexes by `data prepare`. The image files themselves are not hashed
//! (that would mean reading the whole archive on every start); a CSV edit, the usual way a
//! split changes, is caught. The shard dtype is left out: shards prepared in f32 on purpose
//! (`data prepare --dtype f32`) hold the same samples and stay in use.

use anyhow::{Context, Result};
use medvae_runtime::data::dataset::DatasetSpec;
use medvae_runtime::hash::Fnv1a;
use std::path::Path;

/// The fingerprint's file name inside a prepared folder.
pub const FILE: &str = "sources.fingerprint";

/// `bytes` and a separator byte, so that ("ab", "c") and ("a", "bc") differ.
fn add(h: &mut Fnv1a, bytes: &[u8]) {
    h.bytes(bytes);
    h.bytes(&[0xff]);
}

/// The fingerprint of the datasets `specs` (as `PrepareArgs::datasets` gives them).
pub fn of_sources(specs: &[DatasetSpec]) -> Result<String> {
    let mut h = Fnv1a::new();
    for spec in specs {
        add(&mut h, format!("{spec:?}").as_bytes());
        let csv = std::fs::read(&spec.csv)
            .with_context(|| format!("reading dataset CSV {}", spec.csv.display()))?;
        add(&mut h, &csv);
    }
    Ok(format!("{:016x}\n", h.value()))
}

/// The fingerprint stored in the prepared folder `dir`, if any.
pub fn stored(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(FILE)).ok()
}

/// Store `fingerprint` in the prepared folder `dir`.
pub fn store(dir: &Path, fingerprint: &str) -> Result<()> {
    let path = dir.join(FILE);
    medvae_runtime::checkpoint::write_atomically(&path, fingerprint.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
