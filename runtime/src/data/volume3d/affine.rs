//! Which affine a NIfTI header means, and how to reorient its voxel axes to RAS, exactly as the
//! reference chooses them:
//! * nibabel's `Nifti1Header.get_best_affine()`: the sform when `sform_code != 0`, else the
//!   qform (quaternion, `pixdim`, `qfac`) when `qform_code != 0`, else the Analyze base affine
//!   (`diag(-pixdim[1], pixdim[2], pixdim[3])`: an x-flipped, i.e. LAS, volume);
//! * MONAI's `Orientation("RAS")`: nibabel's `io_orientation(affine)` (the polar decomposition
//!   of the zoom-normalised rotation part, then for each input axis, strongest first, the output
//!   axis with the largest |component|) followed by `ornt_transform` to RAS, which for RAS target
//!   codes is the `io_orientation` result itself.

use nifti::NiftiHeader;

/// A 4×4 voxel-to-world matrix, row-major.
pub type Affine = [[f64; 4]; 4];

/// The identity affine (what the reference writes every output with).
pub const IDENTITY_AFFINE: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Where each input (file) voxel axis goes in RAS array order, and whether it is reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orientation {
    /// `out_axis[a]` is the RAS array axis that file axis `a` becomes.
    pub out_axis: [usize; 3],
    /// `flip[a]`: file axis `a` runs from R→L, A→P or S→I and is reversed.
    pub flip: [bool; 3],
}

impl Orientation {
    /// The identity (file already in RAS order).
    pub const IDENTITY: Orientation = Orientation {
        out_axis: [0, 1, 2],
        flip: [false; 3],
    };
}

/// nibabel's `get_best_affine()` for a header whose fixes (`qfac`, `pixdim`, codes) are applied.
pub fn best_affine(h: &NiftiHeader, dims: [usize; 3]) -> Result<Affine, String> {
    if h.sform_code != 0 {
        let r = |row: [f32; 4]| row.map(|v| v as f64);
        return Ok([r(h.srow_x), r(h.srow_y), r(h.srow_z), [0.0, 0.0, 0.0, 1.0]]);
    }
    if h.qform_code != 0 {
        return qform_affine(h);
    }
    Ok(base_affine(h, dims))
}

/// nibabel's `get_qform()`: rotation from the quaternion (w filled in as in `fillpositive`),
/// times `diag(pixdim[1], pixdim[2], qfac·pixdim[3])`, plus the quaternion offsets.
fn qform_affine(h: &NiftiHeader) -> Result<Affine, String> {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    // fillpositive with nibabel's quaternion_threshold (3 float32 epsilons)
    let w2 = 1.0 - (b * b + c * c + d * d);
    let threshold = 3.0 * f32::EPSILON as f64;
    let w = if w2.abs() < threshold {
        0.0
    } else if w2 < 0.0 {
        return Err(format!(
            "qform quaternion (b, c, d) = ({b}, {c}, {d}) has norm above 1"
        ));
    } else {
        w2.sqrt()
    };
    let rot = quat_to_mat(w, b, c, d);
    let qfac = h.pixdim[0] as f64;
    let vox = [
        h.pixdim[1] as f64,
        h.pixdim[2] as f64,
        h.pixdim[3] as f64 * qfac,
    ];
    let mut out = IDENTITY_AFFINE;
    for (r, row) in rot.iter().enumerate() {
        for (col, v) in vox.iter().enumerate() {
            out[r][col] = row[col] * v;
        }
    }
    out[0][3] = h.quatern_x as f64;
    out[1][3] = h.quatern_y as f64;
    out[2][3] = h.quatern_z as f64;
    Ok(out)
}

/// nibabel's `quat2mat` (unit or not; a near-zero quaternion gives the identity).
fn quat_to_mat(w: f64, x: f64, y: f64, z: f64) -> [[f64; 3]; 3] {
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// The Analyze base affine (`shape_zoom_affine` with the x axis flipped).
fn base_affine(h: &NiftiHeader, dims: [usize; 3]) -> Affine {
    let zooms = [
        -(h.pixdim[1] as f64),
        h.pixdim[2] as f64,
        h.pixdim[3] as f64,
    ];
    let mut out = IDENTITY_AFFINE;
    for a in 0..3 {
        out[a][a] = zooms[a];
        out[a][3] = -((dims[a] as f64 - 1.0) / 2.0) * zooms[a];
    }
    out
}

/// nibabel's `io_orientation(affine)` (5.x, strongest input axis first) composed with
/// `ornt_transform(…, axcodes2ornt("RAS"))`. An axis whose direction is all zeros cannot be
/// oriented (MONAI raises there too), and is an error.
pub fn ras_orientation(affine: &Affine) -> Result<Orientation, String> {
    let mut rs = [[0.0f64; 3]; 3];
    for col in 0..3 {
        let zoom = (0..3)
            .map(|r| affine[r][col] * affine[r][col])
            .sum::<f64>()
            .sqrt();
        let zoom = if zoom == 0.0 { 1.0 } else { zoom };
        for r in 0..3 {
            rs[r][col] = affine[r][col] / zoom;
        }
    }
    if rs.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!("affine {affine:?} has non-finite entries"));
    }
    let mut r = polar_rotation(rs);

    // input axes from strongest to weakest (stable on ties), as nibabel >= 5.3 processes them
    let strength = |col: usize| {
        (0..3)
            .map(|row| r[row][col] * r[row][col])
            .fold(f64::MIN, f64::max)
    };
    let mut in_axes = [0usize, 1, 2];
    let strengths = [strength(0), strength(1), strength(2)];
    in_axes.sort_by(|&a, &b| strengths[b].total_cmp(&strengths[a]));

    let mut out_axis = [usize::MAX; 3];
    let mut flip = [false; 3];
    for &in_ax in &in_axes {
        let col = [r[0][in_ax], r[1][in_ax], r[2][in_ax]];
        if col.iter().all(|v| v.abs() <= 1e-8) {
            return Err(format!(
                "voxel axis {in_ax} has no direction in affine {affine:?}"
            ));
        }
        // np.argmax: the first of equal maxima
        let mut best = 0;
        for k in 1..3 {
            if col[k].abs() > col[best].abs() {
                best = k;
            }
        }
        out_axis[in_ax] = best;
        flip[in_ax] = col[best] < 0.0;
        r[best] = [0.0; 3];
    }
    Ok(Orientation { out_axis, flip })
}

