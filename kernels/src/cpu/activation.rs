//! Pointwise activations, forward and backward: SiLU, ReLU, leaky ReLU and exact (erf) GELU.
//!
//! Also home of the scalar building blocks other kernels fuse into their loops: a sigmoid and an
//! exponential that, for single precision, use a branch-free polynomial `exp` the compiler can
//! vectorise (libm's `expf` is a scalar call per element and would dominate fused GroupNorm+SiLU),
//! and W. J. Cody's rational approximations of `erf` / `erfc` (num-traits has neither).

use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Elements per rayon task in pointwise kernels: big enough that scheduling cost vanishes
/// against the work, small enough to balance across threads.
pub(crate) const POINTWISE_CHUNK: usize = 1 << 15;

/// `y[i] = f(x[i])`, in parallel for long slices. Lengths must already be checked.
pub(crate) fn map_unary<T: Real>(x: &[T], y: &mut [T], f: impl Fn(T) -> T + Sync) {
    #[inline(always)]
    fn run<T: Real>(x: &[T], y: &mut [T], f: &impl Fn(T) -> T) {
        y.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    }
    if x.len() <= POINTWISE_CHUNK {
        simd(
            #[inline(always)]
            || run(x, y, &f),
        );
    } else {
        y.par_chunks_mut(POINTWISE_CHUNK)
            .zip(x.par_chunks(POINTWISE_CHUNK))
            .for_each(|(ys, xs)| {
                simd(
                    #[inline(always)]
                    || run(xs, ys, &f),
                )
            });
    }
}

/// `out[i] = f(a[i], b[i])`, in parallel for long slices. Lengths must already be checked.
pub(crate) fn map_binary<T: Real>(a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T + Sync) {
    #[inline(always)]
    fn run<T: Real>(a: &[T], b: &[T], out: &mut [T], f: &impl Fn(T, T) -> T) {
        out.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&u, &v))| *o = f(u, v));
    }
    if a.len() <= POINTWISE_CHUNK {
        simd(
            #[inline(always)]
            || run(a, b, out, &f),
        );
    } else {
        out.par_chunks_mut(POINTWISE_CHUNK)
            .zip(
                a.par_chunks(POINTWISE_CHUNK)
                    .zip(b.par_chunks(POINTWISE_CHUNK)),
            )
            .for_each(|(os, (us, vs))| {
                simd(
                    #[inline(always)]
                    || run(us, vs, os, &f),
                )
            });
    }
}

/// Whether [`simd`] takes the AVX2 + FMA path: the CPU has both, and the environment variable
/// `MEDVAE_CPU_BASELINE` is not set (it forces the baseline path everywhere, so that path can
/// be tested, and results compared, on an AVX2 machine). Decided once per process.
#[cfg(target_arch = "x86_64")]
fn avx2_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var_os("MEDVAE_CPU_BASELINE").is_none()
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

/// Run `f` compiled for AVX2 + FMA when the CPU has them, for the baseline target otherwise.
///
/// The default x86-64 target only allows SSE2 (4 f32 lanes); most machines this runs on have
/// AVX2 (8 lanes). `f` and everything it calls must be `#[inline(always)]` to be compiled
/// inside the AVX2 function (pass an `#[inline(always)]` closure); a rayon task boundary is
/// not inlined, so call this inside each task, around its serial inner loop. Both paths give
/// the same results: Rust never contracts `a * b + c` into an FMA on its own.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if avx2_enabled() {
            // SAFETY: the CPU supports the features `avx2` is compiled for (checked by
            // `avx2_enabled`).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Whether `T` is single precision. A compile-time constant after monomorphisation, so the
/// branches it selects cost nothing. Only the value conversions `T::f64` / `T::c` cross the
/// boundary, which are exact for f32 and folded away by the compiler.
#[inline(always)]
pub(crate) fn single_precision<T: Real>() -> bool {
    std::mem::size_of::<T>() == 4
}

