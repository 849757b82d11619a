//! The BiomedCLIP image tower: timm's `vit_base_patch16_224` wrapped by open_clip's
//! `TimmModel` (class-token pooling, then a bias-free `Linear(width → embed_dim)`), frozen
//! inside the stage-2 loss.
//!
//! `image [N, H, W, C]` (channels-last) → patch embedding → `[cls; patches] + pos_embed` →
//! `depth` pre-LN blocks → final LayerNorm (of the class token: LayerNorm is per token, so
//! normalising only the pooled row equals timm's norm-then-pool) → `head.proj` → `[N, embed]`.
//!
//! Sizes come from [`VitConfig`] (the golden tower is tiny, the real one ViT-B/16 at 224²).
//! Backward returns the image gradient; parameter gradients are accumulated only for trainable
//! parameters, so a frozen tower ([`VisionTower::freeze`]) costs input-gradient work only.
//! Keys are open_clip's below `visual.` (`trunk.*`, `head.proj.weight`); see [`load`].

pub mod attention;
pub mod block;
pub mod embed;
pub mod linear;
pub mod load;
pub mod preprocess;

pub use block::Block;
pub use linear::{LayerNorm, Linear};
pub use preprocess::ClipTransform;

use crate::layer::{
    join_key, no_saved_state, set_trainable, visit_one, Ctx, Layer, Param, ParamVisitor,
    Parameters, TorchLayout,
};
use crate::layers::init::Init;
use embed::{
    assemble_tokens, class_rows, class_rows_backward, gather_patches, scatter_patches,
    split_token_grad, PatchGeometry,
};
use medvae_runtime::ops::norm::NormSaved;
use medvae_runtime::{Result, RuntimeError, Tensor};

/// The structure of a ViT image tower with class-token pooling and a linear head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitConfig {
    pub image_size: usize,
    pub patch: usize,
    pub in_chans: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    pub embed_dim: usize,
    pub proj_bias: bool,
}

impl VitConfig {
    /// BiomedCLIP's vision tower: ViT-B/16 at 224², 12 heads, MLP 3072, 512-d features.
    pub fn biomedclip() -> VitConfig {
        VitConfig {
            image_size: 224,
            patch: 16,
            in_chans: 3,
            width: 768,
            depth: 12,
            heads: 12,
            mlp_hidden: 3072,
            embed_dim: 512,
            proj_bias: false,
        }
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch.max(1)
    }

    /// Tokens per image: the class token and one per patch.
    pub fn tokens(&self) -> usize {
        1 + self.grid() * self.grid()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(RuntimeError::Other(format!("ViT config: {msg}")));
        if [
            self.patch,
            self.in_chans,
            self.width,
            self.heads,
            self.mlp_hidden,
            self.embed_dim,
        ]
        .contains(&0)
        {
            return bad(format!("sizes must be positive: {self:?}"));
        }
        if self.image_size < self.patch {
            return bad(format!(
                "image size {} is smaller than the patch {}",
                self.image_size, self.patch
            ));
        }
        if !self.width.is_multiple_of(self.heads) {
            return bad(format!(
                "width {} does not split into {} heads",
                self.width, self.heads
            ));
        }
        Ok(())
    }

