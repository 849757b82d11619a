//! Stand-in for `medvae-fast kernels compile|list` until the subcommand is wired into the CLI:
//!   cargo run -p medvae-fast --example kernels -- compile --arch sm_90 --arch sm_80 [--no-ptxas]
//!   cargo run -p medvae-fast --example kernels -- list
//!   cargo run -p medvae-fast --example kernels -- warm-cache --arch sm_90
//!     (precompile every module into the kernel cache, $MEDVAE_PTX_CACHE or ~/.cache/...)
#[path = "../src/cmd_kernels.rs"]
mod cmd_kernels;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            cmd_kernels::run_kernels_list();
            Ok(())
        }
        Some("warm-cache") => {
            let arch = match args.get(1).map(String::as_str) {
                Some("--arch") => args.get(2).cloned().ok_or_else(|| anyhow::anyhow!("--arch needs a value"))?,
                _ => "sm_90".to_string(),
            };
            let arch = medvae_kernels::cuda::Arch::parse(&arch)?;
            let dir = medvae_runtime::cuda::module::cache_dir()
                .ok_or_else(|| anyhow::anyhow!("no cache directory (MEDVAE_PTX_CACHE is empty and HOME unset)"))?;
            for (module, path, bytes) in medvae_runtime::cuda::module::warm_cache(arch, &dir)? {
                println!("{module:<16} {bytes:>9} B  {}", path.display());
            }
            Ok(())
        }
        Some("compile") => {
            let mut archs = Vec::new();
            let mut ptxas = true;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--arch" => archs.push(it.next().cloned().ok_or_else(|| anyhow::anyhow!("--arch needs a value"))?),
                    "--no-ptxas" => ptxas = false,
                    other => anyhow::bail!("unknown argument {other}"),
                }
            }
            cmd_kernels::run_kernels_compile(&archs, ptxas)
        }
        _ => anyhow::bail!("usage: kernels compile [--arch sm_XX]... [--no-ptxas] | list | warm-cache [--arch sm_XX]"),
    }
}
