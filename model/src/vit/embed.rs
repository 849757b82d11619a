//! timm's `PatchEmbed` plus the class token and the learned position embedding.
//!
//! The patch convolution (kernel = stride = patch, no padding) is a linear map of each
//! non-overlapping patch, so it runs as one GEMM on gathered patch rows. The rows are gathered
//! in PyTorch's `(c, ky, kx)` order, so the checkpoint's `(width, C, p, p)` weight is used
//! as-is as a `[width, C·p·p]` matrix. Pixels past the last whole patch (an image side that is
//! not a multiple of the patch) are ignored by the convolution and get zero gradient.
//!
//! Tokens: `t[n, 0] = cls + pos[0]`, `t[n, 1 + i] = patch_i + pos[1 + i]` (patches in row-major
//! grid order, as `flatten(2).transpose(1, 2)` orders them).

use medvae_runtime::{Result, RuntimeError, Tensor};
use rayon::prelude::*;

/// Geometry of the patch grid for a `[N, H, W, C]` channels-last image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGeometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub patch: usize,
}

impl PatchGeometry {
    pub fn grid(&self) -> (usize, usize) {
        (self.h / self.patch, self.w / self.patch)
    }

    pub fn patches(&self) -> usize {
        let (gh, gw) = self.grid();
        gh * gw
    }

    /// Values per patch row (`C·p·p`).
    pub fn row_len(&self) -> usize {
        self.c * self.patch * self.patch
    }
}

/// Patch rows `[N, patches, C·p·p]` in `(c, ky, kx)` order from a channels-last image.
pub fn gather_patches(g: PatchGeometry, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "vit patch_embed";
    x.expect_shape(OP, "image", &[g.n, g.h, g.w, g.c])?;
    let (p, gw) = (g.patch, g.grid().1);
    let src = x.f32s(OP)?;
    let mut rows = Tensor::uninit(&[g.n, g.patches(), g.row_len()]);
    rows.f32s_mut(OP)?
        .par_chunks_mut(g.row_len())
        .enumerate()
        .for_each(|(r, row)| {
            let (s, i) = (r / g.patches(), r % g.patches());
            let (y0, x0) = ((i / gw) * p, (i % gw) * p);
            for ky in 0..p {
                for kx in 0..p {
                    let pix = ((s * g.h + y0 + ky) * g.w + x0 + kx) * g.c;
                    for c in 0..g.c {
                        row[(c * p + ky) * p + kx] = src[pix + c];
                    }
                }
            }
        });
    Ok(rows)
}

/// Backward of [`gather_patches`]: the image gradient (zero where no patch reads).
pub fn scatter_patches(g: PatchGeometry, drows: &Tensor) -> Result<Tensor> {
    const OP: &str = "vit patch_embed backward";
    drows.expect_shape(OP, "d rows", &[g.n, g.patches(), g.row_len()])?;
    let (p, (gh, gw)) = (g.patch, g.grid());
    let src = drows.f32s(OP)?;
    let mut dx = Tensor::zeros(&[g.n, g.h, g.w, g.c]);
    // One task per image row: each image row belongs to at most one patch row of the grid.
    dx.f32s_mut(OP)?
        .par_chunks_mut(g.w * g.c)
        .enumerate()
        .for_each(|(r, line)| {
            let (s, y) = (r / g.h, r % g.h);
            let (gy, ky) = (y / p, y % p);
            if gy >= gh {
                return;
            }
            for gx in 0..gw {
                let row = &src[(s * g.patches() + gy * gw + gx) * g.row_len()..][..g.row_len()];
                for kx in 0..p {
                    let pix = (gx * p + kx) * g.c;
                    for c in 0..g.c {
                        line[pix + c] = row[(c * p + ky) * p + kx];
                    }
                }
            }
        });
    Ok(dx)
}

