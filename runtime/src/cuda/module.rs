//! Kernel modules: compiled by NVRTC on first use, cached on disk per (source hash, arch), and
//! loaded into the device's context once.
//!
//! Cache directory: `$MEDVAE_PTX_CACHE` if set (an empty value disables the disk cache), else
//! `$XDG_CACHE_HOME/medvae-fast/ptx`, else `~/.cache/medvae-fast/ptx`. Files are
//! `<sha256>-sm_XX.cubin` (preferred: no JIT, loads on any CUDA 12 driver) or
//! `<sha256>-compute_XX.ptx` (fallback when NVRTC cannot emit a CUBIN for the device), written
//! atomically (temporary file + rename). A warm cache needs no NVRTC at all, so precompiled
//! images can be shipped to a machine without it (see `warm_cache`).

use super::error::{CudaError, CudaResult};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use medvae_kernels::cuda::arch::{cache_file_name, include_paths_from_env};
use medvae_kernels::cuda::{nvrtc, registry, Arch, CompileError, KernelSource, Target};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The disk cache directory (None: disabled).
pub fn cache_dir() -> Option<PathBuf> {
    if let Ok(v) = std::env::var("MEDVAE_PTX_CACHE") {
        return if v.is_empty() {
            None
        } else {
            Some(PathBuf::from(v))
        };
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("medvae-fast").join("ptx"))
}

/// The image of one module for `arch`: from the cache directory if present, else compiled (and
/// stored). CUBIN is tried first, PTX second.
pub fn module_image(
    src: &KernelSource,
    arch: Arch,
    dir: Option<&Path>,
) -> CudaResult<(Target, Vec<u8>)> {
    if let Some(d) = dir {
        for target in [Target::Cubin, Target::Ptx] {
            let path = d.join(cache_file_name(src, arch, target));
            match std::fs::read(&path) {
                Ok(bytes) if !bytes.is_empty() => return Ok((target, bytes)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CudaError::Cache { path, source: e }),
            }
        }
    }
    let includes = include_paths_from_env();
    let compiled = match nvrtc::compile(src, arch, Target::Cubin, &includes) {
        Ok(c) => c,
        // A source error is the same for both targets; anything else (e.g. an NVRTC that does
        // not know this GPU's sm_XX) may still work as PTX.
        Err(e @ CompileError::Compile { .. }) | Err(e @ CompileError::Unavailable(_)) => {
            return Err(e.into())
        }
        Err(_) => nvrtc::compile(src, arch, Target::Ptx, &includes)?,
    };
    if let Some(d) = dir {
        // A cache that cannot be written only costs a recompile next time.
        let _ = store(
            d,
            &cache_file_name(src, arch, compiled.target),
            &compiled.image,
        );
    }
    Ok((compiled.target, compiled.image))
}

fn store(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // A torn image would be loaded next time (only empty files are passed over): write it
    // whole or not at all.
    crate::checkpoint::write_atomically(&dir.join(name), bytes)
}

/// Compile every module for `arch` into `dir` (no GPU needed). Returns (module, file, bytes).
pub fn warm_cache(arch: Arch, dir: &Path) -> CudaResult<Vec<(&'static str, PathBuf, usize)>> {
    let mut out = Vec::new();
    for src in registry::SOURCES {
        let (target, image) = module_image(src, arch, Some(dir))?;
        out.push((
            src.name,
            dir.join(cache_file_name(src, arch, target)),
            image.len(),
        ));
    }
    Ok(out)
}

/// Loaded modules and functions of one device.
pub(crate) struct KernelCache {
    ctx: Arc<CudaContext>,
    arch: Arch,
    dir: Option<PathBuf>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl KernelCache {
    pub(crate) fn new(ctx: Arc<CudaContext>, arch: Arch) -> Self {
        KernelCache {
            ctx,
            arch,
            dir: cache_dir(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        }
    }

    /// The function `entry`, loading (and if needed compiling) its module on first use.
    pub(crate) fn function(&self, entry: &str) -> CudaResult<CudaFunction> {
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(entry)
        {
            return Ok(f.clone());
        }
        let src = registry::source_of_entry(entry)
            .ok_or_else(|| CudaError::UnknownKernel(entry.to_string()))?;
        let module = self.module(src)?;
        let mut fns = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        for e in src.entry_points {
            if !fns.contains_key(e) {
                fns.insert(e, module.load_function(e)?);
            }
        }
        fns.get(entry)
            .cloned()
            .ok_or_else(|| CudaError::UnknownKernel(entry.to_string()))
    }

    fn module(&self, src: &'static KernelSource) -> CudaResult<Arc<CudaModule>> {
        if let Some(m) = self
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(src.name)
        {
            return Ok(Arc::clone(m));
        }
        let (target, image) = module_image(src, self.arch, self.dir.as_deref())?;
        let ptx = match target {
            Target::Cubin => Ptx::from_binary(image),
            Target::Ptx => Ptx::from_src(String::from_utf8_lossy(&image).into_owned()),
        };
        let m = self.ctx.load_module(ptx)?;
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(src.name, Arc::clone(&m));
        Ok(m)
    }

    /// Load every module (compiling what the cache lacks).
    pub(crate) fn load_all(&self) -> CudaResult<()> {
        for src in registry::SOURCES {
            if let Some(e) = src.entry_points.first() {
                self.function(e)?;
            }
        }
        Ok(())
    }
}
