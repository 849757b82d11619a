//! Every CUDA C source of `kernels/cuda/`, embedded at build time, with its entry points.
//!
//! The list is checked against the sources by a unit test (every `extern "C" __global__`
//! function is listed, nothing else), and against the compiled PTX by the NVRTC tests.

/// A header the sources `#include`; NVRTC receives it in memory under `name`, so compiling needs
/// no include path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHeader {
    pub name: &'static str,
    pub source: &'static str,
}

/// One `.cu` file: compiled as one NVRTC program (one PTX module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSource {
    /// Module name (the file stem), e.g. `conv_igemm`.
    pub name: &'static str,
    /// File name under `kernels/cuda/`.
    pub file: &'static str,
    pub source: &'static str,
    /// `extern "C" __global__` functions of the module.
    pub entry_points: &'static [&'static str],
    /// Uses the architecture-specific features of compute capability 9.0 (wgmma): compiled
    /// for `sm_90a` instead of `sm_90`. Its kernels compile to traps on other architectures.
    pub hopper_features: bool,
}

impl KernelSource {
    /// The architecture this module is compiled for on `arch`: `sm_90a` for a module with
    /// [`KernelSource::hopper_features`] on compute capability 9.0, else `arch` itself.
    pub fn arch_for(&self, arch: super::arch::Arch) -> super::arch::Arch {
        if self.hopper_features && (arch.major, arch.minor) == (9, 0) {
            super::arch::Arch {
                suffix: Some('a'),
                ..arch
            }
        } else {
            arch
        }
    }

    /// The text after the em dash of the first comment line: a one-line description.
    pub fn summary(&self) -> &'static str {
        let first = self.source.lines().next().unwrap_or("");
        match first.split_once('—') {
            Some((_, rest)) => rest.trim(),
            None => first.trim_start_matches('/').trim(),
        }
    }
}

macro_rules! header {
    ($name:literal) => {
        KernelHeader {
            name: $name,
            source: include_str!(concat!("../../cuda/", $name)),
        }
    };
}

macro_rules! source {
    ($name:literal, [$($entry:literal),* $(,)?]) => {
        KernelSource {
            name: $name,
            file: concat!($name, ".cu"),
            source: include_str!(concat!("../../cuda/", $name, ".cu")),
            entry_points: &[$($entry),*],
            hopper_features: false,
        }
    };
    (hopper $name:literal, [$($entry:literal),* $(,)?]) => {
        KernelSource {
            hopper_features: true,
            ..source!($name, [$($entry),*])
        }
    };
}

/// Headers available to every source.
pub const HEADERS: &[KernelHeader] = &[
    header!("medvae_common.cuh"),
    header!("medvae_conv.cuh"),
    header!("medvae_igemm.cuh"),
    header!("medvae_gemm.cuh"),
    header!("medvae_igemm_streamed.cuh"),
    header!("medvae_igemm_bf16.cuh"),
    header!("medvae_igemm_tf32.cuh"),
    header!("medvae_gemm_runs.cuh"),
    header!("medvae_conv_streamed.cuh"),
    header!("medvae_attention.cuh"),
];

