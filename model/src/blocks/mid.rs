//! The middle of the encoder and decoder: `block_1` → `attn_1` → `block_2` at the lowest
//! resolution (present in every MedVAE model, whatever `attn_resolutions` says).

use crate::blocks::attention::AttnBlock;
use crate::blocks::resnet::ResnetBlock;
use crate::layer::{join_key, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::{Result, Tensor};

#[derive(Debug)]
pub struct MidBlock {
    pub block_1: ResnetBlock,
    pub attn_1: AttnBlock,
    pub block_2: ResnetBlock,
}

impl MidBlock {
    pub fn new(rank: usize, channels: usize, dropout: f32, init: &mut Init) -> Result<MidBlock> {
        Ok(MidBlock {
            block_1: ResnetBlock::new(rank, channels, channels, dropout, init)?,
            attn_1: AttnBlock::new(rank, channels, init)?,
            block_2: ResnetBlock::new(rank, channels, channels, dropout, init)?,
        })
    }

    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        self.block_1.inject_lora(r, init)?;
        self.attn_1.inject_lora(r, init)?;
        self.block_2.inject_lora(r, init)
    }

    pub fn set_recompute(&mut self, on: bool) {
        self.block_1.recompute = on;
        self.attn_1.recompute = on;
        self.block_2.recompute = on;
    }
}

impl Parameters for MidBlock {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.block_1.visit_params(&join_key(prefix, "block_1"), f);
        self.attn_1.visit_params(&join_key(prefix, "attn_1"), f);
        self.block_2.visit_params(&join_key(prefix, "block_2"), f);
    }
}

impl Layer for MidBlock {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.block_1.forward_owned(x, ctx)?;
        let h = self.attn_1.forward_owned(h, ctx)?;
        self.block_2.forward_owned(h, ctx)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let d = self.block_2.backward(dy)?;
        let d = self.attn_1.backward(&d)?;
        self.block_1.backward(&d)
    }
}
