//! One resolution level of the encoder (`down.i`) or the decoder (`up.i`): ResnetBlocks, each
//! followed by an AttnBlock on attention levels, then a resampling layer (a `Downsample` in
//! the encoder, an `Upsample` in the decoder) on every level but one. The two networks differ
//! only in which resampler a level ends with and in the order they run their levels.

use crate::blocks::{AttnBlock, Downsample, ResnetBlock, Upsample};
use crate::layer::{join_key, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::{Result, Tensor};
use std::borrow::Cow;

/// The layer that ends a level, and its `state_dict` key.
pub trait Resampler: Layer + Sized {
    const KEY: &'static str;
    fn build(rank: usize, channels: usize, init: &mut Init) -> Result<Self>;
}

impl Resampler for Downsample {
    const KEY: &'static str = "downsample";
    fn build(rank: usize, channels: usize, init: &mut Init) -> Result<Self> {
        Downsample::new(rank, channels, init)
    }
}

impl Resampler for Upsample {
    const KEY: &'static str = "upsample";
    fn build(rank: usize, channels: usize, init: &mut Init) -> Result<Self> {
        Upsample::new(rank, channels, init)
    }
}

/// What a level is built from.
pub struct LevelSpec {
    pub rank: usize,
    pub channels_in: usize,
    pub channels_out: usize,
    pub blocks: usize,
    pub attention: bool,
    pub resample: bool,
    pub dropout: f32,
}

impl LevelSpec {
    /// Channels of the level's output: those of its blocks, or its input without blocks.
    pub fn output_channels(&self) -> usize {
        if self.blocks > 0 {
            self.channels_out
        } else {
            self.channels_in
        }
    }
}

#[derive(Debug)]
pub struct Level<R> {
    pub block: Vec<ResnetBlock>,
    pub attn: Vec<AttnBlock>,
    pub resample: Option<R>,
}

pub type DownLevel = Level<Downsample>;
pub type UpLevel = Level<Upsample>;

impl<R: Resampler> Level<R> {
    /// Built in the reference's order (block, its attention, …, then the resampler), which
    /// is also the order random initialisation draws in.
    pub fn new(spec: &LevelSpec, init: &mut Init) -> Result<Level<R>> {
        let mut block = Vec::with_capacity(spec.blocks);
        let mut attn = Vec::new();
        let mut channels = spec.channels_in;
        for _ in 0..spec.blocks {
            block.push(ResnetBlock::new(
                spec.rank,
                channels,
                spec.channels_out,
                spec.dropout,
                init,
            )?);
            channels = spec.channels_out;
            if spec.attention {
                attn.push(AttnBlock::new(spec.rank, channels, init)?);
            }
        }
        let resample = if spec.resample {
            Some(R::build(spec.rank, channels, init)?)
        } else {
            None
        };
        Ok(Level {
            block,
            attn,
            resample,
        })
    }

    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        for b in &mut self.block {
            b.inject_lora(r, init)?;
        }
        for a in &mut self.attn {
            a.inject_lora(r, init)?;
        }
        Ok(())
    }

    /// Activation checkpointing for every ResnetBlock and AttnBlock of the level.
    pub fn set_recompute(&mut self, on: bool) {
        self.block.iter_mut().for_each(|b| b.recompute = on);
        self.attn.iter_mut().for_each(|a| a.recompute = on);
    }
}

impl<R: Resampler> Parameters for Level<R> {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        for (j, b) in self.block.iter_mut().enumerate() {
            b.visit_params(&join_key(prefix, &format!("block.{j}")), f);
        }
        for (j, a) in self.attn.iter_mut().enumerate() {
            a.visit_params(&join_key(prefix, &format!("attn.{j}")), f);
        }
        if let Some(r) = self.resample.as_mut() {
            r.visit_params(&join_key(prefix, R::KEY), f);
        }
    }
}

impl<R: Resampler> Layer for Level<R> {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, mut h: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        for i in 0..self.block.len() {
            h = self.block[i].forward_owned(h, ctx)?;
            if let Some(a) = self.attn.get_mut(i) {
                h = a.forward_owned(h, ctx)?;
            }
        }
        match self.resample.as_mut() {
            Some(r) => r.forward_owned(h, ctx),
            None => Ok(h),
        }
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        // Borrowed until a layer writes a new gradient, so that a level without a
        // resampler does not copy `dy`.
        let mut d = match self.resample.as_mut() {
            Some(r) => Cow::Owned(r.backward(dy)?),
            None => Cow::Borrowed(dy),
        };
        for i in (0..self.block.len()).rev() {
            if let Some(a) = self.attn.get_mut(i) {
                d = Cow::Owned(a.backward(&d)?);
            }
            d = Cow::Owned(self.block[i].backward(&d)?);
        }
        Ok(d.into_owned())
    }
}
