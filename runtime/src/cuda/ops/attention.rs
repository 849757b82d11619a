//! Flash-style attention on the GPU: softmax(scale * Q K^T) V over token matrices, forward
//! (saving the log-sum-exp) and backward, never materialising the tq x tk scores.
//!
//! Operands are row-major token matrices addressed by an [`AttnOperand`]: element offset of
//! (batch 0, token 0, head 0), row stride and batch stride. Head h uses columns
//! [h*d, (h+1)*d) after the offset, so the MedVAE AttnBlock (one head, [B, HW, C] q/k/v) and a
//! packed ViT qkv buffer ([B, T, 3C], offsets 0, C, 2C) both map onto it.

use super::{check_f32, i32_of, i64_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};

const KERNEL: &str = "cuda attention";

/// `AttnGeom` of `kernels/cuda/medvae_attention.cuh`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnGeom {
    pub batch: i32,
    pub heads: i32,
    pub tq: i32,
    pub tk: i32,
    pub d: i32,
    pub ldq: i32,
    pub ldk: i32,
    pub ldv: i32,
    pub ldo: i32,
    pub scale: f32,
    pub bsq: i64,
    pub bsk: i64,
    pub bsv: i64,
    pub bso: i64,
}
const _: () = assert!(std::mem::size_of::<AttnGeom>() == 72);
// SAFETY: #[repr(C)] with the field order and types of the C struct (i64 at offset 40).
unsafe impl super::KernelArg for AttnGeom {}

/// Problem size: `heads` heads of dim `head_dim` (d % 4 == 0, d <= 512).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDims {
    pub batch: usize,
    pub heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub head_dim: usize,
    /// Usually 1/sqrt(head_dim).
    pub scale: f32,
}

/// One token matrix inside a buffer.
#[derive(Clone, Copy, Debug)]
pub struct AttnOperand<'a> {
    pub buf: &'a DeviceBuffer,
    /// Element offset of (batch 0, token 0, head 0).
    pub offset: usize,
    /// Elements between consecutive tokens.
    pub row_stride: usize,
    /// Elements between consecutive batch items.
    pub batch_stride: usize,
}

impl<'a> AttnOperand<'a> {
    /// A dense `[batch, tokens, heads * head_dim]` tensor.
    pub fn dense(buf: &'a DeviceBuffer, tokens: usize, width: usize) -> Self {
        AttnOperand {
            buf,
            offset: 0,
            row_stride: width,
            batch_stride: tokens * width,
        }
    }
    fn ptr(&self) -> u64 {
        self.buf.ptr() + 4 * self.offset as u64
    }
    fn check(&self, what: &'static str, d: &AttnDims, tokens: usize) -> CudaResult<()> {
        let width = d.heads * d.head_dim;
        if !self.row_stride.is_multiple_of(4)
            || !self.offset.is_multiple_of(4)
            || !self.batch_stride.is_multiple_of(4)
        {
            return Err(geometry(
                KERNEL,
                format!("{what}: offset and strides must be multiples of 4 (16-byte rows)"),
            ));
        }
        if self.row_stride < width {
            return Err(geometry(
                KERNEL,
                format!(
                    "{what}: row stride {} < heads * head_dim {width}",
                    self.row_stride
                ),
            ));
        }
        if d.batch == 0 || tokens == 0 {
            return Ok(());
        }
        let last = self.offset
            + (d.batch - 1) * self.batch_stride
            + (tokens - 1) * self.row_stride
            + width;
        check_f32(KERNEL, what, self.buf, last)
    }
    fn same_layout(&self, other: &AttnOperand, what: &str) -> CudaResult<()> {
        if self.row_stride != other.row_stride || self.batch_stride != other.batch_stride {
            return Err(geometry(
                KERNEL,
                format!("{what} must have the layout of its forward operand"),
            ));
        }
        Ok(())
    }
}

fn geom(
    d: &AttnDims,
    q: &AttnOperand,
    k: &AttnOperand,
    v: &AttnOperand,
    o: &AttnOperand,
) -> CudaResult<(AttnGeom, usize)> {
    if d.head_dim == 0 || !d.head_dim.is_multiple_of(4) || d.head_dim > 512 {
        return Err(geometry(
            KERNEL,
            format!("head dim {} must be a multiple of 4 in 4..=512", d.head_dim),
        ));
    }
    if d.batch * d.heads > 65535 {
        return Err(geometry(KERNEL, "batch * heads > 65535"));
    }
    q.check("q", d, d.tq)?;
    k.check("k", d, d.tk)?;
    v.check("v", d, d.tk)?;
    o.check("o", d, d.tq)?;
    let i = |what: &str, x: usize| i32_of(KERNEL, what, x);
    let g = AttnGeom {
        batch: i("batch", d.batch)?,
        heads: i("heads", d.heads)?,
        tq: i("tq", d.tq)?,
        tk: i("tk", d.tk)?,
        d: i("head_dim", d.head_dim)?,
        ldq: i("q row stride", q.row_stride)?,
        ldk: i("k row stride", k.row_stride)?,
        ldv: i("v row stride", v.row_stride)?,
        ldo: i("o row stride", o.row_stride)?,
        scale: d.scale,
        bsq: i64_of(q.batch_stride),
        bsk: i64_of(k.batch_stride),
        bsv: i64_of(v.batch_stride),
        bso: i64_of(o.batch_stride),
    };
    let dmax = match d.head_dim {
        0..=64 => 64,
        65..=128 => 128,
        129..=256 => 256,
        _ => 512,
    };
    Ok((g, dmax))
}

