//! The instruction mix of each kernel's main loop, read from its SASS (`nvdisasm` of the cubin
//! that `ptxas` assembles), for `medvae-fast kernels compile --sass`.
//!
//! Why: the tensor-core kernels are meant to be bound by their MMAs, and a card is lent to this
//! project rarely. Counting, without a GPU, how many other instructions the hot loop issues per
//! MMA shows where a kernel is issue-bound (address arithmetic, branches) and checks that a
//! rewrite of its iterators shrank the loop. An H100 SM sub-partition issues one instruction per
//! clock; an `mma.sync` m16n8k16 occupies its tensor core for about 6 clocks, a wgmma
//! m64n128k16 a warpgroup's for about 64, so a loop with more than that many other
//! instructions per MMA cannot keep the tensor cores busy.
//!
//! The main loop is the back edge (a branch to an earlier label) whose body holds the most MMA
//! instructions, the shortest such body on ties. Counts are static: rare paths inside the loop
//! (a wrap of a pixel counter, say) count as if they ran every iteration.

use std::collections::HashMap;
use std::path::Path;

/// The static instruction mix of one kernel's main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainLoop {
    /// Instructions in the loop body, the back-edge branch included.
    pub instructions: usize,
    /// Tensor-core instructions (HMMA, HGMMA, IMMA).
    pub mma: usize,
    /// Global-to-shared asynchronous copies (LDGSTS, cp.async).
    pub async_copies: usize,
    /// Shared-memory matrix loads (LDSM, ldmatrix).
    pub ldmatrix: usize,
    /// Branches (BRA), the back edge included.
    pub branches: usize,
}

impl MainLoop {
    /// Other instructions issued per tensor-core instruction.
    pub fn other_per_mma(&self) -> f64 {
        (self.instructions - self.mma) as f64 / self.mma as f64
    }
}

/// One disassembled instruction: its opcode (predicate guard stripped) and branch target.
struct Instruction {
    opcode: String,
    target: Option<String>,
}

/// Main loops of every function in `nvdisasm -c` output, by function name; functions without
/// a loop around an MMA are left out.
pub fn main_loops(sass: &str) -> HashMap<String, MainLoop> {
    let mut out = HashMap::new();
    for (name, body) in functions(sass) {
        if let Some(l) = main_loop(&body.0, &body.1) {
            out.insert(name, l);
        }
    }
    out
}

type Body = (Vec<Instruction>, HashMap<String, usize>);

/// Each `.text.NAME:` section: its instructions and the instruction index of each label.
fn functions(sass: &str) -> Vec<(String, Body)> {
    let mut out: Vec<(String, Body)> = Vec::new();
    for line in sass.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix(".text.")
            .and_then(|r| r.strip_suffix(':'))
        {
            out.push((name.to_string(), (Vec::new(), HashMap::new())));
            continue;
        }
        let Some((_, (instructions, labels))) = out.last_mut() else {
            continue;
        };
        if let Some(label) = trimmed.strip_suffix(':').filter(|l| l.starts_with(".L_x_")) {
            labels.insert(label.to_string(), instructions.len());
        } else if let Some(i) = parse_instruction(trimmed) {
            instructions.push(i);
        }
    }
    out
}

/// `/*0220*/  @!P0 BRA `(.L_x_687) ;` -> (BRA, .L_x_687); None for anything else.
fn parse_instruction(line: &str) -> Option<Instruction> {
    let rest = line.strip_prefix("/*")?;
    let (address, rest) = rest.split_once("*/")?;
    if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let text = rest.split(';').next()?.trim();
    let mut words = text.split_whitespace();
    let mut first = words.next()?;
    if first.starts_with('@') {
        first = words.next()?;
    }
    let opcode = first.split('.').next()?.to_string();
    let target = text
        .split_once("`(")
        .and_then(|(_, t)| t.split_once(')'))
        .map(|(t, _)| t.to_string());
    Some(Instruction { opcode, target })
}

