//! The MedVAE model zoo and the configuration of an `AutoencoderKL`.
//!
//! [`ModelConfig`] holds what determines the network's structure: the reference's `ddconfig`
//! fields, `embed_dim`, the LoRA rank and 2D/3D. It can be read from a `ddconfig` (YAML/JSON)
//! or derived from a checkpoint's shapes ([`ModelConfig::from_state_dict_shapes`]), so that
//! variants of the published models load without a config file.
//!
//! `attn_resolutions` is stored as the levels it selects (`attn_levels`, 0 = full resolution):
//! the reference compares it with `resolution / 2^level`, and `resolution` has no other effect
//! on the network, so it cannot (and need not) be recovered from a checkpoint.

use medvae_runtime::{Result, RuntimeError};
use serde_json::{json, Value};

/// The published models (`medvae.utils.factory.FILE_DICT_ASSOCIATIONS`).
pub const ZOO_NAMES: [&str; 7] = [
    "medvae_4_1_2d",
    "medvae_4_3_2d",
    "medvae_4_4_2d",
    "medvae_8_1_2d",
    "medvae_8_4_2d",
    "medvae_4_1_3d",
    "medvae_8_1_3d",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Spatial rank: 2 (`AutoencoderKL_2D`) or 3 (`AutoencoderKL_3D`).
    pub dims: usize,
    pub in_channels: usize,
    pub out_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Levels with an AttnBlock after every ResnetBlock (empty in every MedVAE model).
    pub attn_levels: Vec<usize>,
    pub z_channels: usize,
    pub embed_dim: usize,
    pub dropout: f32,
    /// Rank of the LoRA injected into ResnetBlock/AttnBlock convolutions, if any.
    pub lora_rank: Option<usize>,
    /// The `channel_ds` / `channel_proj` latent head (`apply_channel_ds`).
    pub latent_head: bool,
}

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Other(format!("model config: {}", msg.into()))
}

fn usize_field(v: &Value, key: &str) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| err(format!("ddconfig needs a non-negative integer `{key}`")))
}

impl ModelConfig {
    /// The smallest layout the model accepts with a latent head: 32 channels (the
    /// GroupNorm's 32 groups), three levels (4x downsampling), one residual block, no
    /// attention, 2 latent channels. For tests and smoke runs, not for images.
    pub fn tiny(dims: usize) -> ModelConfig {
        ModelConfig {
            dims,
            in_channels: 1,
            out_ch: 1,
            ch: 32,
            ch_mult: vec![1, 1, 1],
            num_res_blocks: 1,
            attn_levels: vec![],
            z_channels: 2,
            embed_dim: 2,
            dropout: 0.0,
            lora_rank: None,
            latent_head: true,
        }
    }