/// `exp(x)` for f32 by range reduction and a degree-6 polynomial (the Cephes `expf` scheme),
/// written branch-free so loops over it vectorise. Relative error about 2 ulp on
/// `[-87, 88]`; inputs are clamped to that range, which only matters where the callers
/// (sigmoid, softmax) are saturated anyway: it never returns `inf` or a denormal.
#[inline(always)]
pub(crate) fn exp_f32_clamped(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact (Cody–Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Written with mul_add: inside the AVX2+FMA copies every caller runs in (`simd`, the
    // attention kernels' dispatch) each is one fused instruction, where `a * b + c` would be
    // two (Rust never contracts them). Without FMA hardware they are correct, only slower.
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, ROUNDER);
    let n = t - ROUNDER;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    // 2^n assembled in the exponent field: n is in [-126, 127], so n + 127 is a valid biased
    // exponent. Integer arithmetic wraps on purpose (t's bits minus ROUNDER's bits is n).
    let biased = t
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127);
    e * f32::from_bits(biased << 23)
}

/// `exp(x)`: the vectorisable polynomial for single precision (clamped, see
/// [`exp_f32_clamped`]), the library function otherwise.
#[inline(always)]
pub(crate) fn exp_fast<T: Real>(x: T) -> T {
    if single_precision::<T>() {
        T::c(exp_f32_clamped(x.f64() as f32) as f64)
    } else {
        x.exp()
    }
}

/// Logistic sigmoid `1 / (1 + exp(-x))`.
#[inline(always)]
pub(crate) fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + exp_fast(-x))
}

/// SiLU derivative from the pre-activation: `σ(x)·(1 + x·(1 − σ(x)))`.
#[inline(always)]
pub(crate) fn silu_grad<T: Real>(x: T) -> T {
    let s = sigmoid(x);
    s * x.mul_add(T::one() - s, T::one())
}

// ---------------------------------------------------------------- erf / erfc (Cody 1969)

// W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
// (1969), as in his SPECFUN routine CALERF. A/B: erf on |x| <= 0.46875; C/D: erfc·exp(x²) on
// (0.46875, 4]; P/Q: asymptotic erfc·exp(x²)·x on (4, ∞). The published digits exceed f64.
#[allow(clippy::excessive_precision)]
const ERF_A: [f64; 5] = [
    3.16112374387056560e0,
    1.13864154151050156e2,
    3.77485237685302021e2,
    3.20937758913846947e3,
    1.85777706184603153e-1,
];
#[allow(clippy::excessive_precision)]
const ERF_B: [f64; 4] = [
    2.36012909523441209e1,
    2.44024637934444173e2,
    1.28261652607737228e3,
    2.84423683343917062e3,
];
#[allow(clippy::excessive_precision)]
const ERF_C: [f64; 9] = [
    5.64188496988670089e-1,
    8.88314979438837594e0,
    6.61191906371416295e1,
    2.98635138197400131e2,
    8.81952221241769090e2,
    1.71204761263407058e3,
    2.05107837782607147e3,
    1.23033935479799725e3,
    2.15311535474403846e-8,
];
#[allow(clippy::excessive_precision)]
const ERF_D: [f64; 8] = [
    1.57449261107098347e1,
    1.17693950891312499e2,
    5.37181101862009858e2,
    1.62138957456669019e3,
    3.29079923573345963e3,
    4.36261909014324716e3,
    3.43936767414372164e3,
    1.23033935480374942e3,
];
#[allow(clippy::excessive_precision)]
const ERF_P: [f64; 6] = [
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
];
#[allow(clippy::excessive_precision)]
const ERF_Q: [f64; 5] = [
    2.56852019228982242e0,
    1.87295284992346047e0,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
];
/// 1/√π.
#[allow(clippy::excessive_precision)]
const FRAC_1_SQRT_PI: f64 = 5.6418958354775628695e-1;

