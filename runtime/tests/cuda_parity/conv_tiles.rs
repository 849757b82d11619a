//! Every block tile of the streamed BF16 convolution kernels (the defaults and the tuning
//! candidates of `MEDVAE_CONV_TILE` / `MEDVAE_WGRAD_TILE`; the wgmma kernels, the default on
//! compute capability 9.0, switched off for them), and the wgmma kernels in every mode, against
//! the CPU kernels, on problems
//! large enough that the launcher takes them (it keeps 64x64 for small problems); and the
//! streamed TF32 convolutions and GEMMs (`MEDVAE_CONV_TF32=streamed`, off by default), on every
//! case of `conv.rs` and on linear layers. scripts/gpu-check.sh runs each of these in a process
//! of its own, apart from the kernels in use.

use crate::conv::{cases, compare_linear, conv_case, linear_case, ConvCase};
use crate::support::{assert_close, device, down, rng, up};
use medvae_kernels::cpu::conv::ConvGeometry;
use medvae_runtime::cuda::ops::conv::{conv_backward, conv_forward as gpu_fwd, ConvPrecision};
use medvae_runtime::cuda::ops::conv_bf16::set_streamed;
use medvae_runtime::cuda::ops::conv_plan::{
    set_forward_tile, set_wgrad_tile, streamed_forward_tile, STREAMED_TILES,
};
use medvae_runtime::cuda::ops::conv_tf32::set_streamed_tf32;
use medvae_runtime::cuda::ops::conv_wgmma::{self, WgmmaMode};
use medvae_runtime::cuda::CudaDevice;

/// Pixels x channels give >= 2 blocks of 128x128 per SM on a 132-SM card and more than 64
/// channels on both sides, so the forward and the stride-1 data gradient (a forward convolution
/// with Cin outputs) take the big tiles; 136 and 72 channels leave a partial column tile.
fn shapes() -> [ConvGeometry; 2] {
    [
        ConvGeometry::conv2d(2, [136, 128], 72, 136, 3, 1, 1),
        ConvGeometry::conv3d(1, [20, 40, 44], 80, 96, 3, 1, 1),
    ]
}

/// A short label of a geometry for the report lines.
fn label(g: &ConvGeometry) -> String {
    let [d, h, w] = g.in_spatial;
    format!("{}x{d}x{h}x{w} {}->{}", g.batch, g.cin, g.cout)
}

/// The BF16 forward, then data and weight gradients in one call, on the GPU against the CPU.
fn compare(dev: &CudaDevice, c: &ConvCase, tag: &str) {
    compare_in(dev, c, tag, ConvPrecision::Bf16, 3e-2);
}

/// [`compare`] in precision `prec` with tolerance `tol` (relative L2).
fn compare_in(dev: &CudaDevice, c: &ConvCase, tag: &str, prec: ConvPrecision, tol: f64) {
    let g = &c.g;
    let (gx, gw, gb, gdy) = (up(dev, &c.x), up(dev, &c.w), up(dev, &c.b), up(dev, &c.dy));
    let gy = dev.alloc_f32(g.output_len()).expect("alloc");
    gpu_fwd(dev, g, prec, &gx, &gw, Some(&gb), &gy, 0.0).expect("fwd");
    let y = down(dev, &gy, g.output_len());
    assert_close(&format!("{tag} forward"), &y, &c.y, tol);
    let gdw = up(dev, &c.dw0);
    let gdx = dev.alloc_f32(g.input_len()).expect("alloc");
    conv_backward(
        dev,
        g,
        prec,
        Some(&gx),
        Some(&gw),
        &gdy,
        Some((&gdx, 0.0)),
        Some(&gdw),
        None,
    )
    .expect("backward");
    let dx = down(dev, &gdx, g.input_len());
    assert_close(&format!("{tag} backward data"), &dx, &c.dx, tol);
    let dw = down(dev, &gdw, g.weight_len());
    assert_close(&format!("{tag} backward weight"), &dw, &c.dw, tol);
}

#[test]
fn every_streamed_tile_matches_cpu() {
    let Some(dev) = device() else { return };
    set_streamed(true);
    let default_mode = conv_wgmma::mode();
    conv_wgmma::set_mode(WgmmaMode::Off);
    for (i, g) in shapes().into_iter().enumerate() {
        let c = conv_case(g, &mut rng(41 + i as u64), 0.05);
        for tile in STREAMED_TILES {
            set_forward_tile(Some(tile.name)).expect("tile");
            set_wgrad_tile(Some(tile.name)).expect("tile");
            if dev.sm_count() <= 132 {
                let pixels = g.output_len() / g.cout;
                for n in [g.cout, g.cin] {
                    let chosen = streamed_forward_tile(dev, pixels, n).expect("tile");
                    assert_eq!(chosen, tile, "{g:?}: the override must apply here");
                }
            }
            compare(dev, &c, &format!("{} tile {}", label(&g), tile.name));
        }
        set_forward_tile(None).expect("reset");
        set_wgrad_tile(None).expect("reset");
    }
    conv_wgmma::set_mode(default_mode);
}

#[test]
fn wgmma_kernels_match_cpu() {
    let Some(dev) = device() else { return };
    let arch = dev.arch();
    if (arch.major, arch.minor) != (9, 0) {
        println!("wgmma kernels not checked: they need compute capability 9.0 (this is {arch})");
        return;
    }
    set_streamed(true);
    let default_mode = conv_wgmma::mode();
    for (i, g) in shapes().into_iter().enumerate() {
        let c = conv_case(g, &mut rng(51 + i as u64), 0.05);
        for mode in [
            WgmmaMode::On,
            WgmmaMode::Overlap,
            WgmmaMode::OverlapAll,
            WgmmaMode::TwoBlocks,
        ] {
            conv_wgmma::set_mode(mode);
            compare(dev, &c, &format!("{} wgmma {mode:?}", label(&g)));
        }
    }
    conv_wgmma::set_mode(default_mode);
}

#[test]
fn tf32_streamed_convolutions_match_cpu() {
    let Some(dev) = device() else { return };
    set_streamed_tf32(true);
    let mut r = rng(61);
    for (name, g) in cases()
        .into_iter()
        .chain(shapes().map(|g| ("tile shape", g)))
    {
        // The direct FP32 reference on the CPU is what conv_case computes; only channel counts
        // that are multiples of 4 reach the streamed kernels (the rest stay staged).
        let c = conv_case(g, &mut r, 0.2);
        let tag = format!("{name} {} Tf32 streamed", label(&g));
        compare_in(dev, &c, &tag, ConvPrecision::Tf32, 5e-3);
    }
    set_streamed_tf32(false);
}

#[test]
fn tf32_streamed_linear_matches_cpu() {
    let Some(dev) = device() else { return };
    set_streamed_tf32(true);
    let mut r = rng(62);
    for &(rows, fin, fout) in &[
        (10usize, 48usize, 24usize),
        (2 * 197, 768, 768),
        (4096, 512, 2048),
    ] {
        let c = linear_case(rows, fin, fout, &mut r);
        let tag = format!("linear {rows}x{fin}->{fout} Tf32 streamed");
        compare_linear(dev, &c, ConvPrecision::Tf32, &tag, 5e-3);
    }
    set_streamed_tf32(false);
}