fn main_loop(instructions: &[Instruction], labels: &HashMap<String, usize>) -> Option<MainLoop> {
    let is_mma = |op: &str| matches!(op, "HMMA" | "HGMMA" | "IMMA");
    let mut best: Option<MainLoop> = None;
    for (end, ins) in instructions.iter().enumerate() {
        let Some(start) = ins
            .target
            .as_ref()
            .filter(|_| ins.opcode == "BRA")
            .and_then(|t| labels.get(t))
            .filter(|&&s| s <= end)
        else {
            continue;
        };
        let body = &instructions[*start..=end];
        let count = |f: &dyn Fn(&str) -> bool| body.iter().filter(|i| f(&i.opcode)).count();
        let candidate = MainLoop {
            instructions: body.len(),
            mma: count(&|op| is_mma(op)),
            async_copies: count(&|op| op == "LDGSTS"),
            ldmatrix: count(&|op| op == "LDSM"),
            branches: count(&|op| op == "BRA"),
        };
        if candidate.mma == 0 {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => {
                candidate.mma > b.mma
                    || (candidate.mma == b.mma && candidate.instructions < b.instructions)
            }
        };
        if better {
            best = Some(candidate);
        }
    }
    best
}

/// Disassemble `cubin` with `nvdisasm -c` (code sections only).
pub fn disassemble(nvdisasm: &Path, cubin: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let out = std::process::Command::new(nvdisasm)
        .arg("-c")
        .arg(cubin)
        .output()
        .with_context(|| format!("running {}", nvdisasm.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed on {}: {}",
            nvdisasm.display(),
            cubin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel with a prologue loop (no MMA), a main loop of 2 HMMA among 6 instructions, and
    /// a short inner back edge with 1 HMMA: the outer loop with more MMAs is the main loop.
    const SASS: &str = "\t.headerflags\t@\"EF_CUDA_SM90\"\n\
        .text.kern:\n\
        \x20       /*0000*/                   MOV R1, c[0x0][0x28] ;\n\
        .L_x_0:\n\
        \x20       /*0010*/                   IADD3 R2, R2, 0x1, RZ ;\n\
        \x20       /*0020*/               @P0 BRA `(.L_x_0) ;\n\
        .L_x_1:\n\
        \x20       /*0030*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R4.64] ;\n\
        \x20       /*0040*/                   LDSM.16.M88.4 R8, [R5] ;\n\
        .L_x_2:\n\
        \x20       /*0050*/                   HMMA.16816.F32.BF16 R12, R8, R10, R12 ;\n\
        \x20       /*0060*/              @!P1 BRA `(.L_x_2) ;\n\
        \x20       /*0070*/                   HMMA.16816.F32.BF16 R16, R8, R10, R16 ;\n\
        \x20       /*0080*/              @!P2 BRA `(.L_x_1) ;\n\
        \x20       /*0090*/                   EXIT ;\n\
        .text.plain:\n\
        \x20       /*0000*/                   EXIT ;\n";

    #[test]
    fn finds_the_loop_with_the_most_mma() {
        let loops = main_loops(SASS);
        assert_eq!(
            loops["kern"],
            MainLoop {
                instructions: 6,
                mma: 2,
                async_copies: 1,
                ldmatrix: 1,
                branches: 2
            }
        );
        assert_eq!(loops["kern"].other_per_mma(), 2.0);
        assert!(!loops.contains_key("plain"));
    }

    #[test]
    fn forward_branches_are_not_loops() {
        let sass = ".text.k:\n\
            \x20 /*0000*/ HMMA.16816.F32.BF16 R12, R8, R10, R12 ;\n\
            \x20 /*0010*/ @P0 BRA `(.L_x_9) ;\n\
            .L_x_9:\n\
            \x20 /*0020*/ EXIT ;\n";
        assert!(main_loops(sass).is_empty());
    }
}
