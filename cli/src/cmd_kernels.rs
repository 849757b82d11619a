//! `medvae-fast kernels compile|list`: compile every CUDA kernel module with NVRTC (no GPU
//! needed) and, when `ptxas` is available, report each kernel's registers, shared memory and
//! spills, so that compile breaks and resource regressions show in CI.
//!
//! NVRTC is loaded at run time (`scripts/install-nvrtc.sh` installs it from PyPI and prints the
//! `LD_LIBRARY_PATH`, `MEDVAE_CUDA_INCLUDE` and `MEDVAE_PTXAS` exports).

use crate::cmd_kernels_sass;
use anyhow::{bail, Context, Result};
use medvae_kernels::cuda::arch::include_paths_from_env;
use medvae_kernels::cuda::{nvrtc, Arch, KernelSource, Target, SOURCES};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Architectures compiled when none is given.
const DEFAULT_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// `kernels list`: every module with its summary and entry points.
pub fn run_kernels_list() {
    let entries: usize = SOURCES.iter().map(|s| s.entry_points.len()).sum();
    println!(
        "{} CUDA modules, {entries} kernels (kernels/cuda/)",
        SOURCES.len()
    );
    for src in SOURCES {
        println!("{:<16} {}", src.file, src.summary());
        for e in src.entry_points {
            println!("    {e}");
        }
    }
}

/// Resource usage of one kernel as `ptxas -v` reports it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Resources {
    registers: u32,
    smem_bytes: u32,
    stack_bytes: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// What `kernels compile` reports besides "OK", and where it keeps its output.
pub struct CompileOptions {
    /// Run `ptxas -v` for registers, shared memory and spills (when ptxas is found).
    pub ptxas: bool,
    /// Disassemble each cubin and print its main loops' instruction mix (needs ptxas and
    /// nvdisasm).
    pub sass: bool,
    /// Only these modules (by name, e.g. conv_bf16); all when empty.
    pub modules: Vec<String>,
    /// Keep the PTX, cubin and SASS of every module here instead of a removed scratch folder.
    pub keep: Option<PathBuf>,
}

/// `kernels compile --arch A ...`: one line per kernel and architecture; an error if any
/// module fails to compile (or its PTX lacks a registered entry point).
pub fn run_kernels_compile(archs: &[String], opts: &CompileOptions) -> Result<()> {
    let names: Vec<String> = if archs.is_empty() {
        DEFAULT_ARCHS.iter().map(|s| s.to_string()).collect()
    } else {
        archs.to_vec()
    };
    let archs = names
        .iter()
        .map(|a| Arch::parse(a))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let (major, minor) = nvrtc::version().context("cannot compile CUDA kernels")?;
    let includes = include_paths_from_env();
    for m in &opts.modules {
        if !SOURCES.iter().any(|s| s.name == m) {
            let names: Vec<&str> = SOURCES.iter().map(|s| s.name).collect();
            bail!(
                "no kernel module {m:?}; the modules are {}",
                names.join(", ")
            );
        }
    }
    let sources: Vec<&KernelSource> = SOURCES
        .iter()
        .filter(|s| opts.modules.is_empty() || opts.modules.iter().any(|m| m == s.name))
        .collect();
    let ptxas_bin = if opts.ptxas || opts.sass {
        find_ptxas()
    } else {
        None
    };
    let nvdisasm = match (opts.sass, &ptxas_bin) {
        (false, _) => None,
        (true, None) => bail!("--sass needs ptxas (set MEDVAE_PTXAS or put it on PATH)"),
        (true, Some(p)) => Some(find_nvdisasm(p).context(
            "--sass needs nvdisasm: set MEDVAE_NVDISASM or put it on PATH \
             (scripts/install-nvrtc.sh --with-nvdisasm installs NVIDIA's wheel)",
        )?),
    };
    println!(
        "NVRTC {major}.{minor}; {} modules; ptxas: {}",
        sources.len(),
        match (&ptxas_bin, opts.ptxas) {
            (Some(p), _) => p.display().to_string(),
            (None, true) =>
                "not found (set MEDVAE_PTXAS or put ptxas on PATH; no resource report)".into(),
            (None, false) => "off".into(),
        }
    );
    let scratch = opts.keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("medvae-kernels-{}", std::process::id()))
    });
    let tools = Tools {
        ptxas: ptxas_bin.as_deref(),
        nvdisasm: nvdisasm.as_deref(),
    };
    let mut failures = Vec::new();
    for arch in &archs {
        for src in &sources {
            if let Err(e) = compile_one(src, *arch, &includes, &tools, &scratch) {
                println!("{:<28} {:<14} {:<6} FAIL", "*", src.name, arch.sm());
                println!("{e:#}");
                failures.push(format!("{} {}", src.name, arch.sm()));
            }
        }
    }
    if opts.keep.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if !failures.is_empty() {
        bail!(
            "{} module build(s) failed: {}",
            failures.len(),
            failures.join(", ")
        );
    }
    Ok(())
}

