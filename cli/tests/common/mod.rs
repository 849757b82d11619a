//! What the `infer` and `decode` end-to-end tests share: the repository's sample files,
//! scratch folders, running the real binary, and tiny random models saved as checkpoints.
#![allow(dead_code)] // each test binary uses its own part

use medvae_model::autoencoder::AutoencoderKL;
use medvae_model::layers::state::to_state_dict;
use medvae_model::layers::Init;
use medvae_model::zoo::ModelConfig;
use medvae_runtime::checkpoint::save_safetensors;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tiny models' downsampling factor and latent channels.
pub const FACTOR: usize = 4;
pub const EMBED: usize = 2;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A temporary folder of one test, removed when dropped.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-cli-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

/// `DIR/in` holding copies of the bundled samples `samples/KIND/NAME` (kind `2d` or `3d`).
pub fn sample_folder(dir: &Path, kind: &str, names: &[&str]) -> PathBuf {
    let inp = dir.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    for name in names {
        let from = repo().join("samples").join(kind).join(name);
        std::fs::copy(&from, inp.join(name)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    inp
}

/// Run the binary with `args`; returns (exit code, stdout, stderr).
pub fn medvae(args: &[&str]) -> (i32, String, String) {
    medvae_with_env(args, &[])
}

/// [`medvae`] with these environment variables set.
pub fn medvae_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run medvae-fast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The tiny random MedVAE's configuration (4x downsampling, 2 latent channels).
pub fn tiny_config(dims: usize) -> ModelConfig {
    let cfg = ModelConfig::tiny(dims);
    assert_eq!((cfg.downsample_factor(), cfg.embed_dim), (FACTOR, EMBED));
    cfg
}

/// A tiny random MedVAE saved as safetensors in `dir`.
pub fn tiny_weights(dir: &Path, dims: usize) -> PathBuf {
    let m = AutoencoderKL::new(&tiny_config(dims), &mut Init::random(11)).unwrap();
    save_model(m, &dir.join(format!("tiny{dims}d.safetensors")))
}

/// `model` saved as safetensors at `path`.
pub fn save_model(mut model: AutoencoderKL, path: &Path) -> PathBuf {
    save_safetensors(path, &to_state_dict(&mut model, "tiny").unwrap()).unwrap();
    path.to_path_buf()
}

/// The uncompressed bytes of a `.nii.gz` file.
pub fn gunzipped(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&raw[..2], &[0x1f, 0x8b], "{} is gzipped", path.display());
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// The NIfTI description (`descrip`) of a `.nii.gz` file.
pub fn descrip(path: &Path) -> String {
    let bytes = gunzipped(path);
    let field = &bytes[148..228];
    let end = field.iter().position(|&b| b == 0).unwrap_or(80);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Rewrite the gzipped NIfTI `path` with its first voxel's lowest bit flipped (header kept, so
/// its description still matches); returns the new file bytes. A rewrite of the file shows.
pub fn mark_voxels(path: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut bytes = gunzipped(path);
    bytes[352] ^= 1;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&bytes).unwrap();
    let gz = enc.finish().unwrap();
    std::fs::write(path, &gz).unwrap();
    gz
}

/// Run the binary with `args`, send it SIGINT once it has printed its first `ok` line, and
/// return its exit code and the stdout lines after that first one.
#[cfg(unix)]
pub fn interrupt_after_first_file(args: &[&str]) -> (Option<i32>, Vec<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start medvae-fast");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    assert!(first.starts_with("ok "), "{first}");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(|l| l.expect("utf-8")).collect();
    let status = child.wait().expect("wait");
    (status.code(), rest)
}
