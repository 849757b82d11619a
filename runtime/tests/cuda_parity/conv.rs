//! Convolution: implicit GEMM (TF32, BF16 staged and streamed) and direct (f32) kernels against
//! the CPU kernels.

use crate::support::{assert_close, device, down, randn, rng, up};
use medvae_kernels::cpu::conv::{
    conv_backward_data, conv_backward_weight, conv_forward, ConvGeometry,
};
use medvae_kernels::cpu::linear::{linear_backward, linear_forward, LinearDims, LinearGrads};
use medvae_runtime::cuda::ops::conv::{
    conv_backward as gpu_backward, conv_backward_data as gpu_dgrad,
    conv_backward_weight as gpu_wgrad, conv_forward as gpu_fwd, ConvPrecision,
};
use medvae_runtime::cuda::ops::conv_bf16::set_streamed;
use medvae_runtime::cuda::ops::conv_thin::set_enabled as set_thin;
use medvae_runtime::cuda::ops::gemm::{
    linear_backward as gpu_lin_bwd, linear_forward as gpu_lin_fwd,
};
use medvae_runtime::cuda::CudaDevice;
use rand_chacha::ChaCha8Rng;

#[allow(clippy::too_many_arguments)] // one geometry field per argument
fn geom(
    batch: usize,
    dhw: [usize; 3],
    cin: usize,
    cout: usize,
    k: [usize; 3],
    s: [usize; 3],
    lo: [usize; 3],
    hi: [usize; 3],
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_spatial: dhw,
        cin,
        cout,
        kernel: k,
        stride: s,
        pad_lo: lo,
        pad_hi: hi,
    }
}

pub(crate) fn cases() -> Vec<(&'static str, ConvGeometry)> {
    let same_3x3 = |n, hw: [usize; 2], cin, cout| {
        geom(
            n,
            [1, hw[0], hw[1]],
            cin,
            cout,
            [1, 3, 3],
            [1, 1, 1],
            [0, 1, 1],
            [0, 1, 1],
        )
    };
    vec![
        // The autoencoder's image convolutions and a latent one, thin on one side.
        ("2d conv_in 1 -> 128", same_3x3(2, [64, 48], 1, 128)),
        ("2d conv_out 128 -> 1", same_3x3(2, [64, 48], 128, 1)),
        ("2d latent 512 -> 2", same_3x3(2, [16, 12], 512, 2)),
        (
            "3d conv_in 1 -> 64",
            geom(
                1,
                [12, 10, 8],
                1,
                64,
                [3, 3, 3],
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
            ),
        ),
        (
            "2d k3 s1 p1",
            geom(
                2,
                [1, 9, 7],
                8,
                12,
                [1, 3, 3],
                [1, 1, 1],
                [0, 1, 1],
                [0, 1, 1],
            ),
        ),
        (
            "2d k3 s2 pad(0,1) odd channels",
            geom(
                1,
                [1, 13, 9],
                3,
                5,
                [1, 3, 3],
                [1, 2, 2],
                [0, 0, 0],
                [0, 1, 1],
            ),
        ),
        (
            "2d k1",
            geom(
                2,
                [1, 5, 6],
                16,
                8,
                [1, 1, 1],
                [1, 1, 1],
                [0, 0, 0],
                [0, 0, 0],
            ),
        ),
        (
            "2d k4 s2 p1",
            geom(
                2,
                [1, 18, 14],
                4,
                8,
                [1, 4, 4],
                [1, 2, 2],
                [0, 1, 1],
                [0, 1, 1],
            ),
        ),
        (
            "2d k4 s1 p1 cout 1",
            geom(
                1,
                [1, 7, 9],
                5,
                1,
                [1, 4, 4],
                [1, 1, 1],
                [0, 1, 1],
                [0, 1, 1],
            ),
        ),
        (
            "3d k3 s1 p1",
            geom(
                2,
                [5, 7, 4],
                4,
                8,
                [3, 3, 3],
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
            ),
        ),
        (
            "3d k3 s2 pad(0,1)",
            geom(
                1,
                [7, 9, 6],
                3,
                4,
                [3, 3, 3],
                [2, 2, 2],
                [0, 0, 0],
                [1, 1, 1],
            ),
        ),
        (
            "2d k3 64->136 several tiles",
            geom(
                2,
                [1, 24, 20],
                64,
                136,
                [1, 3, 3],
                [1, 1, 1],
                [0, 1, 1],
                [0, 1, 1],
            ),
        ),
        (
            "3d k3 s2 pad(0,1) 8->16 (streamed bf16)",
            geom(
                1,
                [9, 7, 10],
                8,
                16,
                [3, 3, 3],
                [2, 2, 2],
                [0, 0, 0],
                [1, 1, 1],
            ),
        ),
        (
            "2d k4 s2 p1 16->24 (streamed bf16)",
            geom(
                2,
                [1, 18, 14],
                16,
                24,
                [1, 4, 4],
                [1, 2, 2],
                [0, 1, 1],
                [0, 1, 1],
            ),
        ),
        (
            "2d k3 s2 pad(0,1) 128->128 192^2 (128x128 tiles, strided data gradient)",
            geom(
                1,
                [1, 192, 192],
                128,
                128,
                [1, 3, 3],
                [1, 2, 2],
                [0, 0, 0],
                [0, 1, 1],
            ),
        ),
        (
            "2d k3 128->128 192^2 (128x128 tiles)",
            geom(
                1,
                [1, 192, 192],
                128,
                128,
                [1, 3, 3],
                [1, 1, 1],
                [0, 1, 1],
                [0, 1, 1],
            ),
        ),
    ]
}

