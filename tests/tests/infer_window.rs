//! Sliding-window inference (`medvae_model::infer::window`): the blending normalises (an
//! identity predictor gives back its input exactly, on sizes that are not multiples of the
//! window, with padding, 2D and 3D), the weights are MONAI's gaussian, downsampling predictors
//! land where MONAI puts them, and the geometry helpers equal MONAI's / the reference's
//! (values below were printed by monai 1.6.1 and medvae 0.1.7, see each test).

use medvae_model::infer::{
    importance_map, resize_nearest_exact, roi_size_calc, scan_interval, window_starts, Blend,
    InferError, SlidingWindow,
};
use medvae_runtime::Tensor;

/// A deterministic, non-smooth test signal.
fn signal(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 3.0)
        .collect();
    Tensor::from_vec(shape, data).unwrap()
}

fn identity(t: &Tensor) -> Result<Vec<Tensor>, InferError> {
    Ok(vec![t.clone()])
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn identity_predictor_gives_back_the_input_3d() {
    // 21 and 13 are not multiples of the windows; 2 channels; several overlapping windows.
    let x = signal(&[1, 21, 13, 10, 2]);
    for blend in [Blend::Gaussian, Blend::Constant] {
        let mut sw = SlidingWindow::gaussian(vec![8, 6, 10]);
        sw.blend = blend;
        let mut calls = 0;
        let out = sw
            .run(&x, |t| {
                calls += 1;
                identity(t)
            })
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].shape(), x.shape());
        let err = max_abs_diff(&out[0].to_f32_vec(), &x.to_f32_vec());
        assert!(err < 1e-6, "{blend:?}: max error {err}");
        // windows per axis: 21/8 at interval 6 -> 0,6,12,13; 13/6 at 4 -> 0,4,7; 10/10 -> 0
        assert_eq!(calls, 4 * 3, "{blend:?}");
    }
}

#[test]
fn identity_predictor_gives_back_the_input_2d_and_padded() {
    // 2D: a 17 x 9 image, windows 8 x 12: the second axis is padded (9 < 12) then cropped back.
    let x = signal(&[1, 17, 9, 3]);
    let sw = SlidingWindow::gaussian(vec![8, 12]);
    let out = sw.run(&x, identity).unwrap();
    assert_eq!(out[0].shape(), x.shape());
    assert!(max_abs_diff(&out[0].to_f32_vec(), &x.to_f32_vec()) < 1e-6);

    // the predictor sees windows of exactly the window size, padded with 0
    let mut seen = Vec::new();
    sw.run(&x, |t| {
        seen.push(t.shape().to_vec());
        identity(t)
    })
    .unwrap();
    assert!(seen.iter().all(|s| s == &[1, 8, 12, 3]), "{seen:?}");

    // 3D with every axis shorter than the window
    let x = signal(&[1, 5, 3, 4, 1]);
    let out = SlidingWindow::gaussian(vec![8, 8, 8])
        .run(&x, identity)
        .unwrap();
    assert_eq!(out[0].shape(), x.shape());
    assert!(max_abs_diff(&out[0].to_f32_vec(), &x.to_f32_vec()) < 1e-6);
}

/// 2x average pooling of a `[1, d, h, w, c]` tensor (even extents).
fn pool2(t: &Tensor) -> Tensor {
    let s = t.shape();
    let (d, h, w, c) = (s[1], s[2], s[3], s[4]);
    let v = t.to_f32_vec();
    let mut out = vec![0.0; d / 2 * (h / 2) * (w / 2) * c];
    for a in 0..d / 2 * 2 {
        for b in 0..h / 2 * 2 {
            for k in 0..w / 2 * 2 {
                for ch in 0..c {
                    let o = (((a / 2) * (h / 2) + b / 2) * (w / 2) + k / 2) * c + ch;
                    out[o] += v[((a * h + b) * w + k) * c + ch] / 8.0;
                }
            }
        }
    }
    Tensor::from_vec(&[1, d / 2, h / 2, w / 2, c], out).unwrap()
}

#[test]
fn a_downsampling_predictor_is_stitched_at_its_own_scale() {
    // Windows 8 at interval 6 over 20 start at 0, 6, 12 (all even), so each window's pooled
    // output is exactly a block of the pooled whole image: the stitched result must equal it.
    let x = signal(&[1, 20, 20, 8, 1]);
    let sw = SlidingWindow::gaussian(vec![8, 8, 8]);
    let out = sw.run(&x, |t| Ok(vec![pool2(t), t.clone()])).unwrap();
    assert_eq!(out.len(), 2);
    let want = pool2(&x);
    assert_eq!(out[0].shape(), want.shape());
    assert!(max_abs_diff(&out[0].to_f32_vec(), &want.to_f32_vec()) < 1e-6);
    // the full-size output of the same predictor is stitched independently
    assert!(max_abs_diff(&out[1].to_f32_vec(), &x.to_f32_vec()) < 1e-6);
}