/// `erf(x)` for `|x| <= 0.46875`.
fn erf_small(x: f64) -> f64 {
    let ysq = x * x;
    let mut num = ERF_A[4] * ysq;
    let mut den = ysq;
    for i in 0..3 {
        num = (num + ERF_A[i]) * ysq;
        den = (den + ERF_B[i]) * ysq;
    }
    x * (num + ERF_A[3]) / (den + ERF_B[3])
}

/// `erfc(y)` for `y > 0.46875`, with full relative accuracy in the tail.
fn erfc_large(y: f64) -> f64 {
    let r = if y <= 4.0 {
        let mut num = ERF_C[8] * y;
        let mut den = y;
        for i in 0..7 {
            num = (num + ERF_C[i]) * y;
            den = (den + ERF_D[i]) * y;
        }
        (num + ERF_C[7]) / (den + ERF_D[7])
    } else {
        // erfc underflows to zero past ~26.55; the rational below would divide 0 by 0 there.
        if y >= 26.6 {
            return 0.0;
        }
        let z = 1.0 / (y * y);
        let mut num = ERF_P[5] * z;
        let mut den = z;
        for i in 0..4 {
            num = (num + ERF_P[i]) * z;
            den = (den + ERF_Q[i]) * z;
        }
        let r = z * (num + ERF_P[4]) / (den + ERF_Q[4]);
        (FRAC_1_SQRT_PI - r) / y
    };
    // exp(-y²) as exp(-ysq²)·exp(-del) with ysq = y rounded down to 1/16: ysq² is exact, so
    // the rounding error of y² does not get amplified by the exponential.
    let ysq = (16.0 * y).trunc() / 16.0;
    let del = (y - ysq) * (y + ysq);
    (-ysq * ysq).exp() * (-del).exp() * r
}

/// The error function, relative error ~1e-16 (Cody's rational Chebyshev approximations).
pub fn erf(x: f64) -> f64 {
    let y = x.abs();
    if x.is_nan() {
        x
    } else if y <= 0.46875 {
        erf_small(x)
    } else {
        let e = 1.0 - erfc_large(y);
        if x < 0.0 {
            -e
        } else {
            e
        }
    }
}

/// The complementary error function `1 − erf(x)`, accurate relative to its own (tiny) value
/// for large `x`.
pub fn erfc(x: f64) -> f64 {
    let y = x.abs();
    if x.is_nan() {
        x
    } else if y <= 0.46875 {
        1.0 - erf_small(x)
    } else {
        let c = erfc_large(y);
        if x < 0.0 {
            2.0 - c
        } else {
            c
        }
    }
}

/// Standard normal CDF `Φ(x) = erfc(−x/√2)/2`, accurate in the left tail too.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Standard normal density `φ(x)`.
fn normal_pdf(x: f64) -> f64 {
    // 1/√(2π)
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// `Φ(x)` for f32, branch-free so loops over it vectorise: `erfc` from the Chebyshev fit of
/// Numerical Recipes (`erfcc`, fractional error below 1.2e-7 for every argument, so the left
/// tail keeps its relative accuracy), with the polynomial [`exp_f32_clamped`]. Relative error
/// about 2e-7·(1 + x²): the x² is f32 rounding of the argument of exp(−x²/2), i.e. the
/// conditioning of Φ itself for an f32 input.
// The fit's coefficients are kept as published (a digit more than f32 holds).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn normal_cdf_f32(x: f32) -> f32 {
    // Φ(x) = erfc(z)/2 with z = −x/√2.
    let z = -x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let mut p = 0.170_872_77_f32;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_87;
    p = p * t - 1.135_203_98;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_68;
    p = p * t - 1.265_512_23;
    let erfc_abs = t * exp_f32_clamped(p - a * a);
    let erfc = if z >= 0.0 { erfc_abs } else { 2.0 - erfc_abs };
    0.5 * erfc
}