/// The closest shear-free matrix `P·Qᵀ` of `m = P·S·Qᵀ` (polar decomposition by SVD), keeping
/// only singular values above nibabel's rank tolerance `max(S)·3·eps`.
fn polar_rotation(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let (u, s, v) = svd3(m);
    let tol = s.iter().cloned().fold(0.0, f64::max) * 3.0 * f64::EPSILON;
    let mut r = [[0.0; 3]; 3];
    for k in 0..3 {
        if s[k] > tol {
            for (i, row) in r.iter_mut().enumerate() {
                for (j, val) in row.iter_mut().enumerate() {
                    *val += u[i][k] * v[j][k];
                }
            }
        }
    }
    r
}

/// One-sided Jacobi SVD of a 3×3 matrix: `m = U·diag(s)·Vᵀ` (columns of U for zero singular
/// values are left zero; they are never used).
fn svd3(m: [[f64; 3]; 3]) -> ([[f64; 3]; 3], [f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..60 {
        let mut rotated = false;
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            let alpha: f64 = (0..3).map(|i| a[i][p] * a[i][p]).sum();
            let beta: f64 = (0..3).map(|i| a[i][q] * a[i][q]).sum();
            let gamma: f64 = (0..3).map(|i| a[i][p] * a[i][q]).sum();
            if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                continue;
            }
            rotated = true;
            let zeta = (beta - alpha) / (2.0 * gamma);
            let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
            let c = 1.0 / (1.0 + t * t).sqrt();
            let s = c * t;
            for row in a.iter_mut().chain(v.iter_mut()) {
                let (xp, xq) = (row[p], row[q]);
                row[p] = c * xp - s * xq;
                row[q] = s * xp + c * xq;
            }
        }
        if !rotated {
            break;
        }
    }
    let mut s = [0.0; 3];
    let mut u = [[0.0; 3]; 3];
    for k in 0..3 {
        s[k] = (0..3).map(|i| a[i][k] * a[i][k]).sum::<f64>().sqrt();
        if s[k] > 0.0 {
            for i in 0..3 {
                u[i][k] = a[i][k] / s[k];
            }
        }
    }
    (u, s, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(m: [[f64; 3]; 3]) -> Affine {
        let mut a = IDENTITY_AFFINE;
        for i in 0..3 {
            a[i][..3].copy_from_slice(&m[i]);
        }
        a
    }

    #[test]
    fn svd_reconstructs_a_general_matrix() {
        let m = [[2.0, -1.0, 0.3], [0.5, 3.0, 1.0], [-0.7, 0.2, 1.5]];
        let (u, s, v) = svd3(m);
        for i in 0..3 {
            for j in 0..3 {
                let rec: f64 = (0..3).map(|k| u[i][k] * s[k] * v[j][k]).sum();
                assert!(
                    (rec - m[i][j]).abs() < 1e-12,
                    "{i},{j}: {rec} vs {}",
                    m[i][j]
                );
            }
        }
    }

    #[test]
    fn axis_aligned_affines() {
        // LAS: x reversed
        let o =
            ras_orientation(&aff([[-2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])).unwrap();
        assert_eq!(
            o,
            Orientation {
                out_axis: [0, 1, 2],
                flip: [true, false, false]
            }
        );
        // file axes (i, j, k) along (S, L, P)
        let o =
            ras_orientation(&aff([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [3.0, 0.0, 0.0]])).unwrap();
        assert_eq!(
            o,
            Orientation {
                out_axis: [2, 0, 1],
                flip: [false, true, true]
            }
        );
    }

    #[test]
    fn degenerate_axis_is_an_error() {
        assert!(
            ras_orientation(&aff([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])).is_err()
        );
    }
}
