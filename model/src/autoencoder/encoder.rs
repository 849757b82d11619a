//! The MedVAE encoder: `conv_in`, per level `num_res_blocks` ResnetBlocks (each followed by an
//! AttnBlock on attention levels) and a Downsample except on the last level, the middle block,
//! then `conv_out(silu(norm_out(h)))` to `2·z_channels` (mean ‖ log-variance).

use super::level::{DownLevel, LevelSpec};
use crate::blocks::norm_conv::{norm_conv_backward, norm_conv_forward, IDENTITY};
use crate::blocks::MidBlock;
use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::Conv;
use crate::layers::group_norm::GroupNorm;
use crate::layers::init::Init;
use crate::zoo::ModelConfig;
use medvae_runtime::{Result, Tensor};
use std::borrow::Cow;

#[derive(Debug)]
pub struct Encoder {
    pub conv_in: Conv,
    pub down: Vec<DownLevel>,
    pub mid: MidBlock,
    pub norm_out: GroupNorm,
    pub conv_out: Conv,
    /// The image (input of `conv_in`) of the last gradient-mode forward.
    conv_in_input: Option<Tensor>,
    /// Input of the output head (`norm_out`) of the last gradient-mode forward.
    saved_h: Option<Tensor>,
}

impl Encoder {
    pub fn new(cfg: &ModelConfig, init: &mut Init) -> Result<Encoder> {
        let rank = cfg.dims;
        let conv_in = Conv::square(rank, cfg.in_channels, cfg.ch, 3, 1, 1, init)?;
        let mut down = Vec::with_capacity(cfg.ch_mult.len());
        let mut block_in = cfg.ch;
        for (level, &mult) in cfg.ch_mult.iter().enumerate() {
            let spec = LevelSpec {
                rank,
                channels_in: block_in,
                channels_out: cfg.ch * mult,
                blocks: cfg.num_res_blocks,
                attention: cfg.attn_levels.contains(&level),
                resample: level + 1 != cfg.ch_mult.len(),
                dropout: cfg.dropout,
            };
            down.push(DownLevel::new(&spec, init)?);
            block_in = spec.output_channels();
        }
        let mid = MidBlock::new(rank, block_in, cfg.dropout, init)?;
        let norm_out = GroupNorm::new(block_in, true, init)?;
        let conv_out = Conv::square(rank, block_in, 2 * cfg.z_channels, 3, 1, 1, init)?;
        Ok(Encoder {
            conv_in,
            down,
            mid,
            norm_out,
            conv_out,
            conv_in_input: None,
            saved_h: None,
        })
    }

    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        for level in &mut self.down {
            level.inject_lora(r, init)?;
        }
        self.mid.inject_lora(r, init)
    }

    /// Activation checkpointing for every ResnetBlock and AttnBlock.
    pub fn set_recompute(&mut self, on: bool) {
        for level in &mut self.down {
            level.set_recompute(on);
        }
        self.mid.set_recompute(on);
    }

    /// Backward with the option of skipping the input gradient (an image needs none in
    /// training; the golden checks ask for it).
    pub fn backward_to_input(&mut self, dy: &Tensor, need_dx: bool) -> Result<Option<Tensor>> {
        let h = self
            .saved_h
            .take()
            .ok_or_else(|| no_saved_state("Encoder"))?;
        let mut d = norm_conv_backward(
            &mut self.norm_out,
            &mut self.conv_out,
            &h,
            &IDENTITY,
            Cow::Borrowed(dy),
        )?;
        drop(h);
        d = self.mid.backward(&d)?;
        for level in self.down.iter_mut().rev() {
            d = level.backward(&d)?;
        }
        let x = self
            .conv_in_input
            .take()
            .ok_or_else(|| no_saved_state("Encoder.conv_in"))?;
        self.conv_in.grad(Cow::Owned(x), &d, need_dx)
    }
}

impl Parameters for Encoder {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.conv_in.visit_params(&join_key(prefix, "conv_in"), f);
        for (i, level) in self.down.iter_mut().enumerate() {
            level.visit_params(&join_key(prefix, &format!("down.{i}")), f);
        }
        self.mid.visit_params(&join_key(prefix, "mid"), f);
        self.norm_out.visit_params(&join_key(prefix, "norm_out"), f);
        self.conv_out.visit_params(&join_key(prefix, "conv_out"), f);
    }
}

impl Layer for Encoder {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.saved_h = None;
        let mut h = self.conv_in.apply(&x)?;
        self.conv_in_input = if ctx.grad { Some(x) } else { None };
        for level in &mut self.down {
            h = level.forward_owned(h, ctx)?;
        }
        h = self.mid.forward_owned(h, ctx)?;
        let y = norm_conv_forward(&self.norm_out, &mut self.conv_out, &h, &IDENTITY, ctx)?;
        if ctx.grad {
            self.saved_h = Some(h);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        self.backward_to_input(dy, true)?
            .ok_or_else(|| medvae_runtime::RuntimeError::Other("Encoder: no dx".into()))
    }
}
