//! Precompile every CUDA module into the kernel cache ($MEDVAE_PTX_CACHE or ~/.cache/...), so
//! that a lent GPU machine without NVRTC starts from cubins (`scripts/gpu-check.sh --prepare`):
//!   cargo run -p medvae-fast --example kernels -- warm-cache --arch sm_90
//! Compiling and listing the kernels are `medvae-fast kernels compile|list`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("warm-cache") => {
            let arch = match args.get(1).map(String::as_str) {
                Some("--arch") => args
                    .get(2)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("--arch needs a value"))?,
                _ => "sm_90".to_string(),
            };
            let arch = medvae_kernels::cuda::Arch::parse(&arch)?;
            let dir = medvae_runtime::cuda::module::cache_dir().ok_or_else(|| {
                anyhow::anyhow!("no cache directory (MEDVAE_PTX_CACHE is empty and HOME unset)")
            })?;
            for (module, path, bytes) in medvae_runtime::cuda::module::warm_cache(arch, &dir)? {
                println!("{module:<16} {bytes:>9} B  {}", path.display());
            }
            Ok(())
        }
        _ => anyhow::bail!("usage: kernels warm-cache [--arch sm_XX]"),
    }
}
