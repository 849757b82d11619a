//! The transforms compiled for AVX2 + FMA when the CPU has them: the crate targets baseline
//! x86-64, whose 128-bit SSE would halve their throughput. Each entry point checks the CPU
//! (cached by std) and calls a `#[target_feature]` copy of the generic code, into which the
//! `#[inline(always)]` tile functions are inlined.

use super::transforms;
use crate::Real;

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::transforms;
    use crate::Real;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input_block<T: Real>(
        src: &[T],
        first: usize,
        pitch: usize,
        tiles: [usize; 2],
        c: usize,
        v: &mut [T],
    ) {
        transforms::input_block(src, first, pitch, tiles, c, v)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn output_block<T: Real>(
        m: &[T],
        tiles: [usize; 2],
        c: usize,
        bias: Option<&[T]>,
        y: &mut [T],
        extent: [usize; 2],
    ) {
        transforms::output_block(m, tiles, c, bias, y, extent)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transform_weight_row<T: Real>(taps: &[&[T]; 9], u_rows: &mut [&mut [T]; 16]) {
        transforms::transform_weight_row(taps, u_rows)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grad_row<T: Real>(du_rows: &[&[T]; 16], dw_rows: &mut [&mut [T]; 9]) {
        transforms::weight_grad_row(du_rows, dw_rows)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn grad_output_block<T: Real>(
        dy: &[T],
        extent: [usize; 2],
        tiles: [usize; 2],
        c: usize,
        z: &mut [T],
    ) {
        transforms::grad_output_block(dy, extent, tiles, c, z)
    }
}

/// See [`transforms::input_block`].
pub(super) fn input_block<T: Real>(
    src: &[T],
    first: usize,
    pitch: usize,
    tiles: [usize; 2],
    c: usize,
    v: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::input_block(src, first, pitch, tiles, c, v) };
    }
    transforms::input_block(src, first, pitch, tiles, c, v)
}

/// See [`transforms::output_block`].
pub(super) fn output_block<T: Real>(
    m: &[T],
    tiles: [usize; 2],
    c: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    extent: [usize; 2],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::output_block(m, tiles, c, bias, y, extent) };
    }
    transforms::output_block(m, tiles, c, bias, y, extent)
}

/// See [`transforms::grad_output_block`].
pub(super) fn grad_output_block<T: Real>(
    dy: &[T],
    extent: [usize; 2],
    tiles: [usize; 2],
    c: usize,
    z: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::grad_output_block(dy, extent, tiles, c, z) };
    }
    transforms::grad_output_block(dy, extent, tiles, c, z)
}

/// See [`transforms::transform_weight_row`].
pub(super) fn transform_weight_row<T: Real>(taps: &[&[T]; 9], u_rows: &mut [&mut [T]; 16]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::transform_weight_row(taps, u_rows) };
    }
    transforms::transform_weight_row(taps, u_rows)
}

/// See [`transforms::weight_grad_row`].
pub(super) fn weight_grad_row<T: Real>(du_rows: &[&[T]; 16], dw_rows: &mut [&mut [T]; 9]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::weight_grad_row(du_rows, dw_rows) };
    }
    transforms::weight_grad_row(du_rows, dw_rows)
}
