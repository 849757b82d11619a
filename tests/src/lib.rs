//! Shared helpers of the integration tests.

use std::path::PathBuf;

/// The golden directory: `$MEDVAE_GOLDEN`, else `shared/golden` beside the repository.
/// Panics with a clear message when absent: a test that cannot find its references must fail,
/// never pass silently.
pub fn golden_dir() -> PathBuf {
    if let Ok(p) = std::env::var("MEDVAE_GOLDEN") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("../shared/golden");
    assert!(
        p.is_dir(),
        "golden reference directory not found at {} (set MEDVAE_GOLDEN)",
        p.display()
    );
    p
}

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The medvae-fast binary built by cargo for the integration tests, if built.
pub fn bin_path() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    target.join(profile).join("medvae-fast")
}
