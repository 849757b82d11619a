//! GPU architectures, NVRTC compile options and the compiled-module cache key.

use super::error::CompileError;
use super::registry::{KernelSource, HEADERS};
use sha2::{Digest, Sha256};
use std::fmt;

/// Bumped whenever the option set or the way images are produced changes, so that stale
/// cache entries are not reused.
const CACHE_FORMAT: &str = "medvae-nvrtc-v1";

/// Compute capability `major.minor` (plus an optional feature suffix such as the `a` of sm_90a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
    pub suffix: Option<char>,
}

/// What NVRTC produces: portable PTX (`--gpu-architecture=compute_XX`, JIT-compiled by the
/// driver at load time) or a CUBIN for exactly one architecture (`sm_XX`, no JIT, and loadable
/// by any CUDA 12 driver, whereas PTX needs a driver at least as new as NVRTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Ptx,
    Cubin,
}

impl Target {
    /// File extension of cached images.
    pub fn extension(self) -> &'static str {
        match self {
            Target::Ptx => "ptx",
            Target::Cubin => "cubin",
        }
    }
}

impl Arch {
    /// The architecture of a device with compute capability `major.minor`.
    pub fn from_compute_capability(major: u32, minor: u32) -> Self {
        Arch {
            major,
            minor,
            suffix: None,
        }
    }

    /// Parse `sm_90`, `compute_80`, `sm_90a`, `90`, `8.6`.
    pub fn parse(s: &str) -> Result<Self, CompileError> {
        let bad = || CompileError::BadArch(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        if let Some((a, b)) = t.split_once('.') {
            let major = a.parse().map_err(|_| bad())?;
            let minor = b.parse().map_err(|_| bad())?;
            return Ok(Arch::from_compute_capability(major, minor));
        }
        let digits = t
            .strip_prefix("sm_")
            .or_else(|| t.strip_prefix("compute_"))
            .unwrap_or(&t);
        let (num, suffix) = match digits.chars().last() {
            Some(c) if c.is_ascii_alphabetic() => (&digits[..digits.len() - 1], Some(c)),
            _ => (digits, None),
        };
        if num.len() < 2 || !num.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let (maj, min) = num.split_at(num.len() - 1);
        let major: u32 = maj.parse().map_err(|_| bad())?;
        let minor: u32 = min.parse().map_err(|_| bad())?;
        if major < 8 {
            // The tensor-core kernels use mma.sync m16n8k8 TF32 / m16n8k16 BF16 and cp.async.
            return Err(CompileError::BadArch(format!(
                "{s} (the kernels need sm_80 or newer)"
            )));
        }
        Ok(Arch {
            major,
            minor,
            suffix,
        })
    }

    fn digits(&self) -> String {
        match self.suffix {
            Some(c) => format!("{}{}{}", self.major, self.minor, c),
            None => format!("{}{}", self.major, self.minor),
        }
    }

    /// `sm_XX`: the real architecture (CUBIN target, ptxas `--gpu-name`).
    pub fn sm(&self) -> String {
        format!("sm_{}", self.digits())
    }

    /// `compute_XX`: the virtual architecture (PTX target).
    pub fn compute(&self) -> String {
        format!("compute_{}", self.digits())
    }

    /// The NVRTC `--gpu-architecture` value for `target`.
    pub fn for_target(&self, target: Target) -> String {
        match target {
            Target::Ptx => self.compute(),
            Target::Cubin => self.sm(),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sm())
    }
}

/// NVRTC options for every module (include paths come on top, see [`compile_options`]).
/// Precise division, square root and `expf`/`erff`: the kernels must match the f32 CPU path
/// to 1e-4, so no fast-math.
fn base_options(arch: Arch, target: Target) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", arch.for_target(target)),
        "--std=c++17".to_string(),
        "--fmad=true".to_string(),
    ]
}

/// The full NVRTC option list. The sources include only the in-memory headers of
/// [`HEADERS`]; `include_paths` (e.g. the CUDA runtime wheel's `include/`, from
/// `MEDVAE_CUDA_INCLUDE`) are passed as `-I` for completeness.
pub fn compile_options(arch: Arch, target: Target, include_paths: &[String]) -> Vec<String> {
    let mut o = base_options(arch, target);
    o.extend(include_paths.iter().map(|p| format!("-I{p}")));
    o
}

