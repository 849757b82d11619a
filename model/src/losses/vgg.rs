//! The frozen VGG16 feature extractor of LPIPS: torchvision's `vgg16().features[0:30]` cut into
//! the five slices that end at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.
//!
//! ```text
//! slice1: 0 conv 2 conv              (relu after each conv: 1, 3)
//! slice2: 4 pool 5 conv 7 conv
//! slice3: 9 pool 10 conv 12 conv 14 conv
//! slice4: 16 pool 17 conv 19 conv 21 conv
//! slice5: 23 pool 24 conv 26 conv 28 conv
//! ```
//! Every convolution is 3×3, stride 1, padding 1 (Winograd on the CPU), followed by ReLU; the
//! pools are 2×2/2. The widths of the five stages are configurable (`[64, 128, 256, 512, 512]`
//! for the real network) so that narrow test networks run through the same code.
//!
//! The network is frozen: its backward goes to the input only. That needs neither the
//! convolution inputs' values (only their shapes) nor the pre-activation values: the ReLU mask
//! is read from the ReLU's output, which is the next unit's input anyway. So the forward keeps
//! exactly the activations it produces, with no copy, and [`VggActs`] is all the state. The
//! forward returns that state as a value (instead of hiding it in the layer) so one network can
//! hold several passes at once (LPIPS' input and target branches, 3D slice groups).
//!
//! Every step is a runtime op (convolution, in-place ReLU and its mask, max pool), so the
//! network runs on whichever device its input and parameters are on.

use crate::layer::{join_key, ParamVisitor, Parameters};
use crate::layers::conv::Conv;
use crate::layers::init::Init;
use medvae_runtime::ops::activation::{relu_inplace, relu_mask_inplace};
use medvae_runtime::ops::conv_frozen::{
    conv_backward_data_frozen, conv_forward_frozen, FrozenConvCache,
};
use medvae_runtime::ops::resample::{max_pool2x2_backward, max_pool2x2_forward, PoolArgmax};
use medvae_runtime::{Result, RuntimeError, Tensor};

/// Widths of the five stages of the real VGG16.
pub const VGG16_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// Convolutions per slice.
const SLICE_CONVS: [usize; 5] = [2, 2, 3, 3, 3];
/// torchvision `features` index of each slice's first layer (a pool, except slice 1).
const SLICE_START: [usize; 5] = [0, 4, 9, 16, 23];

/// One unit of the feature stack: a convolution with its ReLU, or a 2×2 max pool.
#[derive(Debug)]
pub enum Unit {
    ConvRelu {
        /// torchvision `features` index of the convolution (its ReLU is `index + 1`).
        index: usize,
        conv: Box<Conv>,
        /// The weight's Winograd transform, kept across calls on the CPU (16/9 of the
        /// weight's bytes; made again whenever the weight changes).
        cache: FrozenConvCache,
    },
    Pool,
}

#[derive(Debug)]
pub struct Vgg16Features {
    pub widths: [usize; 5],
    /// `slices[k]`: the units of slice `k + 1`, in order.
    pub slices: Vec<Vec<Unit>>,
}

/// What one forward keeps: with gradient, every unit's output (`acts[0]` is the input); without,
/// only the five slice outputs.
#[derive(Debug)]
pub struct VggActs {
    acts: Vec<Tensor>,
    pools: Vec<PoolArgmax>,
    /// Index in `acts` of each slice's output.
    feature_at: [usize; 5],
    full: bool,
}

impl VggActs {
    /// The output of slice `k` (0-based: relu1_2 is 0).
    pub fn feature(&self, k: usize) -> &Tensor {
        &self.acts[self.feature_at[k]]
    }
}

impl Vgg16Features {
    /// The network with stage widths `widths`, parameters drawn by `init` (frozen: no
    /// parameter ever gets a gradient).
    pub fn new(widths: [usize; 5], init: &mut Init) -> Result<Vgg16Features> {
        if widths.contains(&0) {
            return Err(RuntimeError::Other(format!(
                "VGG16 widths must be positive, got {widths:?}"
            )));
        }
        let mut cin = 3;
        let mut slices = Vec::with_capacity(5);
        for k in 0..5 {
            let mut units = Vec::new();
            let mut index = SLICE_START[k];
            if k > 0 {
                units.push(Unit::Pool);
                index += 1;
            }
            for _ in 0..SLICE_CONVS[k] {
                let mut conv = Conv::square(2, cin, widths[k], 3, 1, 1, init)?;
                conv.weight.trainable = false;
                if let Some(b) = conv.bias.as_mut() {
                    b.trainable = false;
                }
                units.push(Unit::ConvRelu {
                    index,
                    conv: Box::new(conv),
                    cache: FrozenConvCache::new(),
                });
                cin = widths[k];
                index += 2;
            }
            slices.push(units);
        }
        Ok(Vgg16Features { widths, slices })
    }

