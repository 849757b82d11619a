//! The thin convolution kernels (`kernels/cuda/conv_thin.cu`): f32 SIMT kernels for
//! convolutions with at most 4 input or output channels, whose GEMMs have a dimension of 1..4
//! that tensor-core tiles waste. [`super::conv`] sends such convolutions here at TF32 and BF16
//! precision (FP32 keeps the direct reference kernels); the results are f32-exact, so at least
//! as accurate as the tensor-core paths they replace.

use super::conv::ConvGeom;
use super::{grid_1d, i32_of, Args, KernelSwitch};
use crate::cuda::device::cfg;
use crate::cuda::error::CudaResult;
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv (thin)";
/// Channel count at or below which a side is thin.
const THIN: usize = 4;
/// Channel count at or above which the other side of a thin convolution is wide enough for a
/// warp per pixel over its channels (`conv_thin_fwd_wide`, `conv_thin_dgrad_wide`).
const WIDE: usize = 16;
/// Threads per block of the weight-gradient kernels.
const WGRAD_THREADS: usize = 256;

static ENABLED: KernelSwitch = KernelSwitch::new("MEDVAE_CONV_THIN", "off", "on", false);

/// Whether thin convolutions use these kernels. **Off by default**: on an H200 (2026-11-28) the
/// BF16 stage-1 step took 0.160 s without them and 0.169 s with them (their weight gradient
/// alone, `conv_thin_wgrad_t9`, 1.5 ms a launch). `MEDVAE_CONV_THIN=on` in the environment, or
/// [`set_enabled`], turns them on (to compare on a card).
pub fn enabled() -> bool {
    ENABLED.on()
}

/// Use the thin kernels (true) or the tensor-core kernels (false) from now on.
pub fn set_enabled(on: bool) {
    ENABLED.set(on);
}

/// `g` has a thin side, the kernels' int index ranges hold, and the kernels are switched on.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    // The kernels index (pixel, channel group) pairs with int and step a grid-stride loop past
    // the end: half the int range leaves room for the last step.
    let fits = |pixels: usize, channels: usize| {
        pixels
            .checked_mul(channels.div_ceil(4))
            .is_some_and(|v| v <= (i32::MAX / 2) as usize)
    };
    let (out_pixels, in_pixels) = (g.output_len() / g.cout, g.input_len() / g.cin);
    enabled() && g.cin.min(g.cout) <= THIN && fits(out_pixels, g.cout) && fits(in_pixels, g.cin)
}

/// `y = conv(x, w) + bias + beta * y` (buffers checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    bias: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let pixels = g.output_len() / g.cout;
    // A thin output side facing a wide input: a warp per pixel over the input channels.
    let (entry, threads) = if g.cout <= THIN && g.cin >= WIDE {
        ("conv_thin_fwd_wide", pixels * 32)
    } else {
        ("conv_thin_fwd", pixels * g.cout.div_ceil(4))
    };
    Args::new()
        .push(cg)
        .buf(x)
        .buf(w)
        .opt(bias)
        .buf(y)
        .push(beta)
        .launch(dev, entry, grid_1d(dev, threads))
}

/// `dx = conv^T(dy, w) + beta * dx` (buffers checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_data(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    dy: &DeviceBuffer,
    w: &DeviceBuffer,
    dx: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let pixels = g.input_len() / g.cin;
    // A thin input side facing a wide output: a warp per pixel over the output channels.
    let (entry, threads) = if g.cin <= THIN && g.cout >= WIDE {
        ("conv_thin_dgrad_wide", pixels * 32)
    } else {
        ("conv_thin_dgrad", pixels * g.cin.div_ceil(4))
    };
    Args::new()
        .push(cg)
        .buf(dy)
        .buf(w)
        .buf(dx)
        .push(beta)
        .launch(dev, entry, grid_1d(dev, threads))
}

/// The weight-gradient entry point whose tap and pair capacity holds `g`, if one does:
/// `(name, taps, pairs per thread)` as instantiated in conv_thin.cu.
fn wgrad_entry(g: &ConvGeometry) -> Option<&'static str> {
    let taps = g.kernel.iter().product::<usize>();
    let pairs = g.cin * g.cout;
    // The one-pair forms first (8 pixels in flight, fewer registers), then the multi-pair ones.
    [
        ("conv_thin_wgrad_t9_p1", 9, 1),
        ("conv_thin_wgrad_t9", 9, 4),
        ("conv_thin_wgrad_t16_p1", 16, 1),
        ("conv_thin_wgrad_t16", 16, 2),
        ("conv_thin_wgrad_t27_p1", 27, 1),
        ("conv_thin_wgrad_t27", 27, 2),
    ]
    .into_iter()
    .find(|&(_, t, p)| taps <= t && pairs <= p * WGRAD_THREADS)
    .map(|(name, _, _)| name)
}

/// Whether [`backward_weight`] serves `g`.
pub(super) fn serves_weight_gradient(g: &ConvGeometry) -> bool {
    applies(g) && wgrad_entry(g).is_some()
}

/// `dw += x^T dy` (buffers checked by the caller; only where [`serves_weight_gradient`]). The
/// output pixels are cut into runs, one block each, about 8 blocks per SM (several resident:
/// the kernels wait on dy loads, and more blocks keep more in flight).
pub(super) fn backward_weight(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    x: &DeviceBuffer,
    dy: &DeviceBuffer,
    dw: &DeviceBuffer,
) -> CudaResult<()> {
    let Some(entry) = wgrad_entry(g) else {
        return Err(crate::cuda::error::geometry(
            KERNEL,
            "no thin weight-gradient kernel holds this many taps and channel pairs",
        ));
    };
    let pixels = g.output_len() / g.cout;
    let blocks = (8 * dev.sm_count() as usize).clamp(1, pixels.max(1));
    let per_block = pixels.div_ceil(blocks).max(1);
    Args::new()
        .push(cg)
        .buf(x)
        .buf(dy)
        .buf(dw)
        .push(i32_of(KERNEL, "pixels per block", per_block)?)
        .launch(
            dev,
            entry,
            cfg(
                (pixels.div_ceil(per_block) as u32, 1, 1),
                (WGRAD_THREADS as u32, 1, 1),
                0,
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's thin weight gradients take the one-pair forms; more pairs than a block's
    /// threads take the multi-pair ones; more taps than 27 or pairs than they hold, none.
    #[test]
    fn weight_gradient_entries_by_taps_and_pairs() {
        let g2 = |cin, cout, k| ConvGeometry::conv2d(1, [32, 32], cin, cout, k, 1, 1);
        let g3 = |cin, cout| ConvGeometry::conv3d(1, [8, 8, 8], cin, cout, 3, 1, 1);
        assert_eq!(wgrad_entry(&g2(1, 128, 3)), Some("conv_thin_wgrad_t9_p1"));
        assert_eq!(wgrad_entry(&g2(128, 1, 3)), Some("conv_thin_wgrad_t9_p1"));
        assert_eq!(wgrad_entry(&g2(1, 64, 4)), Some("conv_thin_wgrad_t16_p1"));
        assert_eq!(wgrad_entry(&g3(1, 128)), Some("conv_thin_wgrad_t27_p1"));
        assert_eq!(wgrad_entry(&g2(2, 200, 3)), Some("conv_thin_wgrad_t9"));
        assert_eq!(wgrad_entry(&g3(2, 200)), Some("conv_thin_wgrad_t27"));
        assert_eq!(wgrad_entry(&g2(4, 300, 3)), None);
        assert_eq!(wgrad_entry(&g2(1, 8, 7)), None);
    }
}
