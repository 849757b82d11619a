//! Convolutions with a once-transformed weight (`WinogradWeight`, 2D and `kd×3×3`) against the
//! implicit GEMM (a different algorithm, itself checked against a naive convolution in
//! `conv.rs`), one weight reused across geometries, and the refusals of what it cannot run.

use medvae_kernels::cpu::conv::{
    conv_backward_data_winograd, conv_backward_data_with, conv_forward_winograd, conv_forward_with,
    ConvAlgorithm, ConvGeometry, ConvScratch, WinogradWeight,
};
use medvae_kernels::{KernelError, Real};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random<T: Real>(rng: &mut ChaCha8Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::c(rng.gen_range(-1.0..1.0))).collect()
}

fn rel_err<T: Real>(got: &[T], want: &[T]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|v| v.f64().is_finite()), "non-finite output");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a.f64() - b.f64()).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| b.f64().powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// A `3×3` (or `1×3×3`) stride-1 geometry with per-axis padding `[lo_h, lo_w, hi_h, hi_w]`.
fn geom(batch: usize, input: [usize; 3], cin: usize, cout: usize, pad: [usize; 4]) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_spatial: input,
        cin,
        cout,
        kernel: [1, 3, 3],
        stride: [1, 1, 1],
        pad_lo: [0, pad[0], pad[1]],
        pad_hi: [0, pad[2], pad[3]],
    }
}

/// Forward and backward-data with `u` against the implicit GEMM on the plain weight.
fn check_against_implicit_gemm<T: Real>(
    g: &ConvGeometry,
    w: &[T],
    u: &WinogradWeight<T>,
    tol: f64,
    rng: &mut ChaCha8Rng,
) {
    let x = random::<T>(rng, g.input_len());
    let b = random::<T>(rng, g.cout);
    let dy = random::<T>(rng, g.output_len());
    let mut reference = ConvScratch::with_algorithm(ConvAlgorithm::ImplicitGemm);
    let mut y_ref = vec![T::zero(); g.output_len()];
    conv_forward_with(&mut reference, g, &x, w, Some(&b), &mut y_ref).expect("reference fwd");
    let mut dx_ref = vec![T::zero(); g.input_len()];
    conv_backward_data_with(&mut reference, g, &dy, w, &mut dx_ref).expect("reference dx");

    // NaN-filled outputs: every element must be written.
    let mut scratch = ConvScratch::new();
    let mut y = vec![T::c(f64::NAN); g.output_len()];
    conv_forward_winograd(&mut scratch, g, &x, u, Some(&b), &mut y).expect("forward");
    let mut dx = vec![T::c(f64::NAN); g.input_len()];
    conv_backward_data_winograd(&mut scratch, g, &dy, u, &mut dx).expect("backward data");
    let ty = std::any::type_name::<T>();
    let (ey, edx) = (rel_err(&y, &y_ref), rel_err(&dx, &dx_ref));
    assert!(ey <= tol, "{g:?} ({ty}): y rel err {ey:.3e}");
    assert!(edx <= tol, "{g:?} ({ty}): dx rel err {edx:.3e}");
}

/// Channel counts, spatial sizes and paddings (0, 1, 2, asymmetric) that Winograd serves.
fn geometries() -> Vec<ConvGeometry> {
    vec![
        geom(2, [1, 5, 6], 3, 4, [1, 1, 1, 1]),
        geom(1, [1, 7, 5], 3, 5, [2, 0, 0, 1]),
        geom(2, [1, 9, 8], 13, 29, [0, 0, 0, 0]),
        geom(1, [1, 16, 13], 48, 40, [1, 2, 2, 1]),
        geom(2, [1, 17, 19], 64, 24, [1, 1, 1, 1]),
        // 1×3×3 over a 3D tensor: every depth slice is an image.
        geom(1, [3, 6, 7], 5, 3, [1, 1, 1, 1]),
        // kd×3×3: a sum of 2D convolutions over the depth taps, with depth padding.
        cube(2, [4, 6, 5], 6, 10, 3, [1, 1]),
        cube(1, [5, 7, 9], 16, 12, 3, [0, 2]),
        cube(1, [3, 5, 6], 3, 4, 2, [1, 0]),
    ]
}