/// The optional NVIDIA tools found for the report.
struct Tools<'a> {
    ptxas: Option<&'a Path>,
    nvdisasm: Option<&'a Path>,
}

fn compile_one(
    src: &KernelSource,
    arch: Arch,
    includes: &[String],
    tools: &Tools,
    scratch: &Path,
) -> Result<()> {
    let compiled = nvrtc::compile(src, arch, Target::Ptx, includes)?;
    // What NVRTC compiled for (sm_90a for the wgmma module on 9.0), for ptxas and the report.
    let arch = src.arch_for(arch);
    let ptx = compiled
        .ptx()
        .context("NVRTC returned PTX that is not UTF-8")?;
    let found = nvrtc::ptx_entries(ptx);
    for e in src.entry_points {
        if !found.iter().any(|f| f == e) {
            bail!("{}: entry point {e} missing from the PTX", src.file);
        }
    }
    let ptx_file = scratch.join(format!("{}-{}.ptx", src.name, arch.sm()));
    let resources = match tools.ptxas {
        Some(bin) => match ptxas_report(bin, ptx, arch, &ptx_file) {
            Ok(r) => Some(r),
            Err(e) => {
                println!(
                    "{:<28} {:<14} {:<6} ptxas failed (resources not reported): {e:#}",
                    "*",
                    src.name,
                    arch.sm()
                );
                None
            }
        },
        None => None,
    };
    let loops = match (tools.nvdisasm, &resources) {
        (Some(bin), Some(_)) => {
            let sass = cmd_kernels_sass::disassemble(bin, &ptx_file.with_extension("cubin"))?;
            std::fs::write(ptx_file.with_extension("sass"), &sass)?;
            cmd_kernels_sass::main_loops(&sass)
        }
        _ => HashMap::new(),
    };
    for e in src.entry_points {
        let res = match resources.as_ref().and_then(|r| r.get(*e)) {
            Some(r) => format!(
                "{:>3} regs {:>6} B smem  stack {:>4} B  spill {}/{} B",
                r.registers, r.smem_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
            ),
            None => String::new(),
        };
        println!(
            "{e:<28} {:<14} {:<6} OK   PTX {:>8} B  {res}",
            src.name,
            arch.sm(),
            compiled.image.len()
        );
        if let Some(l) = loops.get(*e) {
            println!(
                "{:<28} main loop {:>4} instr {:>3} MMA  {:>5.1} other/MMA  LDGSTS {:>2}  LDSM {:>2}  BRA {:>2}",
                "",
                l.instructions,
                l.mma,
                l.other_per_mma(),
                l.async_copies,
                l.ldmatrix,
                l.branches
            );
        }
    }
    if !compiled.log.is_empty() {
        println!(
            "    NVRTC log for {} ({}):\n{}",
            src.name,
            arch.sm(),
            compiled.log
        );
    }
    Ok(())
}