/// `φ(x)` for f32.
#[inline(always)]
fn normal_pdf_f32(x: f32) -> f32 {
    0.398_942_3 * exp_f32_clamped(-0.5 * x * x)
}

// ---------------------------------------------------------------- kernels

fn check_pair(kernel: &'static str, x: usize, y: usize) -> Result<(), KernelError> {
    check_len(kernel, "output", y, x)
}

fn check_triple(kernel: &'static str, x: usize, dy: usize, dx: usize) -> Result<(), KernelError> {
    check_len(kernel, "dy", dy, x)?;
    check_len(kernel, "dx", dx, x)
}

/// SiLU: `y = x·σ(x)`.
pub fn silu_forward<T: Real>(x: &[T], y: &mut [T]) -> Result<(), KernelError> {
    check_pair("silu_forward", x.len(), y.len())?;
    map_unary(x, y, |v| v * sigmoid(v));
    Ok(())
}

/// SiLU backward: `dx = dy·σ(x)·(1 + x·(1 − σ(x)))`.
pub fn silu_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) -> Result<(), KernelError> {
    check_triple("silu_backward", x.len(), dy.len(), dx.len())?;
    map_binary(x, dy, dx, |v, g| g * silu_grad(v));
    Ok(())
}

/// ReLU: `y = max(x, 0)`.
pub fn relu_forward<T: Real>(x: &[T], y: &mut [T]) -> Result<(), KernelError> {
    check_pair("relu_forward", x.len(), y.len())?;
    map_unary(x, y, |v| if v > T::zero() { v } else { T::zero() });
    Ok(())
}

/// ReLU backward: `dx = dy` where `x > 0`, else 0 (PyTorch's choice at 0).
pub fn relu_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) -> Result<(), KernelError> {
    check_triple("relu_backward", x.len(), dy.len(), dx.len())?;
    map_binary(x, dy, dx, |v, g| if v > T::zero() { g } else { T::zero() });
    Ok(())
}

/// ReLU in place (a convolution's output buffer becomes the ReLU's; NaN becomes 0, as in
/// [`relu_forward`]).
pub fn relu_inplace<T: Real>(y: &mut [T]) {
    y.par_chunks_mut(POINTWISE_CHUNK).for_each(|c| {
        c.iter_mut()
            .for_each(|v| *v = if *v > T::zero() { *v } else { T::zero() })
    });
}

/// ReLU backward from the ReLU's *output*, in place: `g = g·[y > 0]` (`y > 0 ⇔ x > 0`, so a
/// frozen network need not keep the pre-activations). A NaN in `g` where the mask is 0 becomes
/// 0, as in PyTorch's `threshold_backward`.
pub fn relu_mask_inplace<T: Real>(y: &[T], g: &mut [T]) -> Result<(), KernelError> {
    check_len("relu_mask_inplace", "g", g.len(), y.len())?;
    g.par_chunks_mut(POINTWISE_CHUNK)
        .zip(y.par_chunks(POINTWISE_CHUNK))
        .for_each(|(g, y)| {
            for (g, &y) in g.iter_mut().zip(y) {
                if y <= T::zero() || y.is_nan() {
                    *g = T::zero();
                }
            }
        });
    Ok(())
}

/// Leaky ReLU: `y = x` for `x > 0`, `slope·x` otherwise.
pub fn leaky_relu_forward<T: Real>(x: &[T], slope: T, y: &mut [T]) -> Result<(), KernelError> {
    check_pair("leaky_relu_forward", x.len(), y.len())?;
    map_unary(x, y, |v| if v > T::zero() { v } else { v * slope });
    Ok(())
}

