//! LPIPS of volumes: the mean of the 2D LPIPS over every slice along depth, height and width
//! (and over the batch), as the reference's 3D loss computes it slice by slice.
//!
//! Instead of one network pass per slice, the slices of each axis are gathered into one batch
//! of 2D images (`[N·D, H, W, C]` along depth, `[N·H, D, W, C]` along height, `[N·W, D, H, C]`
//! along width) and axes whose slices have the same shape share a pass: a cube runs as a single
//! batch of `3·N·S` images. Gradients are gathered back voxel by voxel (each voxel lies in
//! exactly one slice per axis).

use super::lpips::{Lpips, LpipsGrads, LpipsState, Need};
use medvae_runtime::{Result, RuntimeError, Tensor};
use rayon::prelude::*;

/// `[N, D, H, W, C]`.
#[derive(Debug, Clone, Copy)]
struct Vol {
    n: usize,
    dhw: [usize; 3],
    c: usize,
}

impl Vol {
    /// The 2D slice shape `[rows, cols]` of slices across `axis` (0 = depth).
    fn slice_hw(&self, axis: usize) -> [usize; 2] {
        let [d, h, w] = self.dhw;
        match axis {
            0 => [h, w],
            1 => [d, w],
            _ => [d, h],
        }
    }

    /// Slices across `axis` (over the batch).
    fn count(&self, axis: usize) -> usize {
        self.n * self.dhw[axis]
    }

    /// Element offset in the axis-`axis` slice batch of voxel `(n, d, h, w)`.
    #[inline]
    fn slice_offset(&self, axis: usize, n: usize, d: usize, h: usize, w: usize) -> usize {
        let [dd, hh, ww] = self.dhw;
        let pixel = match axis {
            0 => ((n * dd + d) * hh + h) * ww + w,
            1 => ((n * hh + h) * dd + d) * ww + w,
            _ => ((n * ww + w) * dd + d) * hh + h,
        };
        pixel * self.c
    }
}

/// For each `(axis, offset)` in a group's batch, gather the volume's slices into `dst`.
fn gather(v: &Vol, x: &[f32], axes: &[usize], dst: &mut [f32]) {
    let [d, h, w] = v.dhw;
    let c = v.c;
    let mut start = 0;
    for &axis in axes {
        let len = v.count(axis) * d * h * w / v.dhw[axis] * c;
        let out = &mut dst[start..start + len];
        if axis == 0 {
            // Depth slices are the volume's own memory order.
            out.copy_from_slice(x);
        } else {
            // One task per (sample, slice index) image of the destination.
            let [rows, cols] = v.slice_hw(axis);
            out.par_chunks_mut(rows * cols * c)
                .enumerate()
                .for_each(|(img, o)| {
                    let (n, i) = (img / v.dhw[axis], img % v.dhw[axis]);
                    for r in 0..rows {
                        for col in 0..cols {
                            let (dd, hh, ww) = if axis == 1 { (r, i, col) } else { (r, col, i) };
                            let src = (((n * d + dd) * h + hh) * w + ww) * c;
                            let at = (r * cols + col) * c;
                            o[at..at + c].copy_from_slice(&x[src..src + c]);
                        }
                    }
                });
        }
        start += len;
    }
}

/// `dx[voxel] += Σ_axes g_axis[slice pixel of voxel]` for one group's batch gradient.
fn scatter_add(v: &Vol, g: &[f32], axes: &[usize], dx: &mut [f32]) {
    let [d, h, w] = v.dhw;
    let c = v.c;
    let mut starts = Vec::with_capacity(axes.len());
    let mut start = 0;
    for &axis in axes {
        starts.push(start);
        start += v.count(axis) * d * h * w / v.dhw[axis] * c;
    }
    // One task per (n, d) plane of the volume: disjoint writes.
    dx.par_chunks_mut(h * w * c)
        .enumerate()
        .for_each(|(plane, o)| {
            let (n, dd) = (plane / d, plane % d);
            for hh in 0..h {
                for ww in 0..w {
                    let at = (hh * w + ww) * c;
                    for (&axis, &s) in axes.iter().zip(&starts) {
                        let src = s + v.slice_offset(axis, n, dd, hh, ww);
                        for ch in 0..c {
                            o[at + ch] += g[src + ch];
                        }
                    }
                }
            }
        });
}

/// What [`slices_backward`] needs.
#[derive(Debug)]
pub struct SlicesState {
    groups: Vec<(Vec<usize>, LpipsState)>,
    count: usize,
    shape: Vec<usize>,
}

