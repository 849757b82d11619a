//! The slice batch of the 3D discriminator: every slice of a cube along each axis, and its
//! adjoint (checked by the identity ⟨S x, g⟩ = ⟨x, Sᵀ g⟩ and against a direct construction).

use medvae_model::losses::lpips3d::{cube_slices, cube_slices_backward};
use medvae_runtime::ops::elementwise::standard_normal;

#[test]
fn slices_are_the_volume_cut_along_each_axis() {
    let (n, s, c) = (2, 3, 2);
    let x = standard_normal(&[n, s, s, s, c], 1).unwrap();
    let xs = x.to_f32_vec();
    let y = cube_slices(&x).unwrap();
    assert_eq!(y.shape(), &[3 * n * s, s, s, c]);
    let ys = y.to_f32_vec();
    let at = |b: usize, d: usize, h: usize, w: usize, ch: usize| {
        xs[(((b * s + d) * s + h) * s + w) * c + ch]
    };
    for axis in 0..3 {
        for b in 0..n {
            for i in 0..s {
                let img = (axis * n + b) * s + i;
                for r in 0..s {
                    for col in 0..s {
                        for ch in 0..c {
                            let want = match axis {
                                0 => at(b, i, r, col, ch),
                                1 => at(b, r, i, col, ch),
                                _ => at(b, r, col, i, ch),
                            };
                            let got = ys[((img * s + r) * s + col) * c + ch];
                            assert_eq!(
                                got, want,
                                "axis {axis} sample {b} slice {i} ({r},{col},{ch})"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn backward_is_the_adjoint() {
    let shape = [1, 4, 4, 4, 1];
    let x = standard_normal(&shape, 2).unwrap();
    let y = cube_slices(&x).unwrap();
    let g = standard_normal(y.shape(), 3).unwrap();
    let dx = cube_slices_backward(&shape, &g).unwrap();
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    let lhs = dot(&y.to_f32_vec(), &g.to_f32_vec());
    let rhs = dot(&x.to_f32_vec(), &dx.to_f32_vec());
    // dx sums three f32 entries per voxel: agreement up to f32 rounding.
    assert!(
        (lhs - rhs).abs() < 1e-6 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
}

#[test]
fn non_cubic_volumes_are_refused() {
    let x = standard_normal(&[1, 4, 4, 6, 1], 4).unwrap();
    let err = cube_slices(&x).unwrap_err().to_string();
    assert!(err.contains("cubic"), "{err}");
}
