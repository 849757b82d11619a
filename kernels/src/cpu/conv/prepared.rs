//! Winograd convolutions (3×3, and `kd×3×3` on volumes) with a weight transformed once, for
//! weights that do not change between calls (a frozen network's, such as LPIPS' VGG16).
//!
//! [`conv_forward_with`](super::conv_forward_with) and the backward-data transform the weight
//! on every call. That is a pass over `9·cin·cout` values (per depth tap) writing `16·cin·cout`,
//! which for the deep, small layers of a perceptual network costs as much as the convolution's
//! GEMMs. A [`WinogradWeight`] holds that transform; the backward-data reads the same planes
//! (see `winograd::Planes::Adjoint`), so one transform serves both directions.

use super::winograd::{self, Planes};
use super::{check_common, ConvGeometry, ConvScratch, KERNEL};
use crate::error::check_len;
use crate::{KernelError, Real, Spatial};

/// Winograd runs the forward of `g` (stride 1, a kernel `3×3` in height and width), so a
/// [`WinogradWeight`] of its kernel and channel counts serves it.
pub fn winograd_runs_forward(g: &ConvGeometry) -> bool {
    winograd::applicable(g)
}

/// Winograd runs the backward-data of `g` (as the forward, with padding below the kernel).
pub fn winograd_runs_backward_data(g: &ConvGeometry) -> bool {
    winograd::applicable_backward_data(g)
}

/// The Winograd F(2×2, 3×3) transform `U = G g Gᵀ` of one weight whose kernel is `kd×3×3`
/// (`[kd, 3, 3, cin, cout]` tap-major; `kd = 1` in 2D), for the forward and the backward-data
/// of every geometry it [serves](WinogradWeight::serves_forward).
#[derive(Debug, Clone)]
pub struct WinogradWeight<T> {
    kernel: Spatial,
    cin: usize,
    cout: usize,
    planes: Vec<T>,
}

impl<T: Real> WinogradWeight<T> {
    /// Transform `w`, the weight of a convolution with kernel `kernel` (`[kd, 3, 3]`) from `cin`
    /// to `cout` channels.
    pub fn new(kernel: Spatial, cin: usize, cout: usize, w: &[T]) -> Result<Self, KernelError> {
        if cin == 0 || cout == 0 || kernel[0] == 0 || kernel[1] != 3 || kernel[2] != 3 {
            return Err(KernelError::Geometry {
                kernel: KERNEL,
                msg: format!(
                    "a Winograd weight needs a kd×3×3 kernel and channels, got kernel \
                     {kernel:?}, {cin} → {cout} channels"
                ),
            });
        }
        check_len(KERNEL, "w", w.len(), 9 * kernel[0] * cin * cout)?;
        let mut planes = vec![T::zero(); 16 * kernel[0] * cin * cout];
        winograd::transform_weights(w, kernel[0], cin, cout, &mut planes);
        Ok(WinogradWeight {
            kernel,
            cin,
            cout,
            planes,
        })
    }
}

impl<T> WinogradWeight<T> {
    pub fn cin(&self) -> usize {
        self.cin
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    pub fn kernel(&self) -> Spatial {
        self.kernel
    }

    /// Bytes held by the transformed planes (16/9 of the weight's).
    pub fn size_bytes(&self) -> usize {
        self.planes.len() * std::mem::size_of::<T>()
    }

    fn shape_matches(&self, g: &ConvGeometry) -> bool {
        g.cin == self.cin && g.cout == self.cout && g.kernel == self.kernel
    }

    /// [`conv_forward_winograd`] can run `g` with this weight.
    pub fn serves_forward(&self, g: &ConvGeometry) -> bool {
        self.shape_matches(g) && winograd_runs_forward(g)
    }

    /// [`conv_backward_data_winograd`] can run `g` with this weight.
    pub fn serves_backward_data(&self, g: &ConvGeometry) -> bool {
        self.shape_matches(g) && winograd_runs_backward_data(g)
    }

    fn refuse(&self, g: &ConvGeometry, direction: &str) -> KernelError {
        KernelError::Geometry {
            kernel: KERNEL,
            msg: format!(
                "a Winograd weight of kernel {:?}, {} → {} channels cannot run the {direction} \
                 of kernel {:?}, {} → {} channels, stride {:?}, padding {:?}/{:?} (it needs the \
                 same kernel and channels, stride 1, padding below the kernel for the \
                 backward-data)",
                self.kernel,
                self.cin,
                self.cout,
                g.kernel,
                g.cin,
                g.cout,
                g.stride,
                g.pad_lo,
                g.pad_hi
            ),
        }
    }
}

/// `y = conv(x, w) + bias` for the weight `w` that `u` was made from (see
/// [`conv_forward_with`](super::conv_forward_with) for the layouts). Errors when `u` does not
/// [serve](WinogradWeight::serves_forward) `g`.
pub fn conv_forward_winograd<T: Real>(
    scratch: &mut ConvScratch<T>,
    g: &ConvGeometry,
    x: &[T],
    u: &WinogradWeight<T>,
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<(), KernelError> {
    check_common::<T>(g)?;
    if !u.serves_forward(g) {
        return Err(u.refuse(g, "forward"));
    }
    check_len(KERNEL, "x", x.len(), g.input_len())?;
    check_len(KERNEL, "y", y.len(), g.output_len())?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", b.len(), g.cout)?;
    }
    scratch.work.threads.prepare();
    let planes = Planes::Direct(&u.planes);
    winograd::forward(g, x, planes, bias, y, &scratch.work.threads);
    Ok(())
}

/// `dx = ∂⟨y, dy⟩/∂x` (overwritten) for the weight that `u` was made from. Errors when `u`
/// does not [serve](WinogradWeight::serves_backward_data) `g`.
pub fn conv_backward_data_winograd<T: Real>(
    scratch: &mut ConvScratch<T>,
    g: &ConvGeometry,
    dy: &[T],
    u: &WinogradWeight<T>,
    dx: &mut [T],
) -> Result<(), KernelError> {
    check_common::<T>(g)?;
    if !u.serves_backward_data(g) {
        return Err(u.refuse(g, "backward-data"));
    }
    check_len(KERNEL, "dy", dy.len(), g.output_len())?;
    check_len(KERNEL, "dx", dx.len(), g.input_len())?;
    scratch.work.threads.prepare();
    let gt = winograd::backward_data_geometry(g);
    let planes = Planes::Adjoint(&u.planes);
    winograd::forward(&gt, dy, planes, None, dx, &scratch.work.threads);
    Ok(())
}