/// Leaky ReLU backward: `dx = dy` for `x > 0`, `slope·dy` otherwise (PyTorch's choice at 0).
pub fn leaky_relu_backward<T: Real>(
    x: &[T],
    slope: T,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    check_triple("leaky_relu_backward", x.len(), dy.len(), dx.len())?;
    map_binary(x, dy, dx, |v, g| if v > T::zero() { g } else { g * slope });
    Ok(())
}

/// Exact GELU (PyTorch `approximate='none'`): `y = x·Φ(x)`. f64 uses Cody's erfc (~1e-16);
/// f32 a vectorisable erfc fit accurate to ~1e-7 relative, i.e. to f32 rounding.
pub fn gelu_forward<T: Real>(x: &[T], y: &mut [T]) -> Result<(), KernelError> {
    check_pair("gelu_forward", x.len(), y.len())?;
    if single_precision::<T>() {
        map_unary(x, y, |v| {
            let v = v.f64() as f32;
            T::c((v * normal_cdf_f32(v)) as f64)
        });
    } else {
        map_unary(x, y, |v| {
            let v = v.f64();
            T::c(v * normal_cdf(v))
        });
    }
    Ok(())
}

/// Exact GELU backward: `dx = dy·(Φ(x) + x·φ(x))`.
pub fn gelu_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) -> Result<(), KernelError> {
    check_triple("gelu_backward", x.len(), dy.len(), dx.len())?;
    if single_precision::<T>() {
        map_binary(x, dy, dx, |v, g| {
            let (v, g) = (v.f64() as f32, g.f64() as f32);
            T::c((g * (normal_cdf_f32(v) + v * normal_pdf_f32(v))) as f64)
        });
    } else {
        map_binary(x, dy, dx, |v, g| {
            let v = v.f64();
            T::c(g.f64() * (normal_cdf(v) + v * normal_pdf(v)))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_matches_f64_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let got = exp_f32_clamped(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        // a few ulp of f32 (ulp = 1.2e-7 relative at most)
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert!(exp_f32_clamped(1000.0).is_finite());
        assert!(exp_f32_clamped(-1000.0) > 0.0);
        assert!(exp_f32_clamped(f32::NAN).is_nan());
    }

    #[test]
    fn normal_cdf_f32_matches_cody() {
        // Relative accuracy everywhere, the left tail included, up to the conditioning of Φ
        // there: rounding −x/√2 and z² to f32 moves Φ by about x²·ulp relative.
        let mut worst = 0.0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let want = normal_cdf(x as f64);
            let got = normal_cdf_f32(x) as f64;
            let allowed = 1.0 + (x as f64).powi(2);
            worst = worst.max(((got - want) / want).abs() / allowed);
            let pdf = (normal_pdf_f32(x) as f64 - normal_pdf(x as f64)) / normal_pdf(x as f64);
            assert!(pdf.abs() < 1e-5, "pdf at {x}: rel err {pdf}");
            x += 0.003_1;
        }
        println!("worst relative error of Φ / (1 + x²): {worst:e}");
        assert!(
            worst < 4e-7,
            "worst relative error of Φ / (1 + x²): {worst:e}"
        );
    }

    #[test]
    fn erf_known_values() {
        // Reference values (Abramowitz & Stegun table / high-precision evaluation).
        let cases = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.3, 0.328_626_759_459_127_4),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
        ];
        for (x, want) in cases {
            let got = erf(x);
            assert!(
                (got - want).abs() <= 2e-16 + 2e-15 * want,
                "erf({x}) = {got}, want {want}"
            );
            assert!((erf(-x) + want).abs() <= 2e-16 + 2e-15 * want);
        }
        // tail of erfc, relative accuracy
        let tails = [
            (1.0, 0.157_299_207_050_285_13),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_034_8e-12),
            (10.0, 2.088_487_583_762_544_6e-45),
        ];
        for (x, want) in tails {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 1e-14,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert_eq!(erfc(30.0), 0.0);
        assert_eq!(erfc(-30.0), 2.0);
        assert!(erf(f64::NAN).is_nan());
    }
}