/// Every kernel module.
pub const SOURCES: &[KernelSource] = &[
    source!("gemm_f32", ["gemm_f32_nn", "gemm_f32_nt", "gemm_f32_tn"]),
    source!(
        "gemm_bf16",
        [
            "gemm_bf16s_128x128_nn",
            "gemm_bf16s_128x128_nt",
            "gemm_bf16s_128x128_tn",
            "gemm_bf16s_64x64_nn",
            "gemm_bf16s_64x64_nt",
            "gemm_bf16s_64x64_tn",
        ]
    ),
    source!(
        "gemm_tf32",
        [
            "gemm_tf32s_128x128_nn",
            "gemm_tf32s_128x128_nt",
            "gemm_tf32s_128x128_tn",
            "gemm_tf32s_64x64_nn",
            "gemm_tf32s_64x64_nt",
            "gemm_tf32s_64x64_tn",
        ]
    ),
    source!(
        "conv_tf32",
        [
            "conv_fwd_tf32s_128x128",
            "conv_fwd_tf32s_64x64",
            "conv_dgrad_tf32s_128x128",
            "conv_dgrad_tf32s_64x64",
            "conv_wgrad_tf32s_128x128",
            "conv_wgrad_tf32s_64x64",
        ]
    ),
    source!(
        "conv_bf16",
        [
            "cvt_f32_bf16",
            "conv_fwd_bf16s_128x128",
            "conv_fwd_bf16s_64x64",
            "conv_dgrad_bf16s_128x128",
            "conv_dgrad_bf16s_64x64",
            "conv_wgrad_bf16s_128x128",
            "conv_wgrad_bf16s_64x64",
            "conv_fwd_bf16s_256x128",
            "conv_fwd_bf16s_128x128w4",
            "conv_fwd_bf16s_128x128k64",
            "conv_wgrad_bf16s_256x128",
            "conv_wgrad_bf16s_128x128w4",
            "conv_wgrad_bf16s_128x128k64",
        ]
    ),
    source!(
        hopper "conv_wgmma",
        [
            "conv_fwd_bf16w_128x128",
            "conv_fwd_bf16w_128x128o",
            "conv_fwd_bf16w_128x128s3",
            "conv_wgrad_bf16w_128x128",
            "conv_wgrad_bf16w_128x128o",
            "conv_wgrad_bf16w_128x128s3",
            "conv_weight_nk_bf16"
        ]
    ),
    source!(
        "gemm",
        [
            "gemm_tf32_128x128_nn",
            "gemm_tf32_128x128_nt",
            "gemm_tf32_128x128_tn",
            "gemm_tf32_64x64_nn",
            "gemm_tf32_64x64_nt",
            "gemm_tf32_64x64_tn",
            "gemm_bf16_128x128_nn",
            "gemm_bf16_128x128_nt",
            "gemm_bf16_128x128_tn",
            "gemm_bf16_64x64_nn",
            "gemm_bf16_64x64_nt",
            "gemm_bf16_64x64_tn",
        ]
    ),
    source!(
        "conv_igemm",
        [
            "conv_fwd_tf32_128x128",
            "conv_fwd_tf32_64x64",
            "conv_fwd_bf16_128x128",
            "conv_fwd_bf16_64x64",
            "conv_dgrad_tf32_128x128",
            "conv_dgrad_tf32_64x64",
            "conv_dgrad_bf16_128x128",
            "conv_dgrad_bf16_64x64",
            "conv_wgrad_tf32_128x128",
            "conv_wgrad_tf32_64x64",
            "conv_wgrad_bf16_128x128",
            "conv_wgrad_bf16_64x64",
        ]
    ),
    source!(
        "conv_thin",
        [
            "conv_thin_fwd",
            "conv_thin_dgrad",
            "conv_thin_wgrad_t9",
            "conv_thin_wgrad_t16",
            "conv_thin_wgrad_t27",
            "conv_thin_wgrad_t9_p1",
            "conv_thin_wgrad_t16_p1",
            "conv_thin_wgrad_t27_p1",
            "conv_thin_fwd_wide",
            "conv_thin_dgrad_wide",
        ]
    ),
    source!(
        "conv_direct",
        [
            "conv_direct_fwd",
            "conv_direct_dgrad",
            "conv_direct_wgrad",
            "conv_weight_flip_transpose",
        ]
    ),
    source!(
        "group_norm",
        [
            "gn_stats_partial_v4",
            "gn_stats_partial_v1",
            "gn_stats_finalize",
            "gn_apply_v4",
            "gn_apply_v1",
            "gn_bwd_partial_v4",
            "gn_bwd_partial_v1",
            "gn_bwd_finalize",
            "gn_bwd_dx_v4",
            "gn_bwd_dx_v1",
        ]
    ),
    source!("batch_norm", ["bn_eval_stats", "bn_update_running"]),
    source!("layer_norm", ["ln_fwd", "ln_bwd"]),
    source!(
        "attention_fwd",
        [
            "attn_fwd_d64",
            "attn_fwd_d128",
            "attn_fwd_d256",
            "attn_fwd_d512"
        ]
    ),
    source!(
        "attention_bwd",
        [
            "attn_bwd_delta",
            "attn_bwd_dkdv_d64",
            "attn_bwd_dkdv_d128",
            "attn_bwd_dkdv_d256",
            "attn_bwd_dkdv_d512",
            "attn_bwd_dq_d64",
            "attn_bwd_dq_d128",
            "attn_bwd_dq_d256",
            "attn_bwd_dq_d512",
        ]
    ),
    source!("softmax", ["softmax_fwd", "softmax_bwd"]),
    source!("resize", ["resample_axis_fwd", "resample_axis_bwd"]),
    source!(
        "upsample_pool",
        [
            "upsample_nearest_fwd",
            "upsample_nearest_bwd",
            "maxpool2_fwd",
            "maxpool2_bwd",
        ]
    ),
    source!("slices", ["slices_gather", "slices_scatter_add"]),
    source!("strided", ["strided_gather", "strided_scatter"]),
    source!(
        "elementwise",
        [
            "ew_fill",
            "ew_add_scaled",
            "ew_scale",
            "ew_axpy",
            "ew_mul",
            "ew_add_channel_bias",
            "ew_affine_clamp",
            "act_silu_fwd",
            "act_silu_bwd",
            "act_relu_fwd",
            "act_relu_bwd",
            "act_leaky_relu_fwd",
            "act_leaky_relu_bwd",
            "act_gelu_fwd",
            "act_gelu_bwd",
            "transpose_2d",
        ]
    ),
    source!(
        "reduce",
        [
            "reduce_sum_partial",
            "reduce_sumsq_partial",
            "reduce_nonfinite_partial",
            "reduce_finalize",
            "reduce_rows",
            "reduce_cols_acc",
        ]
    ),
    source!(
        "loss",
        [
            "l1_partial",
            "l1_bwd",
            "hinge_partial",
            "hinge_finalize",
            "hinge_bwd",
            "hinge_half_partial",
            "hinge_half_bwd",
        ]
    ),
    source!(
        "gaussian",
        [
            "gaussian_sample_fwd",
            "gaussian_sample_bwd",
            "kl_moments_fwd",
            "kl_moments_bwd",
        ]
    ),
    source!("adam", ["adam_multi"]),
    source!(
        "lpips",
        [
            "lpips_dist_fwd",
            "lpips_dist_bwd",
            "lpips_scale_fwd",
            "lpips_scale_bwd",
        ]
    ),
];