/// `MEDVAE_PTXAS`, else `ptxas` on PATH, else `$CUDA_HOME/bin/ptxas`, else /usr/local/cuda.
fn find_ptxas() -> Option<PathBuf> {
    let cuda_home =
        std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("bin").join("ptxas"));
    find_tool(
        "MEDVAE_PTXAS",
        "ptxas",
        cuda_home
            .into_iter()
            .chain(std::iter::once(PathBuf::from("/usr/local/cuda/bin/ptxas"))),
    )
}

/// `MEDVAE_NVDISASM`, else `nvdisasm` on PATH, else beside `ptxas` (a CUDA toolkit;
/// `scripts/install-nvrtc.sh --with-nvdisasm` prints the variable for its wheel).
fn find_nvdisasm(ptxas: &Path) -> Option<PathBuf> {
    let beside = ptxas.parent().map(|d| d.join("nvdisasm"));
    find_tool("MEDVAE_NVDISASM", "nvdisasm", beside)
}

/// The file named by environment variable `var` (only that, when it is set), else `name` in
/// a PATH folder, else the first of `fallbacks` that exists.
fn find_tool(
    var: &str,
    name: &str,
    fallbacks: impl IntoIterator<Item = PathBuf>,
) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path.into_iter().chain(fallbacks).find(|p| p.is_file())
}

/// Assemble `ptx` for `arch` with `ptxas -v` and parse its per-kernel report.
fn ptxas_report(
    bin: &Path,
    ptx: &str,
    arch: Arch,
    file: &Path,
) -> Result<HashMap<String, Resources>> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, ptx)?;
    let out = Command::new(bin)
        .arg("-v")
        .arg(format!("--gpu-name={}", arch.sm()))
        .arg("-o")
        .arg(file.with_extension("cubin"))
        .arg(file)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{}",
            text.lines()
                .find(|l| l.contains("error"))
                .unwrap_or(text.trim())
        );
    }
    Ok(parse_ptxas(&text))
}

/// Per-function numbers from `ptxas -v` output.
fn parse_ptxas(text: &str) -> HashMap<String, Resources> {
    let mut out: HashMap<String, Resources> = HashMap::new();
    let mut current: Option<String> = None;
    let num_before = |line: &str, unit: &str| -> Option<u32> {
        let pos = line.find(unit)?;
        line[..pos].split_whitespace().last()?.parse().ok()
    };
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().map(str::to_string);
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(rest.trim().to_string());
        }
        let Some(name) = current.clone() else {
            continue;
        };
        let r = out.entry(name).or_default();
        if line.contains("stack frame") {
            r.stack_bytes = num_before(line, "bytes stack frame").unwrap_or(0);
            r.spill_stores = num_before(line, "bytes spill stores").unwrap_or(0);
            r.spill_loads = num_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            r.registers = num_before(line, "registers").unwrap_or(0);
            r.smem_bytes = num_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let text = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'conv_fwd_tf32_128x128' for 'sm_90'\n\
            ptxas info    : Function properties for conv_fwd_tf32_128x128\n\
            \x20   8 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads\n\
            ptxas info    : Used 165 registers, used 1 barriers, 37888 bytes smem\n\
            ptxas info    : Compiling entry function 'adam_multi' for 'sm_90'\n\
            ptxas info    : Function properties for adam_multi\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 40 registers, used 0 barriers\n";
        let r = parse_ptxas(text);
        let c = r["conv_fwd_tf32_128x128"];
        assert_eq!(
            c,
            Resources {
                registers: 165,
                smem_bytes: 37888,
                stack_bytes: 8,
                spill_stores: 12,
                spill_loads: 20
            }
        );
        assert_eq!(r["adam_multi"].registers, 40);
        assert_eq!(r["adam_multi"].smem_bytes, 0);
    }
}
