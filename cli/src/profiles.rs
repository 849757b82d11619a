//! The profiles a run collects when asked (`MEDVAE_CPU_PROFILE=1`, `MEDVAE_CUDA_PROFILE=1`),
//! printed on stderr at its end by every command that runs the model (`bench`, `finetune`,
//! `infer`, `decode`, `eval`).

/// Print whichever profiles were collected (nothing when none was asked for).
pub fn print() {
    print_cuda();
    print_cpu();
}

/// With `MEDVAE_CPU_PROFILE=1`: the CPU ops ranked by self time over the whole run
/// (`bench`: warm-ups included), on stderr.
fn print_cpu() {
    let rows = medvae_runtime::ops::cpu_profile::report();
    if rows.is_empty() {
        return;
    }
    let in_ops: f64 = rows.iter().map(|r| r.self_time.as_secs_f64()).sum();
    eprintln!(
        "cpu op profile (whole run): {in_ops:.3} s in ops; self time, then with the ops each called"
    );
    for r in rows.iter().take(30) {
        let s = r.self_time.as_secs_f64();
        eprintln!(
            "  {:<34} {:>7} calls {:>10.1} ms {:>5.1}% {:>10.1} ms",
            r.op,
            r.calls,
            s * 1e3,
            100.0 * s / in_ops.max(1e-12),
            r.total.as_secs_f64() * 1e3
        );
    }
}

/// With `MEDVAE_CUDA_PROFILE=1`: the kernels ranked by total time over the whole run
/// (`bench`: warm-ups included), on stderr.
fn print_cuda() {
    let rows = medvae_runtime::cuda::profile::report();
    if rows.is_empty() {
        return;
    }
    let total: f64 = rows.iter().map(|r| r.total.as_secs_f64()).sum();
    eprintln!("kernel profile (serialised launches, whole run): {total:.3} s in kernels");
    for r in rows.iter().take(25) {
        let s = r.total.as_secs_f64();
        eprintln!(
            "  {:<40} {:>6} launches {:>9.2} ms {:>5.1}%",
            r.entry,
            r.launches,
            s * 1e3,
            100.0 * s / total.max(1e-12)
        );
    }
}
