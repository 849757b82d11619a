//! Stand-in for `medvae-fast kernels compile|list` until the subcommand is wired into the CLI:
//!   cargo run -p medvae-fast --example kernels -- compile --arch sm_90 --arch sm_80 [--no-ptxas]
//!   cargo run -p medvae-fast --example kernels -- list
#[path = "../src/cmd_kernels.rs"]
mod cmd_kernels;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            cmd_kernels::run_kernels_list();
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
        _ => anyhow::bail!("usage: kernels compile [--arch sm_XX]... [--no-ptxas] | kernels list"),
    }
}
