//! Convolution, 2D and 3D: forward, backward-data and backward-weight(+bias), for any kernel
//! size, stride and asymmetric zero padding, on channels-last data with tap-major weights.
//!
//! Everything is an implicit GEMM on the `gemm` crate (no im2col): the input (or, for
//! backward-data, `dy`) is copied once into a zero-padded, stride-phase-split layout on which
//! every kernel tap row is one large GEMM over a "virtual grid" of output rows. See
//! `implicit_gemm` for the scheme (and the weight gradient, which runs on the forward's
//! layout), `forward` and `backward_data` for how those directions map onto it.
//!
//! Stride-1 convolutions with a 3×3 kernel, 2D or `kd×3×3` on volumes (all three directions),
//! run as Winograd F(2×2, 3×3) instead (`winograd`), unless [`ConvAlgorithm::ImplicitGemm`] is
//! asked for.
//!
//! The `*_with` variants take a [`ConvScratch`] so that repeated calls reuse their packing
//! buffers instead of allocating, and carry the algorithm choice. A weight that does not change
//! between calls can be transformed once ([`WinogradWeight`], `prepared`).

mod backward_data;
mod forward;
mod geometry;
mod implicit_gemm;
mod pack;
mod prepared;
mod raw;
mod winograd;
mod workspace;

pub use geometry::ConvGeometry;
pub use prepared::{
    conv_backward_data_winograd, conv_forward_winograd, winograd_runs_backward_data,
    winograd_runs_forward, WinogradWeight,
};

use crate::error::check_len;
use crate::{KernelError, Real, Spatial};
use geometry::KERNEL;
use pack::{pack, PackSpec};
use winograd::Planes;
use workspace::Workspace;

/// Which algorithm computes the convolution (all three directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd F(2×2, 3×3) where it applies (stride 1, 3×3 in 2D or `kd×3×3`), otherwise the
    /// implicit GEMM.
    #[default]
    Auto,
    /// Always the implicit GEMM.
    ImplicitGemm,
}

/// Reusable buffers of the convolution kernels (packed source, rearranged and transformed
/// weights, per-thread task buffers) and the algorithm choice. Keep one per layer (or per
/// thread of callers) and pass it to the `*_with` functions: steady-state calls then
/// allocate nothing.
#[derive(Debug)]
pub struct ConvScratch<T> {
    algorithm: ConvAlgorithm,
    source: Vec<T>,
    weight: Vec<T>,
    transformed: Vec<T>,
    work: Workspace<T>,
}

impl<T> ConvScratch<T> {
    /// Empty buffers, [`ConvAlgorithm::Auto`].
    pub fn new() -> Self {
        Self::with_algorithm(ConvAlgorithm::Auto)
    }

    pub fn with_algorithm(algorithm: ConvAlgorithm) -> Self {
        ConvScratch {
            algorithm,
            source: Vec::new(),
            weight: Vec::new(),
            transformed: Vec::new(),
            work: Workspace::default(),
        }
    }

    /// The algorithm used by calls with this scratch.
    pub fn algorithm(&self) -> ConvAlgorithm {
        self.algorithm
    }

    pub fn set_algorithm(&mut self, algorithm: ConvAlgorithm) {
        self.algorithm = algorithm;
    }
}

impl<T> Default for ConvScratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn check_common<T: 'static>(g: &ConvGeometry) -> Result<(), KernelError> {
    g.validate()?;
    if !raw::gemm_supports::<T>() {
        return Err(KernelError::Geometry {
            kernel: KERNEL,
            msg: format!(
                "element type {} is not supported (f32 and f64 are)",
                std::any::type_name::<T>()
            ),
        });
    }
    Ok(())
}

/// The packed source for `spec`, or `data` itself when packing would not change it.
fn packed_source<'a, T: Real>(
    data: &'a [T],
    batch: usize,
    input: Spatial,
    channels: usize,
    spec: &PackSpec,
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    if spec.is_identity(input) {
        return data;
    }
    buf.resize(batch * spec.item_pixels() * channels, T::zero());
    pack(data, batch, input, channels, spec, buf);
    buf
}

/// `y = conv(x, w) + bias`. `x`: `[N, D, H, W, Cin]`, `w`: `[kd, kh, kw, Cin, Cout]`,
/// `bias`: `[Cout]`, `y`: `[N, Do, Ho, Wo, Cout]` (overwritten).
pub fn conv_forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<(), KernelError> {
    conv_forward_with(&mut ConvScratch::new(), g, x, w, bias, y)
}

/// [`conv_forward`] reusing `scratch`.
pub fn conv_forward_with<T: Real>(
    scratch: &mut ConvScratch<T>,
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<(), KernelError> {
    check_common::<T>(g)?;
    check_len(KERNEL, "x", x.len(), g.input_len())?;
    check_len(KERNEL, "w", w.len(), g.weight_len())?;
    check_len(KERNEL, "y", y.len(), g.output_len())?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", b.len(), g.cout)?;
    }
    scratch.work.threads.prepare();
    if scratch.algorithm == ConvAlgorithm::Auto && winograd::applicable(g) {
        let u = &mut scratch.transformed;
        u.resize(winograd::transformed_len(g), T::zero());
        winograd::transform_weights(w, g.kernel[0], g.cin, g.cout, u);
        winograd::forward(g, x, Planes::Direct(u), bias, y, &scratch.work.threads);
        return Ok(());
    }
    let (plan, spec) = forward::forward_plan(g);
    let src = packed_source(x, g.batch, g.in_spatial, g.cin, &spec, &mut scratch.source);
    plan.check(src.len(), w.len())?;
    forward::forward_on_source(g, &plan, src, w, bias, y, &scratch.work.threads);
    Ok(())
}