/// The mean LPIPS over all slices of `input` and `target` (`[N, D, H, W, C]`, C = 1 or 3;
/// every slice at least 16×16), and the state for [`slices_backward`] when `need` asks.
pub fn slices_forward(
    lp: &Lpips,
    input: &Tensor,
    target: &Tensor,
    need: Need,
) -> Result<(f32, Option<SlicesState>)> {
    let [n, d, h, w, c] = *input.shape() else {
        return Err(RuntimeError::shape(
            "LPIPS over slices",
            format!("expected a [N, D, H, W, C] volume, got {:?}", input.shape()),
        ));
    };
    target.expect_shape("LPIPS over slices", "target", input.shape())?;
    let v = Vol {
        n,
        dhw: [d, h, w],
        c,
    };
    // Axes grouped by slice shape, first appearance order.
    let mut groups: Vec<([usize; 2], Vec<usize>)> = Vec::new();
    for axis in 0..3 {
        let hw = v.slice_hw(axis);
        match groups.iter_mut().find(|(s, _)| *s == hw) {
            Some((_, axes)) => axes.push(axis),
            None => groups.push((hw, vec![axis])),
        }
    }
    let (xs, ts) = (
        input.f32s("LPIPS over slices")?,
        target.f32s("LPIPS over slices")?,
    );
    let mut total = 0.0f64;
    let mut count = 0;
    let mut states = Vec::new();
    for ([rows, cols], axes) in groups {
        let images: usize = axes.iter().map(|&a| v.count(a)).sum();
        let shape = [images, rows, cols, c];
        let (mut a, mut b) = (Tensor::uninit(&shape), Tensor::uninit(&shape));
        gather(&v, xs, &axes, a.f32s_mut("LPIPS over slices")?);
        gather(&v, ts, &axes, b.f32s_mut("LPIPS over slices")?);
        let (p, state) = lp.distance(&a, &b, need)?;
        total += p
            .f32s("LPIPS over slices")?
            .iter()
            .map(|&x| x as f64)
            .sum::<f64>();
        count += images;
        if let Some(s) = state {
            states.push((axes, s));
        }
    }
    let mean = (total / count.max(1) as f64) as f32;
    let state = (need.input || need.target).then(|| SlicesState {
        groups: states,
        count,
        shape: input.shape().to_vec(),
    });
    Ok((mean, state))
}

/// Gradients of `dloss · mean` with respect to the volumes asked for in the forward.
pub fn slices_backward(lp: &Lpips, state: SlicesState, dloss: f32) -> Result<LpipsGrads> {
    let [n, d, h, w, c] = state.shape[..] else {
        return Err(RuntimeError::Other(
            "LPIPS over slices: bad saved shape".into(),
        ));
    };
    let v = Vol {
        n,
        dhw: [d, h, w],
        c,
    };
    let per_image = dloss / state.count as f32;
    let mut out = LpipsGrads::default();
    for (axes, s) in state.groups {
        let images: usize = axes.iter().map(|&a| v.count(a)).sum();
        let g = lp.distance_backward(s, &vec![per_image; images])?;
        for (src, dst) in [(g.input, &mut out.input), (g.target, &mut out.target)] {
            if let Some(src) = src {
                let acc = dst.get_or_insert_with(|| Tensor::zeros(&state.shape));
                scatter_add(
                    &v,
                    src.f32s("LPIPS over slices")?,
                    &axes,
                    acc.f32s_mut("LPIPS over slices")?,
                );
            }
        }
    }
    Ok(out)
}

/// The volume `[N, S, S, S, C]` of a cube as one batch of 2D images `[3·N·S, S, S, C]`: its
/// depth, height and width slices, in that order (the input of the 3D PatchGAN, the 2D
/// network over the slices of all three axes).
pub fn cube_slices(x: &Tensor) -> Result<Tensor> {
    let v = cube(x.shape())?;
    let s = v.dhw[0];
    let mut out = Tensor::uninit(&[3 * v.n * s, s, s, v.c]);
    gather(
        &v,
        x.f32s("cube slices")?,
        &[0, 1, 2],
        out.f32s_mut("cube slices")?,
    );
    Ok(out)
}

/// The adjoint of [`cube_slices`]: the gradient of the volume of shape `shape` from the
/// gradient of its slice batch (each voxel sums its three slices' entries).
pub fn cube_slices_backward(shape: &[usize], g: &Tensor) -> Result<Tensor> {
    let v = cube(shape)?;
    let s = v.dhw[0];
    g.expect_shape(
        "cube slices backward",
        "gradient",
        &[3 * v.n * s, s, s, v.c],
    )?;
    let mut dx = Tensor::zeros(shape);
    scatter_add(
        &v,
        g.f32s("cube slices backward")?,
        &[0, 1, 2],
        dx.f32s_mut("cube slices backward")?,
    );
    Ok(dx)
}

fn cube(shape: &[usize]) -> Result<Vol> {
    match *shape {
        [n, d, h, w, c] if d == h && h == w => Ok(Vol {
            n,
            dhw: [d, h, w],
            c,
        }),
        _ => Err(RuntimeError::shape(
            "cube slices",
            format!(
                "the 3D discriminator runs on the slices of cubic crops [N, S, S, S, C]; got {shape:?}"
            ),
        )),
    }
}
