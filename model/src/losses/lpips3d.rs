//! LPIPS of volumes: the mean of the 2D LPIPS over every slice along depth, height and width
//! (and over the batch), as the reference's 3D loss computes it slice by slice.
//!
//! Instead of one network pass per slice, the slices of each axis are gathered into one batch
//! of 2D images (`[N·D, H, W, C]` along depth, `[N·H, D, W, C]` along height, `[N·W, D, H, C]`
//! along width) and axes whose slices have the same shape share a pass: a cube runs as a single
//! batch of `3·N·S` images. Gradients are gathered back voxel by voxel (each voxel lies in
//! exactly one slice per axis). The gathers and scatters are the runtime's
//! `ops::slices`, so everything here runs on the volumes' device (CPU or CUDA).

use super::lpips::{Lpips, LpipsGrads, LpipsState, Need};
use medvae_runtime::ops::reduce::sum;
use medvae_runtime::ops::slices::{gather_slices, gather_slices_backward};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// `[N, D, H, W, C]`: what grouping the axes needs (the slicing itself is
/// `medvae_runtime::ops::slices`, on the volume's device).
#[derive(Debug, Clone, Copy)]
struct Vol {
    n: usize,
    dhw: [usize; 3],
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
}

/// What [`slices_backward`] needs.
#[derive(Debug)]
pub struct SlicesState {
    groups: Vec<(Vec<usize>, LpipsState)>,
    count: usize,
    shape: Vec<usize>,
    /// The volumes' device: their gradients are formed there.
    device: Device,
}

/// The mean LPIPS over all slices of `input` and `target` (`[N, D, H, W, C]`, C = 1 or 3;
/// every slice at least 16×16), and the state for [`slices_backward`] when `need` asks.
/// Runs on the volumes' device; only the scalar sum of each group's distances is read back.
pub fn slices_forward(
    lp: &Lpips,
    input: &Tensor,
    target: &Tensor,
    need: Need,
) -> Result<(f32, Option<SlicesState>)> {
    let [n, d, h, w, _] = *input.shape() else {
        return Err(RuntimeError::shape(
            "LPIPS over slices",
            format!("expected a [N, D, H, W, C] volume, got {:?}", input.shape()),
        ));
    };
    target.expect_shape("LPIPS over slices", "target", input.shape())?;
    let v = Vol { n, dhw: [d, h, w] };
    let mut total = 0.0f64;
    let mut count = 0;
    let mut states = Vec::new();
    for axes in groups(&v) {
        let a = gather_slices(input, &axes)?;
        let b = gather_slices(target, &axes)?;
        let (p, state) = lp.distance(&a, &b, need)?;
        drop((a, b));
        total += sum(&p)?;
        count += p.numel();
        if let Some(s) = state {
            states.push((axes, s));
        }
    }
    let mean = (total / count.max(1) as f64) as f32;
    let state = (need.input || need.target).then(|| SlicesState {
        groups: states,
        count,
        shape: input.shape().to_vec(),
        device: input.device(),
    });
    Ok((mean, state))
}

/// The axes grouped by slice shape, in first-appearance order: each group is one batch.
fn groups(v: &Vol) -> Vec<Vec<usize>> {
    let mut groups: Vec<([usize; 2], Vec<usize>)> = Vec::new();
    for axis in 0..3 {
        let hw = v.slice_hw(axis);
        match groups.iter_mut().find(|(s, _)| *s == hw) {
            Some((_, axes)) => axes.push(axis),
            None => groups.push((hw, vec![axis])),
        }
    }
    groups.into_iter().map(|(_, axes)| axes).collect()
}

/// Gradients of `dloss · mean` with respect to the volumes asked for in the forward, on the
/// volumes' device.
pub fn slices_backward(lp: &Lpips, state: SlicesState, dloss: f32) -> Result<LpipsGrads> {
    let [n, d, h, w, _] = state.shape[..] else {
        return Err(RuntimeError::Other(
            "LPIPS over slices: bad saved shape".into(),
        ));
    };
    let v = Vol { n, dhw: [d, h, w] };
    let per_image = dloss / state.count as f32;
    let mut out = LpipsGrads::default();
    for (axes, s) in state.groups {
        let images: usize = axes.iter().map(|&a| v.count(a)).sum();
        let g = lp.distance_backward(s, &vec![per_image; images])?;
        for (src, dst) in [(g.input, &mut out.input), (g.target, &mut out.target)] {
            if let Some(src) = src {
                let acc = match dst {
                    Some(acc) => acc,
                    None => dst.insert(Tensor::zeros_on(&state.shape, state.device)?),
                };
                gather_slices_backward(&src, &axes, acc)?;
            }
        }
    }
    Ok(out)
}

/// The volume `[N, S, S, S, C]` of a cube as one batch of 2D images `[3·N·S, S, S, C]`: its
/// depth, height and width slices, in that order (the input of the 3D PatchGAN, the 2D
/// network over the slices of all three axes). On the volume's device.
pub fn cube_slices(x: &Tensor) -> Result<Tensor> {
    cube(x.shape())?;
    gather_slices(x, &[0, 1, 2])
}

/// The adjoint of [`cube_slices`]: the gradient of the volume of shape `shape` from the
/// gradient of its slice batch (each voxel sums its three slices' entries), on `g`'s device.
pub fn cube_slices_backward(shape: &[usize], g: &Tensor) -> Result<Tensor> {
    let s = cube(shape)?;
    g.expect_shape(
        "cube slices backward",
        "gradient",
        &[3 * shape[0] * s, s, s, shape[4]],
    )?;
    let mut dx = Tensor::zeros_on(shape, g.device())?;
    gather_slices_backward(g, &[0, 1, 2], &mut dx)?;
    Ok(dx)
}

/// The side `S` of a cube `[N, S, S, S, C]`.
fn cube(shape: &[usize]) -> Result<usize> {
    match *shape {
        [_, d, h, w, _] if d == h && h == w => Ok(d),
        _ => Err(RuntimeError::shape(
            "cube slices",
            format!(
                "the 3D discriminator runs on the slices of cubic crops [N, S, S, S, C]; got {shape:?}"
            ),
        )),
    }
}