/// The module called `name`.
pub fn source(name: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().find(|s| s.name == name)
}

/// The module that defines entry point `entry`.
pub fn source_of_entry(entry: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().find(|s| s.entry_points.contains(&entry))
}

/// Names of the `extern "C" __global__` functions defined in CUDA source text, in order.
pub fn parse_entry_points(source: &str) -> Vec<String> {
    const MARK: &str = "extern \"C\" __global__";
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(pos) = rest.find(MARK) {
        rest = &rest[pos + MARK.len()..];
        // `void [__launch_bounds__(...) | __maxnreg__(...)] NAME (`
        let head = match rest.find('(') {
            Some(p) => &rest[..p],
            None => break,
        };
        let mut tokens = head.split_whitespace();
        let mut name = tokens.next_back();
        if matches!(name, Some("__launch_bounds__" | "__maxnreg__")) {
            // the first '(' belonged to the attribute; the name follows its ')'
            if let Some(close) = rest.find(')') {
                let after = &rest[close + 1..];
                name = after
                    .split('(')
                    .next()
                    .and_then(|s| s.split_whitespace().next_back());
            }
        }
        if let Some(n) = name {
            out.push(n.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn registry_lists_exactly_the_entry_points_of_each_source() {
        for s in SOURCES {
            let parsed = parse_entry_points(s.source);
            assert!(!parsed.is_empty(), "{}: no entry points parsed", s.file);
            let listed: Vec<String> = s.entry_points.iter().map(|e| e.to_string()).collect();
            assert_eq!(parsed, listed, "{}: registry out of date", s.file);
        }
    }

    #[test]
    fn entry_point_names_are_unique_across_modules() {
        let mut seen = BTreeSet::new();
        for s in SOURCES {
            for e in s.entry_points {
                assert!(seen.insert(*e), "entry point {e} defined twice");
            }
        }
        assert!(source_of_entry("conv_fwd_tf32_128x128").is_some());
        assert!(source_of_entry("no_such_kernel").is_none());
    }

    #[test]
    fn every_include_is_a_registered_header() {
        let names: BTreeSet<&str> = HEADERS.iter().map(|h| h.name).collect();
        let texts = SOURCES
            .iter()
            .map(|s| s.source)
            .chain(HEADERS.iter().map(|h| h.source));
        for text in texts {
            for line in text.lines() {
                let line = line.trim();
                if let Some(inc) = line.strip_prefix("#include") {
                    let inc = inc.trim().trim_matches('"');
                    // the emulator header is only included under MEDVAE_EMU
                    if inc != "emu/emu.h" {
                        assert!(names.contains(inc), "unregistered include {inc}");
                    }
                }
            }
        }
    }

    #[test]
    fn parser_handles_launch_bounds_and_line_breaks() {
        let src = "extern \"C\" __global__ void a(int x) {}\n\
                   extern \"C\" __global__ void __launch_bounds__(256)\n    b(float* y) {}\n\
                   extern \"C\" __global__ void __maxnreg__(168)\n    c(float* y) {}";
        assert_eq!(parse_entry_points(src), vec!["a", "b", "c"]);
    }

    #[test]
    fn summaries_come_from_the_first_line() {
        let s = source("adam").expect("adam registered");
        assert!(
            s.summary().starts_with("multi-tensor Adam"),
            "{}",
            s.summary()
        );
    }
}
