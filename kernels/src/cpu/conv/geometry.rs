//! The shape of one convolution: batch, extents, channels, kernel, stride and (asymmetric) zero
//! padding. Every entry point validates it before touching memory.

use crate::{KernelError, Spatial};

/// Kernel name used in every error this module returns.
pub(super) const KERNEL: &str = "conv";

/// Geometry of a 2D or 3D convolution on channels-last data.
///
/// * input `x`: `[batch, d, h, w, cin]`, output `y`: `[batch, do, ho, wo, cout]`,
///   weight `w`: `[kd, kh, kw, cin, cout]` (tap-major);
/// * 2D is `d = 1`, `kernel[0] = 1`, `stride[0] = 1`, no padding on `d`;
/// * padding is zero padding, `pad_lo` before and `pad_hi` after the data in each dimension:
///   PyTorch's `padding = p` is `pad_lo = pad_hi = p`, and `F.pad(x, (0, 1, 0, 1))` before a
///   convolution is `pad_lo = 0, pad_hi = 1` on `h` and `w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_spatial: Spatial,
    pub cin: usize,
    pub cout: usize,
    pub kernel: Spatial,
    pub stride: Spatial,
    pub pad_lo: Spatial,
    pub pad_hi: Spatial,
}

/// Largest element count any operand may have: strides are handed to the GEMM as `isize`
/// byte-free element offsets, so keep well inside `isize`.
const MAX_ELEMENTS: usize = (isize::MAX as usize) / 16;

impl ConvGeometry {
    /// A 2D convolution with a square kernel and symmetric padding (PyTorch's `Conv2d`).
    pub fn conv2d(
        batch: usize,
        hw: [usize; 2],
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        ConvGeometry {
            batch,
            in_spatial: [1, hw[0], hw[1]],
            cin,
            cout,
            kernel: [1, kernel, kernel],
            stride: [1, stride, stride],
            pad_lo: [0, padding, padding],
            pad_hi: [0, padding, padding],
        }
    }

    /// A 3D convolution with a cubic kernel and symmetric padding (PyTorch's `Conv3d`).
    pub fn conv3d(
        batch: usize,
        dhw: Spatial,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        ConvGeometry {
            batch,
            in_spatial: dhw,
            cin,
            cout,
            kernel: [kernel; 3],
            stride: [stride; 3],
            pad_lo: [padding; 3],
            pad_hi: [padding; 3],
        }
    }

    /// Output extents `[do, ho, wo]`; zero in a dimension whose padded input is smaller than the
    /// kernel or whose stride is zero (such a geometry fails [`validate`](Self::validate)).
    pub fn out_spatial(&self) -> Spatial {
        let mut out = [0; 3];
        for (i, o) in out.iter_mut().enumerate() {
            let padded = self.in_spatial[i]
                .saturating_add(self.pad_lo[i])
                .saturating_add(self.pad_hi[i]);
            if self.stride[i] > 0 && self.kernel[i] > 0 && padded >= self.kernel[i] {
                *o = (padded - self.kernel[i]) / self.stride[i] + 1;
            }
        }
        out
    }

    /// Check that every extent is positive, the kernel fits the padded input and no operand
    /// length overflows.
    pub fn validate(&self) -> Result<(), KernelError> {
        let fail = |msg: String| {
            Err(KernelError::Geometry {
                kernel: KERNEL,
                msg,
            })
        };
        if self.batch == 0 || self.cin == 0 || self.cout == 0 {
            return fail(format!(
                "batch ({}), cin ({}) and cout ({}) must be positive",
                self.batch, self.cin, self.cout
            ));
        }
        for i in 0..3 {
            let (n, k, s) = (self.in_spatial[i], self.kernel[i], self.stride[i]);
            if n == 0 || k == 0 || s == 0 {
                return fail(format!(
                    "extent, kernel and stride must be positive in every dimension \
                     (input {:?}, kernel {:?}, stride {:?})",
                    self.in_spatial, self.kernel, self.stride
                ));
            }
            let padded = n
                .checked_add(self.pad_lo[i])
                .and_then(|p| p.checked_add(self.pad_hi[i]));
            match padded {
                Some(p) if p >= k => {}
                _ => {
                    return fail(format!(
                        "kernel {:?} larger than padded input {:?} + {:?} + {:?}",
                        self.kernel, self.in_spatial, self.pad_lo, self.pad_hi
                    ))
                }
            }
        }
        // Every buffer the kernels allocate is at most a small multiple of the padded input,
        // the output or the weight; bound those products so no offset overflows.
        let padded: Vec<usize> = (0..3)
            .map(|i| {
                self.in_spatial[i]
                    .saturating_add(self.pad_lo[i])
                    .saturating_add(self.pad_hi[i])
                    .saturating_add(self.kernel[i])
            })
            .collect();
        let out = self.out_spatial();
        let channels = self.cin.max(self.cout);
        let products = [
            checked_product(&[self.batch, padded[0], padded[1], padded[2], channels]),
            checked_product(&[
                self.batch,
                out[0].saturating_add(1),
                out[1].saturating_add(1),
                out[2].saturating_add(1),
                channels,
            ]),
            checked_product(&[
                self.kernel[0],
                self.kernel[1],
                self.kernel[2],
                self.cin,
                self.cout,
            ]),
        ];
        if !products
            .iter()
            .all(|p| matches!(p, Some(p) if *p <= MAX_ELEMENTS))
        {
            return fail(format!("geometry too large to address: {self:?}"));
        }
        Ok(())
    }

    /// Elements of the input `x`: `batch · d · h · w · cin`.
    pub fn input_len(&self) -> usize {
        saturating_product(&[
            self.batch,
            self.in_spatial[0],
            self.in_spatial[1],
            self.in_spatial[2],
            self.cin,
        ])
    }

    /// Elements of the output `y`: `batch · do · ho · wo · cout`.
    pub fn output_len(&self) -> usize {
        let o = self.out_spatial();
        saturating_product(&[self.batch, o[0], o[1], o[2], self.cout])
    }

    /// Elements of the weight: `kd · kh · kw · cin · cout`.
    pub fn weight_len(&self) -> usize {
        saturating_product(&[
            self.kernel[0],
            self.kernel[1],
            self.kernel[2],
            self.cin,
            self.cout,
        ])
    }
}

fn checked_product(xs: &[usize]) -> Option<usize> {
    xs.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x))
}

fn saturating_product(xs: &[usize]) -> usize {
    xs.iter().fold(1usize, |acc, &x| acc.saturating_mul(x))
}