/// Include paths from `MEDVAE_CUDA_INCLUDE` (a `:`-separated list), if set.
pub fn include_paths_from_env() -> Vec<String> {
    std::env::var("MEDVAE_CUDA_INCLUDE")
        .map(|v| {
            v.split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Hex SHA-256 of everything that determines a module's image: its source, every header, the
/// options (include paths excluded: the sources include no toolkit header), the cache format.
pub fn source_hash(src: &KernelSource, arch: Arch, target: Target) -> String {
    let arch = src.arch_for(arch);
    let mut h = Sha256::new();
    h.update(CACHE_FORMAT.as_bytes());
    h.update([0]);
    h.update(src.source.as_bytes());
    for hd in HEADERS {
        h.update([0]);
        h.update(hd.name.as_bytes());
        h.update([0]);
        h.update(hd.source.as_bytes());
    }
    for o in base_options(arch, target) {
        h.update([0]);
        h.update(o.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Cache file name of a module's image: `<sha256>-<arch>.<ptx|cubin>`, where arch is
/// `compute_XX` for PTX and `sm_XX` for CUBIN.
pub fn cache_file_name(src: &KernelSource, arch: Arch, target: Target) -> String {
    let arch = src.arch_for(arch);
    format!(
        "{}-{}.{}",
        source_hash(src, arch, target),
        arch.for_target(target),
        target.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::registry::SOURCES;

    #[test]
    fn parses_the_usual_spellings() {
        let a = Arch::parse("sm_90").unwrap();
        assert_eq!((a.major, a.minor, a.suffix), (9, 0, None));
        assert_eq!(Arch::parse("compute_80").unwrap().sm(), "sm_80");
        assert_eq!(Arch::parse("86").unwrap().compute(), "compute_86");
        assert_eq!(Arch::parse("9.0").unwrap(), a);
        assert_eq!(Arch::parse("sm_90a").unwrap().sm(), "sm_90a");
        assert_eq!(Arch::parse("sm_120").unwrap().sm(), "sm_120");
        for bad in ["", "sm_", "sm_9", "volta", "sm_75", "sm_x0"] {
            assert!(Arch::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cache_keys_differ_by_source_arch_and_target() {
        let a = &SOURCES[0];
        let b = &SOURCES[1];
        let s90 = Arch::parse("sm_90").unwrap();
        let s80 = Arch::parse("sm_80").unwrap();
        let k = cache_file_name(a, s90, Target::Ptx);
        assert!(k.ends_with("-compute_90.ptx"), "{k}");
        assert_eq!(k.len(), 64 + "-compute_90.ptx".len());
        assert_eq!(k, cache_file_name(a, s90, Target::Ptx));
        assert_ne!(k, cache_file_name(b, s90, Target::Ptx));
        assert_ne!(
            source_hash(a, s90, Target::Ptx),
            source_hash(a, s80, Target::Ptx)
        );
        assert_ne!(
            source_hash(a, s90, Target::Ptx),
            source_hash(a, s90, Target::Cubin)
        );
        assert!(cache_file_name(a, s90, Target::Cubin).ends_with("-sm_90.cubin"));
    }

    /// A module using Hopper's architecture-specific instructions compiles as sm_90a on 9.0
    /// (and caches under that name), as itself elsewhere; other modules are untouched.
    #[test]
    fn hopper_modules_compile_for_sm_90a() {
        let wgmma = SOURCES
            .iter()
            .find(|s| s.hopper_features)
            .expect("a hopper module");
        let plain = SOURCES
            .iter()
            .find(|s| !s.hopper_features)
            .expect("a plain module");
        let s90 = Arch::parse("sm_90").unwrap();
        let s80 = Arch::parse("sm_80").unwrap();
        assert_eq!(wgmma.arch_for(s90).sm(), "sm_90a");
        assert_eq!(wgmma.arch_for(s80), s80);
        assert_eq!(plain.arch_for(s90), s90);
        let k = cache_file_name(wgmma, s90, Target::Cubin);
        assert!(k.ends_with("-sm_90a.cubin"), "{k}");
    }

    #[test]
    fn options_name_the_target_architecture() {
        let a = Arch::parse("sm_80").unwrap();
        let o = compile_options(a, Target::Cubin, &["/x/include".to_string()]);
        assert!(o.contains(&"--gpu-architecture=sm_80".to_string()));
        assert!(o.contains(&"-I/x/include".to_string()));
        let o = compile_options(a, Target::Ptx, &[]);
        assert!(o.contains(&"--gpu-architecture=compute_80".to_string()));
    }
}
