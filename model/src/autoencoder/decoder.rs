//! The MedVAE decoder: `conv_in` from `z_channels`, the middle block, then from the lowest
//! level up `num_res_blocks + 1` ResnetBlocks per level (AttnBlocks on attention levels) and an
//! Upsample except on level 0, then `conv_out(silu(norm_out(h)))` to `out_ch`.
//! `up` is indexed by level (`up.0` is the full-resolution level, run last), as the reference's
//! `ModuleList` built with `insert(0, ..)`.

use super::level::{LevelSpec, UpLevel};
use crate::blocks::norm_conv::{norm_conv_backward, norm_conv_forward, IDENTITY};
use crate::blocks::MidBlock;
use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::Conv;
use crate::layers::group_norm::GroupNorm;
use crate::layers::init::Init;
use crate::zoo::ModelConfig;
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

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
            let spec = LevelSpec {
                rank,
                channels_in: block_in,
                channels_out: cfg.ch * cfg.ch_mult[level],
                blocks: cfg.num_res_blocks + 1,
                attention: cfg.attn_levels.contains(&level),
                resample: level != 0,
                dropout: cfg.dropout,
            };
            up[level] = Some(UpLevel::new(&spec, init)?);
            block_in = spec.output_channels();
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
            level.inject_lora(r, init)?;
        }
        Ok(())
    }

    pub fn set_recompute(&mut self, on: bool) {
        self.mid.set_recompute(on);
        for level in &mut self.up {
            level.set_recompute(on);
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
            level.visit_params(&join_key(prefix, &format!("up.{i}")), f);
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
            h = level.forward_owned(h, ctx)?;
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
            d = level.backward(&d)?;
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
