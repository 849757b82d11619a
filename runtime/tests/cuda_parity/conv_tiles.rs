//! Every block tile of the streamed BF16 convolution kernels (the defaults and the tuning
//! candidates of `MEDVAE_CONV_TILE` / `MEDVAE_WGRAD_TILE`) against the CPU kernels, on problems
//! large enough that the launcher takes the override (it keeps 64x64 for small problems).

use crate::support::{assert_close, device, down, randn, rng, up};
use medvae_kernels::cpu::conv::{
    conv_backward_data, conv_backward_weight, conv_forward, ConvGeometry,
};
use medvae_runtime::cuda::ops::conv::{conv_backward, conv_forward as gpu_fwd, ConvPrecision};
use medvae_runtime::cuda::ops::conv_bf16::set_streamed;
use medvae_runtime::cuda::ops::conv_plan::{
    set_forward_tile, set_wgrad_tile, streamed_forward_tile, STREAMED_TILES,
};

#[test]
fn every_streamed_tile_matches_cpu() {
    let Some(dev) = device() else { return };
    let mut r = rng(41);
    // Pixels x channels give >= 2 blocks of 128x128 per SM on a 132-SM card and more than 64
    // channels on both sides, so the forward and the stride-1 data gradient (a forward
    // convolution with Cin outputs) take the override; 136 and 72 channels leave a partial
    // column tile.
    let shapes = [
        ConvGeometry::conv2d(2, [136, 128], 72, 136, 3, 1, 1),
        ConvGeometry::conv3d(1, [20, 40, 44], 80, 96, 3, 1, 1),
    ];
    for g in &shapes {
        let x = randn(&mut r, g.input_len(), 1.0);
        let w = randn(&mut r, g.weight_len(), 0.05);
        let b = randn(&mut r, g.cout, 0.1);
        let dy = randn(&mut r, g.output_len(), 1.0);
        let mut y = vec![0.0f32; g.output_len()];
        conv_forward(g, &x, &w, Some(&b), &mut y).expect("cpu fwd");
        let mut dx = vec![0.0f32; g.input_len()];
        conv_backward_data(g, &dy, &w, &mut dx).expect("cpu dgrad");
        let dw0 = randn(&mut r, g.weight_len(), 0.1);
        let mut dw = dw0.clone();
        conv_backward_weight(g, &x, &dy, &mut dw, None).expect("cpu wgrad");
        let (gx, gw, gb, gdy) = (up(dev, &x), up(dev, &w), up(dev, &b), up(dev, &dy));
        set_streamed(true);
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
            let tag = format!("{g:?} tile {}", tile.name);
            let gy = dev.alloc_f32(g.output_len()).expect("alloc");
            gpu_fwd(dev, g, ConvPrecision::Bf16, &gx, &gw, Some(&gb), &gy, 0.0).expect("fwd");
            assert_close(
                &format!("{tag} forward"),
                &down(dev, &gy, g.output_len()),
                &y,
                3e-2,
            );
            // The data gradient and the weight gradient in one call.
            let gdw = up(dev, &dw0);
            let gdx = dev.alloc_f32(g.input_len()).expect("alloc");
            conv_backward(
                dev,
                g,
                ConvPrecision::Bf16,
                Some(&gx),
                Some(&gw),
                &gdy,
                Some((&gdx, 0.0)),
                Some(&gdw),
                None,
            )
            .expect("backward");
            assert_close(
                &format!("{tag} backward data"),
                &down(dev, &gdx, g.input_len()),
                &dx,
                3e-2,
            );
            assert_close(
                &format!("{tag} backward weight"),
                &down(dev, &gdw, g.weight_len()),
                &dw,
                3e-2,
            );
        }
        set_forward_tile(None).expect("reset");
        set_wgrad_tile(None).expect("reset");
    }
}
