//! Strided views on CUDA tensors against the same calls on CPU tensors: gathers through the
//! permutes, crops, row picks and broadcasts of the ViT and the CLIP transform, scatters and
//! scatter-adds back, the row sums of the token gradients, the clamp of the stage-2 image and
//! the scaling of its latent.
//! Rearrangements are exact: every comparison is bit-for-bit except the sums.

use super::support::{assert_close, device, tensor_pair, GPU};
use medvae_runtime::ops::elementwise::{affine_clamp, scale};
use medvae_runtime::ops::reduce::add_row_sums;
use medvae_runtime::ops::strided::{gather, scatter, view, StridedView};

/// `(name, source shape, view)`: a ViT-B head split of 197 tokens, patch rows of a 224² RGB
/// image, a CLIP crop with grey expansion, class rows, a position-embedding broadcast.
fn cases() -> Vec<(&'static str, Vec<usize>, StridedView)> {
    let v = |o, s: &[usize], t: &[usize]| view("test", o, s, t).expect("view");
    let (t, w) = (197, 768);
    vec![
        (
            "head split k",
            vec![2, t, 3 * w],
            v(w, &[2, 12, t, 64], &[t * 3 * w, 64, 3 * w, 1]),
        ),
        (
            "patch rows",
            vec![2, 224, 224, 3],
            v(
                0,
                &[2, 14, 14, 3, 16, 16],
                &[224 * 672, 16 * 672, 48, 1, 672, 3],
            ),
        ),
        (
            "crop grey x3",
            vec![2, 230, 224, 1],
            v(3 * 224, &[2, 224, 224, 3], &[230 * 224, 224, 1, 0]),
        ),
        ("class rows", vec![4, t, w], v(0, &[4, w], &[t * w, 1])),
        ("broadcast", vec![1, t, w], v(0, &[3, t * w], &[0, 1])),
    ]
}

#[test]
fn strided_gathers_and_scatters_match_cpu() {
    if device().is_none() {
        return;
    }
    for (i, (name, shape, view)) in cases().into_iter().enumerate() {
        let (x, gx) = tensor_pair(&shape, 10 + i as u64, 1.0);
        let y = gather(&x, &view).expect("cpu gather");
        let gy = gather(&gx, &view).expect("gpu gather");
        assert_eq!(gy.device(), GPU);
        assert_eq!(gy.to_f32_vec(), y.to_f32_vec(), "{name}: gather");
        if !view.is_disjoint() {
            let mut d = gx.clone();
            assert!(
                scatter(&mut d, &view, &gy, false).is_err(),
                "{name}: overlapping scatter"
            );
            continue;
        }
        let (src, gsrc) = tensor_pair(&view.shape, 20 + i as u64, 1.0);
        for accumulate in [false, true] {
            let (mut d, mut gd) = (x.clone(), gx.clone());
            scatter(&mut d, &view, &src, accumulate).expect("cpu scatter");
            scatter(&mut gd, &view, &gsrc, accumulate).expect("gpu scatter");
            assert_eq!(
                gd.to_f32_vec(),
                d.to_f32_vec(),
                "{name}: scatter (accumulate {accumulate})"
            );
        }
    }
}

#[test]
fn row_sums_and_affine_clamp_match_cpu() {
    if device().is_none() {
        return;
    }
    let (rows, grows) = tensor_pair(&[8, 197 * 768], 1, 1.0);
    let (mut acc, mut gacc) = tensor_pair(&[1, 197, 768], 2, 1.0);
    add_row_sums(&mut acc, &rows).expect("cpu");
    add_row_sums(&mut gacc, &grows).expect("gpu");
    assert_close("add_row_sums", &gacc.to_f32_vec(), &acc.to_f32_vec(), 1e-6);
    let (x, gx) = tensor_pair(&[2, 64, 48, 1], 3, 1.0);
    let y = affine_clamp(&x, 0.5, 0.5, 0.0, 1.0).expect("cpu");
    let gy = affine_clamp(&gx, 0.5, 0.5, 0.0, 1.0).expect("gpu");
    assert_close("affine_clamp", &gy.to_f32_vec(), &y.to_f32_vec(), 1e-7);
    let (s, gs) = (
        scale(&x, -0.37).expect("cpu"),
        scale(&gx, -0.37).expect("gpu"),
    );
    assert_close("scale", &gs.to_f32_vec(), &s.to_f32_vec(), 1e-7);
}