/// A `depth×3×3` stride-1 geometry, height and width padded by 1, depth by `[lo, hi]`.
fn cube(
    batch: usize,
    input: [usize; 3],
    cin: usize,
    cout: usize,
    depth: usize,
    [lo, hi]: [usize; 2],
) -> ConvGeometry {
    let mut g = geom(batch, input, cin, cout, [1; 4]);
    g.kernel[0] = depth;
    g.pad_lo[0] = lo;
    g.pad_hi[0] = hi;
    g
}

fn each_geometry_matches<T: Real>(tol: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for g in geometries() {
        let w = random::<T>(&mut rng, g.weight_len());
        let u = WinogradWeight::new(g.kernel, g.cin, g.cout, &w).expect("transform");
        assert!(u.serves_forward(&g) && u.serves_backward_data(&g), "{g:?}");
        let planes = 16 * g.kernel[0] * g.cin * g.cout;
        assert_eq!(u.size_bytes(), planes * std::mem::size_of::<T>());
        check_against_implicit_gemm(&g, &w, &u, tol, &mut rng);
    }
}

#[test]
fn prepared_weight_matches_implicit_gemm_f64() {
    each_geometry_matches::<f64>(1e-12, 21);
}

#[test]
fn prepared_weight_matches_implicit_gemm_f32() {
    each_geometry_matches::<f32>(2e-5, 22);
}

#[test]
fn one_weight_serves_every_extent_and_batch() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let (cin, cout) = (24, 40);
    let w = random::<f64>(&mut rng, 9 * cin * cout);
    let u = WinogradWeight::new([1, 3, 3], cin, cout, &w).expect("transform");
    for g in [
        geom(1, [1, 12, 12], cin, cout, [1, 1, 1, 1]),
        geom(3, [1, 5, 9], cin, cout, [1, 1, 1, 1]),
        geom(2, [1, 8, 8], cin, cout, [0, 0, 0, 0]),
        geom(1, [2, 6, 10], cin, cout, [1, 0, 1, 2]),
    ] {
        check_against_implicit_gemm(&g, &w, &u, 1e-12, &mut rng);
    }
}

fn expect_geometry_error(r: Result<(), KernelError>, needle: &str) {
    match r {
        Err(KernelError::Geometry { msg, .. }) => {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
        }
        other => panic!("expected a geometry error mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn what_a_prepared_weight_cannot_run_is_refused() {
    let w = vec![0.5f32; 9 * 4 * 6];
    assert!(matches!(
        WinogradWeight::new([1, 3, 3], 4, 6, &w[1..]),
        Err(KernelError::Length { .. })
    ));
    assert!(WinogradWeight::<f32>::new([1, 3, 3], 0, 6, &[]).is_err());
    let u = WinogradWeight::new([1, 3, 3], 4, 6, &w).expect("transform");
    let mut scratch = ConvScratch::new();
    let run = |scratch: &mut ConvScratch<f32>, g: &ConvGeometry| {
        let x = vec![0f32; g.input_len()];
        let mut y = vec![0f32; g.output_len()];
        conv_forward_winograd(scratch, g, &x, &u, None, &mut y)
    };
    // Channels swapped, a stride, another kernel depth.
    expect_geometry_error(
        run(&mut scratch, &geom(1, [1, 6, 6], 6, 4, [1; 4])),
        "4 → 6",
    );
    let mut strided = geom(1, [1, 8, 8], 4, 6, [1; 4]);
    strided.stride = [1, 2, 2];
    expect_geometry_error(run(&mut scratch, &strided), "stride");
    let mut cube = geom(1, [4, 6, 6], 4, 6, [1; 4]);
    cube.kernel = [3, 3, 3];
    expect_geometry_error(run(&mut scratch, &cube), "kernel");
    // The backward-data needs padding ≤ 2 (the forward does not).
    let wide = geom(1, [1, 6, 6], 4, 6, [3, 3, 3, 3]);
    assert!(u.serves_forward(&wide) && !u.serves_backward_data(&wide));
    let dy = vec![0f32; wide.output_len()];
    let mut dx = vec![0f32; wide.input_len()];
    expect_geometry_error(
        conv_backward_data_winograd(&mut scratch, &wide, &dy, &u, &mut dx),
        "backward-data",
    );
    // Wrong buffer lengths.
    let g = geom(1, [1, 6, 6], 4, 6, [1; 4]);
    let x = vec![0f32; g.input_len() - 1];
    let mut y = vec![0f32; g.output_len()];
    assert!(matches!(
        conv_forward_winograd(&mut scratch, &g, &x, &u, None, &mut y),
        Err(KernelError::Length { .. })
    ));
}