    /// The torchvision `features` indices of the convolutions, with their slice (0-based).
    pub fn conv_indices(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (k, units) in self.slices.iter().enumerate() {
            for u in units {
                if let Unit::ConvRelu { index, .. } = u {
                    out.push((k, *index));
                }
            }
        }
        out
    }

    /// Run `x` (`[N, H, W, 3]`, already through the scaling layer) through the five slices.
    /// `keep`: keep what [`Vgg16Features::backward`] needs.
    pub fn forward(&self, x: Tensor, keep: bool) -> Result<VggActs> {
        if x.rank() != 4 || x.shape()[3] != 3 {
            return Err(RuntimeError::shape(
                "vgg16 features",
                format!("expected [N, H, W, 3], got {:?}", x.shape()),
            ));
        }
        let mut acts = vec![x];
        let mut pools = Vec::new();
        let mut feature_at = [0; 5];
        // Without `keep`, `acts[..pinned]` are the slice outputs so far and the last entry is
        // the running activation, overwritten unit by unit (the input itself is dropped).
        let mut pinned = 0;
        for (k, units) in self.slices.iter().enumerate() {
            for unit in units {
                let h = acts.last().expect("acts is never empty");
                let y = match unit {
                    Unit::ConvRelu { conv, cache, .. } => {
                        let bias = conv.bias.as_ref().map(|b| &b.value);
                        let mut y =
                            conv_forward_frozen(&conv.spec, h, &conv.weight.value, bias, cache)?;
                        relu_inplace(&mut y)?;
                        y
                    }
                    Unit::Pool => {
                        if h.shape()[1] < 2 || h.shape()[2] < 2 {
                            return Err(RuntimeError::shape(
                                "vgg16 features",
                                format!(
                                    "input too small: slice {} gets {:?}, which a 2×2 pool \
                                     cannot halve (inputs need at least 16×16)",
                                    k + 1,
                                    h.shape()
                                ),
                            ));
                        }
                        let (y, arg) = max_pool2x2_forward(h)?;
                        if keep {
                            pools.push(arg);
                        }
                        y
                    }
                };
                let replace = !keep && acts.len() > pinned;
                match acts.last_mut() {
                    Some(last) if replace => *last = y,
                    _ => acts.push(y),
                }
            }
            feature_at[k] = acts.len() - 1;
            pinned = acts.len();
        }
        Ok(VggActs {
            acts,
            pools,
            feature_at,
            full: keep,
        })
    }

    /// The gradient at the input from gradients at the five slice outputs. `add_feature_grad(k,
    /// feature_k, d)` adds `∂L/∂feature_k` into `d` (which holds the gradient arriving from the
    /// slices above, zeros for slice 5). Activations are released as the backward passes them.
    pub fn backward(
        &self,
        acts: VggActs,
        mut add_feature_grad: impl FnMut(usize, &Tensor, &mut Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        if !acts.full {
            return Err(RuntimeError::Other(
                "vgg16 features: backward needs a forward with keep = true".into(),
            ));
        }
        let VggActs {
            mut acts,
            mut pools,
            feature_at,
            ..
        } = acts;
        let mut d: Option<Tensor> = None;
        for k in (0..5).rev() {
            let feature = &acts[feature_at[k]];
            let mut g = match d.take() {
                Some(g) => g,
                None => feature.zeros_like()?,
            };
            add_feature_grad(k, feature, &mut g)?;
            for unit in self.slices[k].iter().rev() {
                let y = acts.pop().expect("one activation per unit");
                let x = acts.last().expect("the input stays");
                g = match unit {
                    Unit::ConvRelu { conv, cache, .. } => {
                        relu_mask_inplace(&mut g, &y)?;
                        drop(y);
                        // Frozen: no weight gradient; `x` supplies only the geometry.
                        conv_backward_data_frozen(&conv.spec, x, &conv.weight.value, &g, cache)?
                    }
                    Unit::Pool => {
                        let arg = pools.pop().expect("one argmax per pool");
                        max_pool2x2_backward(&arg, &g)?
                    }
                };
            }
            d = Some(g);
        }
        d.ok_or_else(|| RuntimeError::Other("vgg16: empty network".into()))
    }
}

impl Parameters for Vgg16Features {
    /// LPIPS' keys: `slice{k}.{index}.weight|bias`.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        for (k, units) in self.slices.iter_mut().enumerate() {
            let sp = join_key(prefix, &format!("slice{}", k + 1));
            for u in units {
                if let Unit::ConvRelu { index, conv, .. } = u {
                    conv.visit_params(&join_key(&sp, &index.to_string()), f);
                }
            }
        }
    }
}
