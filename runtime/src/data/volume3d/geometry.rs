//! Where the voxels of an inference volume lie in the scanner's space, so that outputs can
//! carry it (`infer --source-affine`). The reference writes every output with an identity
//! affine; a reconstruction is then not aligned with its scan in a viewer.
//!
//! The inference volume is the file reoriented to RAS ([`super::reorient`]) and cropped to the
//! foreground box ([`super::foreground_box`], whose start may be negative where the box was
//! grown past the image). Its voxel `c` is file voxel `i` with, per file axis `a` that became
//! RAS axis `j`: `i[a] = c[j] + start[j]`, or `dims[a] − 1 − (c[j] + start[j])` for a reversed
//! axis. Its affine is the file's affine composed with that index map: [`ras_affine`] for the
//! reorientation, then [`crop_affine`] for the crop.
//!
//! A latent voxel stands for the `f`³ block of image voxels it was encoded from; its position
//! is the block's centre, `f·l + (f − 1)/2` (the convention of average pooling).

use super::affine::{Affine, Orientation, IDENTITY_AFFINE};

/// The affine of the RAS-reoriented volume of a file of extents `dims` with affine
/// `file_affine`, reoriented by `o`.
pub fn ras_affine(file_affine: &Affine, dims: [usize; 3], o: &Orientation) -> Affine {
    // index map M (4x4): file index = M · [c, 1]
    let mut m = [[0.0f64; 4]; 4];
    m[3][3] = 1.0;
    for a in 0..3 {
        let j = o.out_axis[a];
        if o.flip[a] {
            m[a][j] = -1.0;
            m[a][3] = dims[a] as f64 - 1.0;
        } else {
            m[a][j] = 1.0;
        }
    }
    matmul(file_affine, &m)
}

/// The affine of the window starting at voxel `start` of the grid `affine` describes.
pub fn crop_affine(affine: &Affine, start: [isize; 3]) -> Affine {
    let mut t = IDENTITY_AFFINE;
    for (row, &s) in t.iter_mut().zip(&start) {
        row[3] = s as f64;
    }
    matmul(affine, &t)
}

/// The affine of a latent whose voxels each stand for an `f`³ block of the image grid
/// `image_affine` describes.
pub fn latent_affine(image_affine: &Affine, f: usize) -> Affine {
    let f = f as f64;
    matmul(image_affine, &scale_about(f, (f - 1.0) / 2.0))
}

/// The image grid's affine from its latent's ([`latent_affine`] undone).
pub fn image_affine_of_latent(latent: &Affine, f: usize) -> Affine {
    let f = f as f64;
    matmul(latent, &scale_about(1.0 / f, -(f - 1.0) / (2.0 * f)))
}

/// `x ↦ scale·x + shift` on each of the three axes.
fn scale_about(scale: f64, shift: f64) -> Affine {
    let mut s = [[0.0f64; 4]; 4];
    for (a, row) in s.iter_mut().enumerate().take(3) {
        row[a] = scale;
        row[3] = shift;
    }
    s[3][3] = 1.0;
    s
}

fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0f64; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transposed, reversed file: every cropped voxel's world position is its file voxel's.
    #[test]
    fn cropped_voxels_keep_their_world_position() {
        let dims = [4usize, 5, 6];
        // file axes: 0 → RAS 2 reversed, 1 → RAS 0, 2 → RAS 1 reversed
        let o = Orientation {
            out_axis: [2, 0, 1],
            flip: [true, false, true],
        };
        let file_affine: Affine = [
            [0.0, 2.0, 0.0, -10.0],
            [0.0, 0.0, -1.5, 20.0],
            [-3.0, 0.0, 0.0, 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let start = [1isize, -2, 0];
        let a = crop_affine(&ras_affine(&file_affine, dims, &o), start);
        let world = |m: &Affine, p: [f64; 3]| -> [f64; 3] {
            std::array::from_fn(|r| (0..3).map(|k| m[r][k] * p[k]).sum::<f64>() + m[r][3])
        };
        // RAS extents are (dims[1], dims[2], dims[0]) = (5, 6, 4)
        for c in [[0usize, 0, 0], [2, 3, 1], [3, 1, 3]] {
            let ras = [
                c[0] as isize + start[0],
                c[1] as isize + start[1],
                c[2] as isize + start[2],
            ];
            let file = [
                (dims[0] as isize - 1 - ras[2]) as f64,
                ras[0] as f64,
                (dims[2] as isize - 1 - ras[1]) as f64,
            ];
            let got = world(&a, c.map(|v| v as f64));
            let want = world(&file_affine, file);
            for r in 0..3 {
                assert!(
                    (got[r] - want[r]).abs() < 1e-9,
                    "{c:?}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn a_latent_voxel_sits_at_its_blocks_centre() {
        let img: Affine = [
            [2.0, 0.0, 0.0, 1.0],
            [0.0, 1.0, 0.0, 2.0],
            [0.0, 0.0, 0.5, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let lat = latent_affine(&img, 4);
        // latent (0,0,0) = image (1.5, 1.5, 1.5); latent (1,0,0) = image (5.5, 1.5, 1.5)
        assert_eq!([lat[0][3], lat[1][3], lat[2][3]], [4.0, 3.5, 3.75]);
        assert_eq!([lat[0][0], lat[1][1], lat[2][2]], [8.0, 4.0, 2.0]);
        let back = image_affine_of_latent(&lat, 4);
        for r in 0..4 {
            for c in 0..4 {
                assert!((back[r][c] - img[r][c]).abs() < 1e-12, "{back:?}");
            }
        }
    }
}
