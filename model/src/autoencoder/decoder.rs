//! The MedVAE decoder: `conv_in` from `z_channels`, the middle block, then from the lowest
//! level up `num_res_blocks + 1` ResnetBlocks per level (AttnBlocks on attention levels) and an
//! Upsample except on level 0, then `conv_out(silu(norm_out(h)))` to `out_ch`.
//! `up` is indexed by level (`up.0` is the full-resolution level, run last), as the reference's
//! `ModuleList` built with `insert(0, ..)`.

use crate::blocks::norm_conv::{norm_conv_backward, norm_conv_forward, IDENTITY};
use crate::blocks::{AttnBlock, MidBlock, ResnetBlock, Upsample};
use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::Conv;
use crate::layers::group_norm::GroupNorm;
use crate::layers::init::Init;
use crate::zoo::ModelConfig;
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

#[derive(Debug)]
pub struct UpLevel {
    pub block: Vec<ResnetBlock>,
    pub attn: Vec<AttnBlock>,
    pub upsample: Option<Upsample>,
}

#[derive(Debug)]
pub struct Decoder {
    pub conv_in: Conv,
    pub mid: MidBlock,
    pub up: Vec<UpLevel>,
    pub norm_out: GroupNorm,
    pub conv_out: Conv,
    conv_in_input: Option<Tensor>,
    saved_h: Option<Tensor>,
}

impl Decoder {
    pub fn new(cfg: &ModelConfig, init: &mut Init) -> Result<Decoder> {
        let rank = cfg.dims;
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let conv_in = Conv::square(rank, cfg.z_channels, block_in, 3, 1, 1, init)?;
        let mid = MidBlock::new(rank, block_in, cfg.dropout, init)?;
        // Built from the lowest level up (the reference's construction order, which is also
        // the order random initialisation draws in), stored by level index.
        let mut up: Vec<Option<UpLevel>> = (0..levels).map(|_| None).collect();
        for level in (0..levels).rev() {
            let block_out = cfg.ch * cfg.ch_mult[level];
            let mut block = Vec::with_capacity(cfg.num_res_blocks + 1);
            let mut attn = Vec::new();
            for _ in 0..=cfg.num_res_blocks {
                block.push(ResnetBlock::new(
                    rank,
                    block_in,
                    block_out,
                    cfg.dropout,
                    init,
                )?);
                block_in = block_out;
                if cfg.attn_levels.contains(&level) {
                    attn.push(AttnBlock::new(rank, block_in, init)?);
                }
            }
            let upsample = if level != 0 {
                Some(Upsample::new(rank, block_in, init)?)
            } else {
                None
            };
            up[level] = Some(UpLevel {
                block,
                attn,
                upsample,
            });
        }
        let up = up.into_iter().flatten().collect();
        let norm_out = GroupNorm::new(block_in, true, init)?;
        let conv_out = Conv::square(rank, block_in, cfg.out_ch, 3, 1, 1, init)?;
        Ok(Decoder {
            conv_in,
            mid,
            up,
            norm_out,
            conv_out,
            conv_in_input: None,
            saved_h: None,
        })
    }

    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        self.mid.inject_lora(r, init)?;
        for level in self.up.iter_mut() {
            for b in &mut level.block {
                b.inject_lora(r, init)?;
            }
            for a in &mut level.attn {
                a.inject_lora(r, init)?;
            }
        }
        Ok(())
    }

    pub fn set_recompute(&mut self, on: bool) {
        self.mid.set_recompute(on);
        for level in &mut self.up {
            level.block.iter_mut().for_each(|b| b.recompute = on);
            level.attn.iter_mut().for_each(|a| a.recompute = on);
        }
    }

    /// The input of `conv_out` (`silu(norm_out(h))`), recomputed from the saved `h`, and the
    /// layer itself: the adaptive GAN weight needs `∂L/∂conv_out.weight` per loss term.
    pub fn last_layer_input(&self) -> Result<(Tensor, &Conv)> {
        let h = self
            .saved_h
            .as_ref()
            .ok_or_else(|| no_saved_state("Decoder (last layer)"))?;
        Ok((self.norm_out.apply(h)?.0, &self.conv_out))
    }
}

impl Parameters for Decoder {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.conv_in.visit_params(&join_key(prefix, "conv_in"), f);
        self.mid.visit_params(&join_key(prefix, "mid"), f);
        for (i, level) in self.up.iter_mut().enumerate() {
            let lp = join_key(prefix, &format!("up.{i}"));
            for (j, b) in level.block.iter_mut().enumerate() {
                b.visit_params(&join_key(&lp, &format!("block.{j}")), f);
            }
            for (j, a) in level.attn.iter_mut().enumerate() {
                a.visit_params(&join_key(&lp, &format!("attn.{j}")), f);
            }
            if let Some(u) = level.upsample.as_mut() {
                u.visit_params(&join_key(&lp, "upsample"), f);
            }
        }
        self.norm_out.visit_params(&join_key(prefix, "norm_out"), f);
        self.conv_out.visit_params(&join_key(prefix, "conv_out"), f);
    }
}

impl Layer for Decoder {
    fn forward(&mut self, z: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(z.clone(), ctx)
    }

    fn forward_owned(&mut self, z: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.saved_h = None;
        let mut h = self.conv_in.apply(&z)?;
        self.conv_in_input = if ctx.grad { Some(z) } else { None };
        h = self.mid.forward_owned(h, ctx)?;
        for level in self.up.iter_mut().rev() {
            for i in 0..level.block.len() {
                h = level.block[i].forward_owned(h, ctx)?;
                if let Some(a) = level.attn.get_mut(i) {
                    h = a.forward_owned(h, ctx)?;
                }
            }
            if let Some(u) = level.upsample.as_mut() {
                h = u.forward_owned(h, ctx)?;
            }
        }
        let y = norm_conv_forward(&self.norm_out, &mut self.conv_out, &h, &IDENTITY, ctx)?;
        if ctx.grad {
            self.saved_h = Some(h);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let h = self
            .saved_h
            .take()
            .ok_or_else(|| no_saved_state("Decoder"))?;
        let mut d = norm_conv_backward(
            &mut self.norm_out,
            &mut self.conv_out,
            &h,
            &IDENTITY,
            Cow::Borrowed(dy),
        )?;
        drop(h);
        for level in self.up.iter_mut() {
            if let Some(u) = level.upsample.as_mut() {
                d = u.backward(&d)?;
            }
            for i in (0..level.block.len()).rev() {
                if let Some(a) = level.attn.get_mut(i) {
                    d = a.backward(&d)?;
                }
                d = level.block[i].backward(&d)?;
            }
        }
        d = self.mid.backward(&d)?;
        let z = self
            .conv_in_input
            .take()
            .ok_or_else(|| no_saved_state("Decoder.conv_in"))?;
        self.conv_in
            .grad(Cow::Owned(z), &d, true)?
            .ok_or_else(|| RuntimeError::Other("Decoder: no dz".into()))
    }
}