    /// From the reference's `ddconfig` (as JSON), `embed_dim`, LoRA rank and spatial rank.
    pub fn from_ddconfig(
        dd: &Value,
        embed_dim: usize,
        lora_rank: Option<usize>,
        dims: usize,
    ) -> Result<ModelConfig> {
        if dd.get("double_z").and_then(Value::as_bool) == Some(false) {
            return Err(err(
                "double_z = false is not supported (the reference asserts it)",
            ));
        }
        let ch_mult: Vec<usize> = dd
            .get("ch_mult")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as usize)
                    .collect()
            })
            .ok_or_else(|| err("ddconfig needs `ch_mult`"))?;
        let attn_res: Vec<u64> = dd
            .get("attn_resolutions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let mut attn_levels = Vec::new();
        if !attn_res.is_empty() {
            let mut res = usize_field(dd, "resolution")? as u64;
            for level in 0..ch_mult.len() {
                if attn_res.contains(&res) {
                    attn_levels.push(level);
                }
                res /= 2;
            }
        }
        let cfg = ModelConfig {
            dims,
            in_channels: usize_field(dd, "in_channels")?,
            out_ch: usize_field(dd, "out_ch")?,
            ch: usize_field(dd, "ch")?,
            ch_mult,
            num_res_blocks: usize_field(dd, "num_res_blocks")?,
            attn_levels,
            z_channels: usize_field(dd, "z_channels")?,
            embed_dim,
            dropout: dd.get("dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32,
            lora_rank,
            latent_head: true,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A `ddconfig` for this configuration, with `resolution` (which only places attention).
    pub fn to_ddconfig(&self, resolution: usize) -> Value {
        let attn: Vec<usize> = self.attn_levels.iter().map(|&l| resolution >> l).collect();
        json!({
            "double_z": true, "z_channels": self.z_channels, "resolution": resolution,
            "in_channels": self.in_channels, "out_ch": self.out_ch, "ch": self.ch,
            "ch_mult": self.ch_mult, "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": attn, "dropout": self.dropout,
        })
    }

    /// Check that the network can be built (GroupNorm needs channels divisible by 32).
    pub fn validate(&self) -> Result<()> {
        if self.dims != 2 && self.dims != 3 {
            return Err(err(format!("dims must be 2 or 3, not {}", self.dims)));
        }
        if self.ch_mult.is_empty() || self.num_res_blocks == 0 {
            return Err(err(
                "ch_mult and num_res_blocks must be non-empty / positive",
            ));
        }
        for &m in &self.ch_mult {
            let width = self.ch * m;
            // `%` rather than `is_multiple_of`: the workspace's minimum Rust is 1.80.
            #[allow(clippy::manual_is_multiple_of)]
            if width == 0 || width % 32 != 0 {
                return Err(err(format!(
                    "width ch·mult = {} is not a positive multiple of 32 (GroupNorm)",
                    self.ch * m
                )));
            }
        }
        if let Some(&l) = self.attn_levels.iter().find(|&&l| l >= self.ch_mult.len()) {
            return Err(err(format!(
                "attention level {l} beyond {} levels",
                self.ch_mult.len()
            )));
        }
        if self.in_channels == 0 || self.out_ch == 0 || self.z_channels == 0 || self.embed_dim == 0
        {
            return Err(err("channel counts must be positive"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(err(format!("dropout {} is not in [0, 1)", self.dropout)));
        }
        Ok(())
    }

    /// Spatial downsampling factor per axis (`2^(levels − 1)`).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }

    /// Derive the configuration from a checkpoint's `(key, PyTorch shape)` list.
    pub fn from_state_dict_shapes(shapes: &[(String, Vec<usize>)]) -> Result<ModelConfig> {
        let get = |key: &str| -> Option<&Vec<usize>> {
            shapes.iter().find(|(k, _)| k == key).map(|(_, s)| s)
        };
        let need = |key: &str| get(key).ok_or_else(|| err(format!("checkpoint has no `{key}`")));
        // A LoRA-injected convolution keeps its weight under `.conv.`.
        let conv_w = |base: &str| {
            get(&format!("{base}.weight")).or_else(|| get(&format!("{base}.conv.weight")))
        };
        let conv_in = need("encoder.conv_in.weight")?;
        let dims = match conv_in.len() {
            4 => 2,
            5 => 3,
            n => {
                return Err(err(format!(
                    "encoder.conv_in.weight has rank {n}; expected 4 (2D) or 5 (3D)"
                )))
            }
        };
        let (ch, in_channels) = (conv_in[0], conv_in[1]);
        let mut ch_mult = Vec::new();
        while let Some(s) = get(&format!(
            "encoder.down.{}.block.0.norm2.weight",
            ch_mult.len()
        )) {
            if ch == 0 || s[0] % ch != 0 {
                return Err(err(format!(
                    "level {} width {} is not a multiple of ch {ch}",
                    ch_mult.len(),
                    s[0]
                )));
            }
            ch_mult.push(s[0] / ch);
        }
        let mut num_res_blocks = 0;
        while get(&format!(
            "encoder.down.0.block.{num_res_blocks}.norm1.weight"
        ))
        .is_some()
        {
            num_res_blocks += 1;
        }
        let attn_levels = (0..ch_mult.len())
            .filter(|l| get(&format!("encoder.down.{l}.attn.0.norm.weight")).is_some())
            .collect();
        let conv_out = need("encoder.conv_out.weight")?;
        let quant = need("quant_conv.weight")?;
        let lora_rank = shapes
            .iter()
            .find(|(k, _)| k.ends_with(".lora_down.weight"))
            .map(|(_, s)| s[0]);
        let out_ch = need("decoder.conv_out.weight")?[0];
        let cfg = ModelConfig {
            dims,
            in_channels,
            out_ch,
            ch,
            ch_mult,
            num_res_blocks,
            attn_levels,
            z_channels: conv_out[0] / 2,
            embed_dim: quant[0] / 2,
            dropout: 0.0,
            lora_rank,
            latent_head: get("channel_proj.weight").is_some(),
        };
        cfg.validate()?;
        // The decoder's input width must agree with the encoder's output.
        match conv_w("decoder.conv_in") {
            Some(s) if s[1] == cfg.z_channels => Ok(cfg),
            Some(s) => Err(err(format!(
                "decoder.conv_in takes {} channels, encoder gives z = {}",
                s[1], cfg.z_channels
            ))),
            None => Err(err("checkpoint has no `decoder.conv_in.weight`")),
        }
    }
}

/// The `ddconfig` layouts of the published models: ch 128, 2 res blocks, no attention levels.
fn kl_layout(levels: usize, channels: usize, z: usize) -> ModelConfig {
    ModelConfig {
        dims: 2,
        in_channels: channels,
        out_ch: channels,
        ch: 128,
        ch_mult: if levels == 3 {
            vec![1, 2, 4]
        } else {
            vec![1, 2, 4, 4]
        },
        num_res_blocks: 2,
        attn_levels: vec![],
        z_channels: z,
        embed_dim: z,
        dropout: 0.0,
        lora_rank: None,
        latent_head: true,
    }
}

/// The configuration of a published model by name.
///
/// `medvae_4_1_2d`, `medvae_4_3_2d` and the 3D models follow the published YAML files; the
/// 8× layouts are kl-f8 (`ch_mult [1, 2, 4, 4]`); `medvae_4_4_2d` has no config in the
/// reference package and is inferred: the 4× layout with a 4-channel latent, built like the
/// 1-channel models (no LoRA) with a 1-channel image. A real checkpoint's shapes override all
/// of this through [`ModelConfig::from_state_dict_shapes`].
pub fn zoo_config(name: &str) -> Result<ModelConfig> {
    let cfg = match name {
        "medvae_4_1_2d" => kl_layout(3, 1, 1),
        "medvae_4_3_2d" => ModelConfig {
            lora_rank: Some(4),
            ..kl_layout(3, 3, 3)
        },
        "medvae_4_4_2d" => kl_layout(3, 1, 4),
        "medvae_8_1_2d" => kl_layout(4, 1, 1),
        "medvae_8_4_2d" => ModelConfig {
            lora_rank: Some(4),
            ..kl_layout(4, 3, 4)
        },
        "medvae_4_1_3d" => ModelConfig {
            dims: 3,
            ..kl_layout(3, 1, 1)
        },
        "medvae_8_1_3d" => ModelConfig {
            dims: 3,
            ..kl_layout(4, 1, 1)
        },
        _ => {
            return Err(RuntimeError::Other(format!(
                "unknown model `{name}`; the zoo has {}",
                ZOO_NAMES.join(", ")
            )))
        }
    };
    Ok(cfg)
}