#[test]
fn overlapping_windows_are_weighted_by_the_gaussian() {
    // 1D in effect: a 12-long axis, window 8 -> starts 0 and 4. Each window predicts its own
    // index everywhere; where both cover a voxel the result is (w0·0 + w1·1) / (w0 + w1), with
    // w the gaussian exp(-x²/2σ²), σ = 0.125·8, at the voxel's offset inside each window.
    let x = Tensor::zeros(&[1, 1, 1, 12, 1]);
    let sw = SlidingWindow::gaussian(vec![1, 1, 8]);
    let mut idx = 0.0f32;
    let out = sw
        .run(&x, |t| {
            let v = Tensor::from_vec(t.shape(), vec![idx; t.numel()]).unwrap();
            idx += 1.0;
            Ok(vec![v])
        })
        .unwrap();
    let got = out[0].to_f32_vec();
    let g = |offset: usize| {
        let x = offset as f64 - 3.5;
        ((-x * x / (2.0 * 1.0 * 1.0)).exp()).max(1e-3)
    };
    let floor = g(0); // the smallest weight (window edge) is above 1e-3 here
    assert!(floor > 1e-3);
    for (p, &v) in got.iter().enumerate() {
        let want = match p {
            0..=3 => 0.0,
            8..=11 => 1.0,
            _ => {
                let (w0, w1) = (g(p), g(p - 4));
                w1 / (w0 + w1)
            }
        };
        assert!((v as f64 - want).abs() < 1e-6, "voxel {p}: {v} vs {want}");
    }
    // constant blending would give 0.5 there: make sure the weights made a difference
    assert!((got[5] - 0.5).abs() > 0.1);
}

#[test]
fn predictor_shape_changes_and_bad_inputs_are_errors() {
    let x = signal(&[1, 12, 12, 12, 1]);
    let sw = SlidingWindow::gaussian(vec![8, 8, 8]);
    let mut n = 0;
    let r = sw.run(&x, |t| {
        n += 1;
        if n == 1 {
            Ok(vec![t.clone()])
        } else {
            Ok(vec![pool2(t)])
        }
    });
    assert!(matches!(r, Err(InferError::Window(_))), "{r:?}");
    assert!(SlidingWindow::gaussian(vec![8, 8])
        .run(&x, identity)
        .is_err());
    let mut bad = SlidingWindow::gaussian(vec![8, 8, 8]);
    bad.overlap = 1.0;
    assert!(bad.run(&x, identity).is_err());
    assert!(SlidingWindow::gaussian(vec![0, 8, 8])
        .run(&x, identity)
        .is_err());
}

#[test]
fn geometry_equals_monai_and_the_reference() {
    // monai.inferers.utils._get_scan_interval + monai.data.utils.dense_patch_slices
    let cases: [(usize, usize, usize, &[usize]); 5] = [
        (20, 8, 6, &[0, 6, 12]),
        (17, 8, 6, &[0, 6, 9]),
        (8, 8, 8, &[0]),
        (161, 80, 60, &[0, 60, 81]),
        (5, 4, 3, &[0, 1]),
    ];
    for (size, roi, interval, starts) in cases {
        assert_eq!(scan_interval(&[size], &[roi], 0.25), vec![interval]);
        assert_eq!(window_starts(size, roi, interval), starts, "{size}/{roi}");
    }
    let many = window_starts(100, 3, 2);
    assert_eq!(many.len(), 50);
    assert_eq!(&many[47..], &[94, 96, 97]);

    // medvae.utils.extras.roi_size_calc(shape, 160)
    assert_eq!(
        roi_size_calc(&[176, 208, 176], 160).unwrap(),
        vec![88, 104, 88]
    );
    assert_eq!(
        roi_size_calc(&[160, 161, 320], 160).unwrap(),
        vec![160, 80, 80]
    );
    assert_eq!(
        roi_size_calc(&[336, 48, 1000], 160).unwrap(),
        vec![84, 48, 125]
    );
    assert!(roi_size_calc(&[10], 0).is_err());

    // monai.data.utils.compute_importance_map((5, 3), "gaussian", 0.125)
    let want: [f32; 15] = [
        0.001,
        0.005976024,
        0.001,
        0.007942275,
        0.2780373,
        0.007942275,
        0.0285655,
        1.0,
        0.0285655,
        0.007942275,
        0.2780373,
        0.007942275,
        0.001,
        0.005976024,
        0.001,
    ];
    let got = importance_map(&[5, 3], Blend::Gaussian, 0.125);
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-6 * w.max(1.0), "{got:?}");
    }
    let got = importance_map(&[4], Blend::Gaussian, 0.125);
    let want = [0.011108996, 0.60653067, 0.60653067, 0.011108996];
    assert!(max_abs_diff(&got, &want) < 1e-7, "{got:?}");
    assert!(importance_map(&[3, 2], Blend::Constant, 0.125)
        .iter()
        .all(|&v| v == 1.0));

    // torch.nn.functional.interpolate(arange(10), size, mode="nearest-exact")
    let ramp: Vec<f32> = (0..10).map(|v| v as f32).collect();
    assert_eq!(
        resize_nearest_exact(&ramp, &[10], &[4]),
        vec![1.0, 3.0, 6.0, 8.0]
    );
    assert_eq!(
        resize_nearest_exact(&ramp, &[10], &[3]),
        vec![1.0, 5.0, 8.0]
    );
}