/// `dx = ∂⟨y, dy⟩/∂x` (overwritten). `dy`: `[N, Do, Ho, Wo, Cout]`, `dx`: `[N, D, H, W, Cin]`.
pub fn conv_backward_data<T: Real>(
    g: &ConvGeometry,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    conv_backward_data_with(&mut ConvScratch::new(), g, dy, w, dx)
}

/// [`conv_backward_data`] reusing `scratch`.
pub fn conv_backward_data_with<T: Real>(
    scratch: &mut ConvScratch<T>,
    g: &ConvGeometry,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    check_common::<T>(g)?;
    check_len(KERNEL, "dy", dy.len(), g.output_len())?;
    check_len(KERNEL, "w", w.len(), g.weight_len())?;
    check_len(KERNEL, "dx", dx.len(), g.input_len())?;
    let ConvScratch {
        algorithm,
        source,
        weight,
        transformed,
        work,
    } = scratch;
    work.threads.prepare();
    if *algorithm == ConvAlgorithm::Auto && winograd::applicable_backward_data(g) {
        transformed.resize(winograd::transformed_len(g), T::zero());
        winograd::transform_weights(w, g.kernel[0], g.cin, g.cout, transformed);
        let gt = winograd::backward_data_geometry(g);
        winograd::forward(
            &gt,
            dy,
            Planes::Adjoint(transformed),
            None,
            dx,
            &work.threads,
        );
        return Ok(());
    }
    // The implicit GEMM's plan, only where Winograd does not run.
    let (classes, spec) = backward_data::backward_data_plan(g);
    weight.resize(w.len(), T::zero());
    backward_data::flip_weight(g, &classes, w, weight);
    let src = packed_source(dy, g.batch, g.out_spatial(), g.cout, &spec, source);
    for cl in &classes {
        cl.plan.check(src.len(), weight.len())?;
    }
    backward_data::backward_data_on_source(g, &classes, src, weight, dx, &work.threads);
    Ok(())
}

/// `dw += ∂⟨y, dy⟩/∂w`, and `dbias += Σ dy` over positions when given.
pub fn conv_backward_weight<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    dbias: Option<&mut [T]>,
) -> Result<(), KernelError> {
    conv_backward_weight_with(&mut ConvScratch::new(), g, x, dy, dw, dbias)
}

/// [`conv_backward_weight`] reusing `scratch`.
pub fn conv_backward_weight_with<T: Real>(
    scratch: &mut ConvScratch<T>,
    g: &ConvGeometry,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    dbias: Option<&mut [T]>,
) -> Result<(), KernelError> {
    check_common::<T>(g)?;
    check_len(KERNEL, "x", x.len(), g.input_len())?;
    check_len(KERNEL, "dy", dy.len(), g.output_len())?;
    check_len(KERNEL, "dw", dw.len(), g.weight_len())?;
    if let Some(db) = dbias.as_deref() {
        check_len(KERNEL, "dbias", db.len(), g.cout)?;
    }
    scratch.work.threads.prepare();
    if scratch.algorithm == ConvAlgorithm::Auto && winograd::applicable(g) {
        winograd::backward_weight(g, x, dy, dw, &mut scratch.work);
    } else {
        let (plan, spec) = forward::forward_plan(g);
        let src = packed_source(x, g.batch, g.in_spatial, g.cin, &spec, &mut scratch.source);
        plan.check(src.len(), dw.len())?;
        plan.accumulate_weight_grad(src, dy, dw, &mut scratch.work);
    }
    if let Some(db) = dbias {
        crate::cpu::reduce::add_row_sums(dy, db)?;
    }
    Ok(())
}

/// PyTorch's `(O, I, kd, kh, kw)` weight (2D: `(O, I, kh, kw)`, i.e. `kd = 1`) to the
/// tap-major `[kd, kh, kw, I, O]` layout of these kernels. `w_oidhw` must hold
/// `cout · cin · kd · kh · kw` elements; missing elements are not read (the result is then
/// shorter), so check lengths first.
pub fn weight_from_torch<T: Copy>(
    w_oidhw: &[T],
    cout: usize,
    cin: usize,
    kernel: Spatial,
) -> Vec<T> {
    let taps: usize = kernel.iter().product();
    let mut out = Vec::with_capacity(taps * cin * cout);
    for tap in 0..taps {
        for i in 0..cin {
            for o in 0..cout {
                if let Some(&v) = w_oidhw.get((o * cin + i) * taps + tap) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Inverse of [`weight_from_torch`]: `[kd, kh, kw, I, O]` to `(O, I, kd, kh, kw)`.
pub fn weight_to_torch<T: Copy>(w: &[T], cout: usize, cin: usize, kernel: Spatial) -> Vec<T> {
    let taps: usize = kernel.iter().product();
    let mut out = Vec::with_capacity(taps * cin * cout);
    for o in 0..cout {
        for i in 0..cin {
            for tap in 0..taps {
                if let Some(&v) = w.get((tap * cin + i) * cout + o) {
                    out.push(v);
                }
            }
        }
    }
    out
}
