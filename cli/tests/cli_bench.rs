//! `medvae-fast bench` runs its workloads and says which exist: a smoke test of the command
//! (its timings are measurements, never asserted).

use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    bench_with_env(args, &[])
}

/// [`bench`] with these environment variables set.
fn bench_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medvae-fast"))
        .arg("bench")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run medvae-fast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn all_reduce_reports_the_model_gradients_and_a_rate() {
    let (ok, stdout, stderr) = bench(&[
        "--only",
        "all_reduce",
        "--size",
        "32",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--threads",
        "2",
    ]);
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let a = &line["all_reduce"];
    assert_eq!(a["ranks"], 2);
    // medvae_4_1_2d's trainable tensors: tens of millions of values.
    let values = a["values_per_rank"].as_u64().expect("values_per_rank");
    assert!(values > 10_000_000, "{a}");
    let median = a["median_s"].as_f64().expect("median_s");
    assert!(median.is_finite() && median > 0.0, "{a}");
    assert!(
        a["gb_per_s_per_rank"].as_f64().is_some_and(f64::is_finite),
        "{a}"
    );
}

#[test]
fn an_unknown_workload_lists_the_known_ones() {
    let (ok, _, stderr) = bench(&["--only", "warp_drive", "--size", "32"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown workload `warp_drive`") && stderr.contains("all_reduce"),
        "{stderr}"
    );
}

/// `MEDVAE_CPU_PROFILE=1`: after the JSON line, the CPU ops ranked by self time, the
/// convolutions among them; without the variable, no table.
#[test]
fn the_cpu_profile_ranks_the_ops_when_asked_for() {
    let run = |profile: &str| {
        let args = [
            "--only", "encode", "--size", "32", "--reps", "1", "--warmup", "0",
        ];
        let (ok, _, stderr) = bench_with_env(&args, &[("MEDVAE_CPU_PROFILE", profile)]);
        assert!(ok, "{stderr}");
        stderr
    };
    let stderr = run("1");
    let table: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("cpu op profile"))
        .collect();
    assert!(table.len() > 3, "{stderr}");
    let conv = table
        .iter()
        .find(|l| l.trim_start().starts_with("conv_forward "))
        .unwrap_or_else(|| panic!("no conv_forward row: {stderr}"));
    // the encoder's convolutions: conv_in, the resnet blocks, the downsamplings, conv_out
    let calls: u64 = conv
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a call count");
    assert!(calls >= 10, "{conv}");
    assert!(!run("0").contains("cpu op profile"));
}