/// A convolution's random inputs and its CPU results (the reference of the parity tests).
pub(crate) struct ConvCase {
    pub g: ConvGeometry,
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub dy: Vec<f32>,
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    /// Parameter gradients accumulate: both sides start from these non-zero values.
    pub dw0: Vec<f32>,
    pub db0: Vec<f32>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// Inputs for `g` from `r` (weights times `w_scale`) and the CPU forward, data gradient and
/// parameter gradients.
pub(crate) fn conv_case(g: ConvGeometry, r: &mut ChaCha8Rng, w_scale: f32) -> ConvCase {
    let x = randn(r, g.input_len(), 1.0);
    let w = randn(r, g.weight_len(), w_scale);
    let b = randn(r, g.cout, 0.1);
    let dy = randn(r, g.output_len(), 1.0);
    let mut y = vec![0.0f32; g.output_len()];
    conv_forward(&g, &x, &w, Some(&b), &mut y).expect("cpu fwd");
    let mut dx = vec![0.0f32; g.input_len()];
    conv_backward_data(&g, &dy, &w, &mut dx).expect("cpu dgrad");
    let dw0 = randn(r, g.weight_len(), 0.1);
    let db0 = randn(r, g.cout, 0.1);
    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    conv_backward_weight(&g, &x, &dy, &mut dw, Some(&mut db)).expect("cpu wgrad");
    ConvCase {
        g,
        x,
        w,
        b,
        dy,
        y,
        dx,
        dw0,
        db0,
        dw,
        db,
    }
}

#[test]
fn conv_matches_cpu_in_every_precision() {
    let Some(dev) = device() else { return };
    let mut r = rng(1);
    for (name, g) in cases() {
        let ConvCase {
            x,
            w,
            b,
            dy,
            y,
            dx,
            dw0,
            db0,
            dw,
            db,
            ..
        } = conv_case(g, &mut r, 0.2);
        let (gx, gw, gb, gdy) = (up(dev, &x), up(dev, &w), up(dev, &b), up(dev, &dy));
        // BF16 twice: the streamed kernels (bf16 operands, where channels are multiples of 8)
        // and the staged ones (f32 operands rounded while staging), which serve the rest. A thin
        // convolution (at most 4 channels on a side) takes the thin f32 kernels at TF32/BF16;
        // with those switched off, the tensor-core kernels are checked on it too.
        let thin_case = g.cin.min(g.cout) <= 4;
        for (prec, streamed, thin, tol) in [
            (ConvPrecision::Fp32, false, true, 1e-4),
            (ConvPrecision::Tf32, false, true, 5e-3),
            (ConvPrecision::Bf16, true, true, 3e-2),
            (ConvPrecision::Bf16, false, true, 3e-2),
            (ConvPrecision::Tf32, false, false, 5e-3),
            (ConvPrecision::Bf16, false, false, 3e-2),
        ] {
            if prec == ConvPrecision::Fp32 && g.output_len() > 1 << 20 {
                continue; // the direct kernels are too slow for the large case
            }
            if !thin && !thin_case {
                continue; // the same kernels as with thin on
            }
            set_streamed(streamed);
            set_thin(thin);
            let prec_name = match (prec, streamed) {
                (ConvPrecision::Bf16, true) => "Bf16 streamed".to_string(),
                (ConvPrecision::Bf16, false) => "Bf16 staged".to_string(),
                _ => format!("{prec:?}"),
            } + if thin_case && prec != ConvPrecision::Fp32 {
                if thin {
                    " (thin kernels)"
                } else {
                    " (thin off)"
                }
            } else {
                ""
            };
            let gy = dev.alloc_f32(g.output_len()).expect("alloc");
            gpu_fwd(dev, &g, prec, &gx, &gw, Some(&gb), &gy, 0.0).expect("gpu fwd");
            assert_close(
                &format!("{name} {prec_name} forward"),
                &down(dev, &gy, g.output_len()),
                &y,
                tol,
            );
            // beta = 1 accumulates onto the previous output: y + y
            gpu_fwd(dev, &g, prec, &gx, &gw, Some(&gb), &gy, 1.0).expect("gpu fwd beta");
            let twice: Vec<f32> = y.iter().map(|v| 2.0 * v).collect();
            assert_close(
                &format!("{name} {prec_name} forward beta=1"),
                &down(dev, &gy, g.output_len()),
                &twice,
                tol,
            );
            let gdx = dev.alloc_f32(g.input_len()).expect("alloc");
            gpu_dgrad(dev, &g, prec, &gdy, &gw, &gdx, 0.0).expect("gpu dgrad");
            assert_close(
                &format!("{name} {prec_name} backward data"),
                &down(dev, &gdx, g.input_len()),
                &dx,
                tol,
            );
            let (gdw, gdb) = (up(dev, &dw0), up(dev, &db0));
            gpu_wgrad(dev, &g, prec, &gx, &gdy, &gdw, Some(&gdb)).expect("gpu wgrad");
            assert_close(
                &format!("{name} {prec_name} backward weight"),
                &down(dev, &gdw, g.weight_len()),
                &dw,
                tol,
            );
            assert_close(
                &format!("{name} {prec_name} backward bias"),
                &down(dev, &gdb, g.cout),
                &db,
                1e-4,
            );
            // All three in one call (the training path: dy rounded once when streamed).
            let (gdw, gdb) = (up(dev, &dw0), up(dev, &db0));
            let gdx = dev.alloc_f32(g.input_len()).expect("alloc");
            gpu_backward(
                dev,
                &g,
                prec,
                Some(&gx),
                Some(&gw),
                &gdy,
                Some((&gdx, 0.0)),
                Some(&gdw),
                Some(&gdb),
            )
            .expect("gpu backward");
            for (what, got, want) in [
                ("data", down(dev, &gdx, g.input_len()), &dx),
                ("weight", down(dev, &gdw, g.weight_len()), &dw),
                ("bias", down(dev, &gdb, g.cout), &db),
            ] {
                let what = format!("{name} {prec_name} backward (one call) {what}");
                assert_close(&what, &got, want, tol);
            }
        }
        set_streamed(true);
        set_thin(true);
    }
}

#[test]
fn conv_rejects_short_buffers() {
    let Some(dev) = device() else { return };
    let g = geom(
        1,
        [1, 8, 8],
        4,
        4,
        [1, 3, 3],
        [1, 1, 1],
        [0, 1, 1],
        [0, 1, 1],
    );
    let x = dev.alloc_f32(g.input_len() - 1).expect("alloc");
    let w = dev.alloc_f32(g.weight_len()).expect("alloc");
    let y = dev.alloc_f32(g.output_len()).expect("alloc");
    assert!(gpu_fwd(dev, &g, ConvPrecision::Tf32, &x, &w, None, &y, 0.0).is_err());
}

/// A linear layer's inputs (x `[rows, in]`, W `[out, in]`, b, dy) with its CPU output and
/// gradients; dW and db accumulate onto 0.5 (both sides start there).
pub(crate) struct LinearCase {
    pub d: LinearDims,
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub dy: Vec<f32>,
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

pub(crate) fn linear_case(rows: usize, fin: usize, fout: usize, r: &mut ChaCha8Rng) -> LinearCase {
    let d = LinearDims {
        rows,
        in_features: fin,
        out_features: fout,
    };
    let x = randn(r, rows * fin, 1.0);
    let w = randn(r, fout * fin, 0.05);
    let b = randn(r, fout, 0.1);
    let dy = randn(r, rows * fout, 1.0);
    let mut y = vec![0.0f32; rows * fout];
    linear_forward(&d, &x, &w, Some(&b), &mut y).expect("cpu");
    let (mut dx, mut dw, mut db) = (
        vec![0.0f32; rows * fin],
        vec![0.5f32; fout * fin],
        vec![0.5f32; fout],
    );
    let grads = LinearGrads {
        dx: Some(&mut dx),
        dweight: Some(&mut dw),
        dbias: Some(&mut db),
    };
    linear_backward(&d, &x, &w, &dy, grads).expect("cpu");
    LinearCase {
        d,
        x,
        w,
        b,
        dy,
        y,
        dx,
        dw,
        db,
    }
}

/// The linear forward and backward of `c` in `prec` on the GPU against the CPU.
pub(crate) fn compare_linear(
    dev: &CudaDevice,
    c: &LinearCase,
    prec: ConvPrecision,
    tag: &str,
    tol: f64,
) {
    let (rows, fin, fout) = (c.d.rows, c.d.in_features, c.d.out_features);
    let (gx, gw, gb, gdy) = (up(dev, &c.x), up(dev, &c.w), up(dev, &c.b), up(dev, &c.dy));
    let gy = dev.alloc_f32(rows * fout).expect("alloc");
    gpu_lin_fwd(dev, prec, &c.d, &gx, &gw, Some(&gb), &gy).expect("gpu");
    assert_close(
        &format!("{tag} forward"),
        &down(dev, &gy, rows * fout),
        &c.y,
        tol,
    );
    let (gdx, gdw, gdb) = (
        dev.alloc_f32(rows * fin).expect("alloc"),
        up(dev, &vec![0.5; fout * fin]),
        up(dev, &vec![0.5; fout]),
    );
    gpu_lin_bwd(
        dev,
        prec,
        &c.d,
        &gx,
        &gw,
        &gdy,
        Some(&gdx),
        Some(&gdw),
        Some(&gdb),
    )
    .expect("gpu");
    assert_close(
        &format!("{tag} dx"),
        &down(dev, &gdx, rows * fin),
        &c.dx,
        tol,
    );
    assert_close(
        &format!("{tag} dweight"),
        &down(dev, &gdw, fout * fin),
        &c.dw,
        tol,
    );
    assert_close(&format!("{tag} dbias"), &down(dev, &gdb, fout), &c.db, 1e-4);
}

#[test]
fn linear_matches_cpu() {
    let Some(dev) = device() else { return };
    let mut r = rng(12);
    for &(rows, fin, fout) in &[
        (10usize, 48usize, 20usize),
        (2 * 197, 768, 768),
        (197, 768, 3072),
        (33, 17, 5),
        (4096, 512, 2048), // enough tiles for the 128x128 kernels
    ] {
        let c = linear_case(rows, fin, fout, &mut r);
        // FP32 (gemm_f32.cu), TF32, BF16 streamed (gemm_bf16.cu, where the extents are
        // multiples of 8) and staged.
        for (prec, streamed, tol) in [
            (ConvPrecision::Fp32, false, 1e-5),
            (ConvPrecision::Tf32, false, 5e-3),
            (ConvPrecision::Bf16, true, 3e-2),
            (ConvPrecision::Bf16, false, 3e-2),
        ] {
            set_streamed(streamed);
            let kind = if streamed { " streamed" } else { "" };
            let tag = format!("linear {rows}x{fin}->{fout} {prec:?}{kind}");
            compare_linear(dev, &c, prec, &tag, tol);
        }
        set_streamed(true);
    }
}