/// Dynamic shared memory of the forward kernel for head dims up to `dmax`.
pub fn fwd_smem_bytes(dmax: usize) -> u32 {
    ((2 * 32 * (dmax + 4) + 32 * 33) * 4) as u32
}
/// Dynamic shared memory of the two backward kernels.
pub fn bwd_smem_bytes(dmax: usize) -> u32 {
    ((4 * 16 * (dmax + 4) + 2 * 16 * 17 + 2 * 16) * 4) as u32
}

/// `o = softmax(scale q k^T) v`; `lse` (`[batch, heads, tq]`) receives the log-sum-exp of each
/// query's scaled scores, which the backward needs.
pub fn attention_forward(
    dev: &CudaDevice,
    d: &AttnDims,
    q: AttnOperand,
    k: AttnOperand,
    v: AttnOperand,
    o: AttnOperand,
    lse: &DeviceBuffer,
) -> CudaResult<()> {
    let (g, dmax) = geom(d, &q, &k, &v, &o)?;
    check_f32(KERNEL, "lse", lse, d.batch * d.heads * d.tq)?;
    if d.tk == 0 {
        return Err(geometry(KERNEL, "attention over zero keys"));
    }
    let grid = (d.tq.div_ceil(32) as u32, (d.batch * d.heads) as u32, 1);
    Args::new()
        .push(g)
        .push(q.ptr())
        .push(k.ptr())
        .push(v.ptr())
        .push(o.ptr())
        .buf(lse)
        .launch(
            dev,
            &format!("attn_fwd_d{dmax}"),
            cfg(grid, (256, 1, 1), fwd_smem_bytes(dmax)),
        )
}

/// Gradients of `sum <o, dout>`: dq, dk, dv = value + beta * old (beta = 0 overwrites). `o`
/// and `lse` are the forward's outputs; dq/dk/dv have the layouts of q/k/v and `dout` that of
/// `o` (they may share one packed buffer, as the forward operands may).
pub fn attention_backward(
    dev: &CudaDevice,
    d: &AttnDims,
    q: AttnOperand,
    k: AttnOperand,
    v: AttnOperand,
    o: AttnOperand,
    dout: AttnOperand,
    lse: &DeviceBuffer,
    dq: AttnOperand,
    dk: AttnOperand,
    dv: AttnOperand,
    beta: f32,
) -> CudaResult<()> {
    let (g, dmax) = geom(d, &q, &k, &v, &o)?;
    dq.same_layout(&q, "dq")?;
    dk.same_layout(&k, "dk")?;
    dv.same_layout(&v, "dv")?;
    dout.same_layout(&o, "dout")?;
    dq.check("dq", d, d.tq)?;
    dk.check("dk", d, d.tk)?;
    dv.check("dv", d, d.tk)?;
    dout.check("dout", d, d.tq)?;
    let rows = d.batch * d.heads * d.tq;
    check_f32(KERNEL, "lse", lse, rows)?;
    let delta = dev.alloc_f32(rows)?;
    Args::new()
        .push(g)
        .push(o.ptr())
        .push(dout.ptr())
        .buf(&delta)
        .launch(
            dev,
            "attn_bwd_delta",
            cfg((rows.div_ceil(8) as u32, 1, 1), (256, 1, 1), 0),
        )?;
    let bh = (d.batch * d.heads) as u32;
    let smem = bwd_smem_bytes(dmax);
    Args::new()
        .push(g)
        .push(q.ptr())
        .push(k.ptr())
        .push(v.ptr())
        .push(dout.ptr())
        .buf(lse)
        .buf(&delta)
        .push(dk.ptr())
        .push(dv.ptr())
        .push(beta)
        .launch(
            dev,
            &format!("attn_bwd_dkdv_d{dmax}"),
            cfg((d.tk.div_ceil(16) as u32, bh, 1), (256, 1, 1), smem),
        )?;
    Args::new()
        .push(g)
        .push(q.ptr())
        .push(k.ptr())
        .push(v.ptr())
        .push(dout.ptr())
        .buf(lse)
        .buf(&delta)
        .push(dq.ptr())
        .push(beta)
        .launch(
            dev,
            &format!("attn_bwd_dq_d{dmax}"),
            cfg((d.tq.div_ceil(16) as u32, bh, 1), (256, 1, 1), smem),
        )
}