    /// The configuration implied by a tower's `(key, PyTorch shape)` list (keys relative to
    /// the tower: `trunk.*`, `head.proj.*`). The head count is not in the shapes and is given.
    pub fn from_shapes(shapes: &[(String, Vec<usize>)], heads: usize) -> Result<VitConfig> {
        let get = |key: &str| shapes.iter().find(|(k, _)| k == key).map(|(_, s)| s);
        let need = |key: &str| {
            get(key).ok_or_else(|| RuntimeError::Other(format!("ViT tower: no `{key}`")))
        };
        let shape_err = |key: &str, s: &[usize]| {
            RuntimeError::Other(format!("ViT tower: `{key}` has unexpected shape {s:?}"))
        };
        let pe = need("trunk.patch_embed.proj.weight")?;
        let [width, in_chans, p, p2] = pe[..] else {
            return Err(shape_err("trunk.patch_embed.proj.weight", pe));
        };
        let pos = need("trunk.pos_embed")?;
        let tokens = match pos[..] {
            [1, t, w] if w == width && t >= 2 => t,
            _ => return Err(shape_err("trunk.pos_embed", pos)),
        };
        let grid = (((tokens - 1) as f64).sqrt().round()) as usize;
        if p != p2 || grid * grid + 1 != tokens {
            return Err(RuntimeError::Other(format!(
                "ViT tower: patch {p}x{p2} with {tokens} tokens is not a square grid"
            )));
        }
        let mut depth = 0;
        while get(&format!("trunk.blocks.{depth}.norm1.weight")).is_some() {
            depth += 1;
        }
        let fc1 = need("trunk.blocks.0.mlp.fc1.weight")?;
        let proj = need("head.proj.weight")?;
        let cfg = VitConfig {
            image_size: grid * p,
            patch: p,
            in_chans,
            width,
            depth,
            heads,
            mlp_hidden: fc1[0],
            embed_dim: proj[0],
            proj_bias: get("head.proj.bias").is_some(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Clone)]
pub struct VisionTower {
    pub config: VitConfig,
    /// The patch convolution as a `[width, C·p·p]` matrix (PyTorch shape `(width, C, p, p)`).
    pub patch_embed: Linear,
    pub cls_token: Param,
    pub pos_embed: Param,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    pub head_proj: Linear,
    saved: Option<Saved>,
}

/// Patch rows, the class rows entering the final norm and its statistics, and the pooled
/// features entering the head.
#[derive(Debug, Clone)]
struct Saved {
    geometry: PatchGeometry,
    patches: Tensor,
    cls: Tensor,
    stats: NormSaved,
    pooled: Tensor,
}

impl VisionTower {
    pub fn new(cfg: &VitConfig, init: &mut Init) -> Result<VisionTower> {
        cfg.validate()?;
        let w = cfg.width;
        let mut patch_embed = Linear::new(cfg.in_chans * cfg.patch * cfg.patch, w, true, init)?;
        patch_embed.weight.layout = TorchLayout::Same {
            shape: vec![w, cfg.in_chans, cfg.patch, cfg.patch],
        };
        let blocks = (0..cfg.depth)
            .map(|_| Block::new(w, cfg.heads, cfg.mlp_hidden, init))
            .collect::<Result<Vec<_>>>()?;
        Ok(VisionTower {
            config: cfg.clone(),
            patch_embed,
            cls_token: Param::plain("cls_token", init.normal(&[1, 1, w], 1e-6)?),
            pos_embed: Param::plain("pos_embed", init.normal(&[1, cfg.tokens(), w], 0.02)?),
            blocks,
            norm: LayerNorm::new(w, block::LN_EPS, init)?,
            head_proj: Linear::new(w, cfg.embed_dim, cfg.proj_bias, init)?,
            saved: None,
        })
    }

    /// Freeze every parameter (the tower inside the stage-2 loss).
    pub fn freeze(&mut self) {
        set_trainable(self, false);
    }

    fn geometry(&self, x: &Tensor) -> Result<PatchGeometry> {
        let c = &self.config;
        match *x.shape() {
            [n, h, w, ch] if h == c.image_size && w == c.image_size && ch == c.in_chans => {
                Ok(PatchGeometry {
                    n,
                    h,
                    w,
                    c: ch,
                    patch: c.patch,
                })
            }
            _ => Err(RuntimeError::shape(
                "vit forward",
                format!(
                    "the tower takes [N, {s}, {s}, {}] channels-last images, got {:?}",
                    c.in_chans,
                    x.shape(),
                    s = c.image_size
                ),
            )),
        }
    }
}

impl Parameters for VisionTower {
    /// open_clip `TimmModel` order: `trunk.{cls_token, pos_embed, patch_embed, blocks, norm}`,
    /// then `head.proj`.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        let trunk = join_key(prefix, "trunk");
        visit_one(&trunk, &mut self.cls_token, f);
        visit_one(&trunk, &mut self.pos_embed, f);
        self.patch_embed
            .visit_params(&join_key(&trunk, "patch_embed.proj"), f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_params(&join_key(&trunk, &format!("blocks.{i}")), f);
        }
        self.norm.visit_params(&join_key(&trunk, "norm"), f);
        self.head_proj
            .visit_params(&join_key(prefix, "head.proj"), f);
    }
}

impl Layer for VisionTower {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let keep = ctx.grad;
        self.saved = None;
        let g = self.geometry(x)?;
        let patches = gather_patches(g, x)?;
        let pe = self.patch_embed.apply(&patches)?;
        let mut t = assemble_tokens(&pe, &self.cls_token.value, &self.pos_embed.value)?;
        drop(pe);
        for b in &mut self.blocks {
            t = b.forward(t, keep)?;
        }
        let cls = class_rows(&t)?;
        drop(t);
        let (pooled, stats) = self.norm.apply(&cls)?;
        let y = self.head_proj.apply(&pooled)?;
        if keep {
            self.saved = Some(Saved {
                geometry: g,
                patches,
                cls,
                stats,
                pooled,
            });
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let Saved {
            geometry,
            patches,
            cls,
            stats,
            pooled,
        } = self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("VisionTower"))?;
        let dpooled = self.head_proj.grad_x(&pooled, dy)?;
        let dcls = self.norm.grad(&cls, &stats, &dpooled)?;
        let mut dt = class_rows_backward(&dcls, self.config.tokens())?;
        for b in self.blocks.iter_mut().rev() {
            dt = b.backward(&dt)?;
        }
        let dpe = split_token_grad(
            &dt,
            self.cls_token.grad_slot()?,
            self.pos_embed.grad_slot()?,
        )?;
        drop(dt);
        let drows = self.patch_embed.grad_x(&patches, &dpe)?;
        scatter_patches(geometry, &drows)
    }
}
