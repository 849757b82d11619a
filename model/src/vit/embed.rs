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
//!
//! Every rearrangement here is a strided view (`medvae_runtime::ops::strided`), so the tower
//! runs on whichever device its tensors live on.

use medvae_runtime::ops::reduce::add_row_sums;
use medvae_runtime::ops::strided::{gather, scatter, scatter_into_zeros, view, StridedView};
use medvae_runtime::{Result, RuntimeError, Tensor};

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

/// The patch rows of the image as a view `[N, gh, gw, C, p, p]` of its `[N, H, W, C]`
/// elements (pixels past the last whole patch are not in it).
fn patch_view(g: PatchGeometry) -> Result<StridedView> {
    let (p, (gh, gw)) = (g.patch, g.grid());
    let row = g.w * g.c;
    view(
        "vit patch_embed",
        0,
        &[g.n, gh, gw, g.c, p, p],
        &[g.h * row, p * row, p * g.c, 1, row, g.c],
    )
}

/// Patch rows `[N, patches, C·p·p]` in `(c, ky, kx)` order from a channels-last image.
pub fn gather_patches(g: PatchGeometry, x: &Tensor) -> Result<Tensor> {
    x.expect_shape("vit patch_embed", "image", &[g.n, g.h, g.w, g.c])?;
    gather(x, &patch_view(g)?)?.reshape(&[g.n, g.patches(), g.row_len()])
}

/// Backward of [`gather_patches`]: the image gradient (zero where no patch reads).
pub fn scatter_patches(g: PatchGeometry, drows: &Tensor) -> Result<Tensor> {
    const OP: &str = "vit patch_embed backward";
    drows.expect_shape(OP, "d rows", &[g.n, g.patches(), g.row_len()])?;
    scatter_into_zeros(&[g.n, g.h, g.w, g.c], &patch_view(g)?, drows)
}

/// `(n, t, width)` of a `[N, T, width]` token tensor with at least one token.
fn token_dims(op: &str, what: &str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match *x.shape() {
        [n, t, w] if t >= 1 => Ok((n, t, w)),
        _ => Err(RuntimeError::shape(op, format!("{what} {:?}", x.shape()))),
    }
}

/// Rows `first ..` of `rows` rows (each `width` long) of every sample of `[N, T, width]`
/// tokens, as a `[N, rows·width]` view.
fn token_rows(
    op: &str,
    (n, t, width): (usize, usize, usize),
    first: usize,
    rows: usize,
) -> Result<StridedView> {
    view(op, first * width, &[n, rows * width], &[t * width, 1])
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
    let dims = (n, 1 + np, width);
    // The position embedding broadcast over the batch (stride 0), then the class token and
    // the patches added into their rows.
    let every_sample = |len: usize| view(OP, 0, &[n, len], &[0, 1]);
    let mut out = gather(pos, &every_sample((1 + np) * width)?)?.reshape(&[n, 1 + np, width])?;
    let cls_rows = gather(cls, &every_sample(width)?)?;
    scatter(&mut out, &token_rows(OP, dims, 0, 1)?, &cls_rows, true)?;
    scatter(&mut out, &token_rows(OP, dims, 1, np)?, patches, true)?;
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
    let dims @ (n, t, width) = token_dims(OP, "d tokens", dtokens)?;
    if let Some(dcls) = dcls {
        dcls.expect_shape(OP, "d cls_token", &[1, 1, width])?;
        add_row_sums(dcls, &gather(dtokens, &token_rows(OP, dims, 0, 1)?)?)?;
    }
    if let Some(dpos) = dpos {
        dpos.expect_shape(OP, "d pos_embed", &[1, t, width])?;
        add_row_sums(dpos, dtokens)?;
    }
    gather(dtokens, &token_rows(OP, dims, 1, t - 1)?)?.reshape(&[n, t - 1, width])
}

/// Row 0 (the class token) of each sample of `[N, T, width]`, as `[N, width]`.
pub fn class_rows(tokens: &Tensor) -> Result<Tensor> {
    const OP: &str = "vit class-token pooling";
    let dims = token_dims(OP, "tokens", tokens)?;
    gather(tokens, &token_rows(OP, dims, 0, 1)?)
}

/// Backward of [`class_rows`]: `[N, T, width]`, zero except row 0 of each sample.
pub fn class_rows_backward(d: &Tensor, t: usize) -> Result<Tensor> {
    const OP: &str = "vit class-token pooling backward";
    let (n, width) = match *d.shape() {
        [n, w] if t >= 1 => (n, w),
        _ => return Err(RuntimeError::shape(OP, format!("d pooled {:?}", d.shape()))),
    };
    scatter_into_zeros(&[n, t, width], &token_rows(OP, (n, t, width), 0, 1)?, d)
}