/// `[N, 1 + P, width]` tokens from the projected patches `[N, P, width]`, the class token
/// `[1, 1, width]` and the position embedding `[1, 1 + P, width]`.
pub fn assemble_tokens(patches: &Tensor, cls: &Tensor, pos: &Tensor) -> Result<Tensor> {
    const OP: &str = "vit tokens";
    let (n, np, width) = match *patches.shape() {
        [n, np, w] => (n, np, w),
        _ => {
            return Err(RuntimeError::shape(
                OP,
                format!("patches {:?}", patches.shape()),
            ))
        }
    };
    cls.expect_shape(OP, "cls_token", &[1, 1, width])?;
    pos.expect_shape(OP, "pos_embed", &[1, 1 + np, width])?;
    let (pe, c, ps) = (patches.f32s(OP)?, cls.f32s(OP)?, pos.f32s(OP)?);
    let t = 1 + np;
    let mut out = Tensor::uninit(&[n, t, width]);
    out.f32s_mut(OP)?
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(r, row)| {
            let (s, i) = (r / t, r % t);
            let src = if i == 0 {
                c
            } else {
                &pe[(s * np + i - 1) * width..][..width]
            };
            let pos = &ps[i * width..][..width];
            for ((o, a), b) in row.iter_mut().zip(src).zip(pos) {
                *o = a + b;
            }
        });
    Ok(out)
}

/// Backward of [`assemble_tokens`]: the patch gradient `[N, P, width]`, and (when asked) the
/// class-token and position-embedding gradients summed over the batch, added into `dcls` /
/// `dpos`.
pub fn split_token_grad(
    dtokens: &Tensor,
    dcls: Option<&mut Tensor>,
    dpos: Option<&mut Tensor>,
) -> Result<Tensor> {
    const OP: &str = "vit tokens backward";
    let (n, t, width) = match *dtokens.shape() {
        [n, t, w] if t >= 1 => (n, t, w),
        _ => {
            return Err(RuntimeError::shape(
                OP,
                format!("d tokens {:?}", dtokens.shape()),
            ))
        }
    };
    let d = dtokens.f32s(OP)?;
    if let Some(dcls) = dcls {
        dcls.expect_shape(OP, "d cls_token", &[1, 1, width])?;
        let acc = dcls.f32s_mut(OP)?;
        for s in 0..n {
            for (a, v) in acc.iter_mut().zip(&d[s * t * width..][..width]) {
                *a += v;
            }
        }
    }
    if let Some(dpos) = dpos {
        dpos.expect_shape(OP, "d pos_embed", &[1, t, width])?;
        let acc = dpos.f32s_mut(OP)?;
        for s in 0..n {
            for (a, v) in acc.iter_mut().zip(&d[s * t * width..][..t * width]) {
                *a += v;
            }
        }
    }
    let np = t - 1;
    let mut dp = Tensor::uninit(&[n, np, width]);
    for (s, chunk) in dp.f32s_mut(OP)?.chunks_mut(np * width).enumerate() {
        chunk.copy_from_slice(&d[(s * t + 1) * width..][..np * width]);
    }
    Ok(dp)
}

/// Row 0 (the class token) of each sample of `[N, T, width]`, as `[N, width]`.
pub fn class_rows(tokens: &Tensor) -> Result<Tensor> {
    const OP: &str = "vit class-token pooling";
    let (n, t, width) = match *tokens.shape() {
        [n, t, w] if t >= 1 => (n, t, w),
        _ => {
            return Err(RuntimeError::shape(
                OP,
                format!("tokens {:?}", tokens.shape()),
            ))
        }
    };
    let src = tokens.f32s(OP)?;
    let mut out = Tensor::uninit(&[n, width]);
    for (s, row) in out.f32s_mut(OP)?.chunks_mut(width).enumerate() {
        row.copy_from_slice(&src[s * t * width..][..width]);
    }
    Ok(out)
}

/// Backward of [`class_rows`]: `[N, T, width]`, zero except row 0 of each sample.
pub fn class_rows_backward(d: &Tensor, t: usize) -> Result<Tensor> {
    const OP: &str = "vit class-token pooling backward";
    let (n, width) = match *d.shape() {
        [n, w] => (n, w),
        _ => return Err(RuntimeError::shape(OP, format!("d pooled {:?}", d.shape()))),
    };
    let src = d.f32s(OP)?;
    let mut out = Tensor::zeros(&[n, t, width]);
    let dst = out.f32s_mut(OP)?;
    for s in 0..n {
        dst[s * t * width..][..width].copy_from_slice(&src[s * width..][..width]);
    }
    Ok(out)
}
