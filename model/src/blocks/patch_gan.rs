//! The PatchGAN discriminator of the reference's loss (`NLayerDiscriminator`, pix2pix):
//!
//! `main.0` Conv k4 s2 p1 (bias) → LeakyReLU 0.2, then for n = 1..n_layers
//! Conv k4 s2 p1 (no bias) → BatchNorm → LeakyReLU 0.2 with widths ndf·min(2ⁿ, 8), then
//! Conv k4 s1 p1 (no bias) → BatchNorm → LeakyReLU, and a final Conv k4 s1 p1 (bias) to one
//! logit channel. Keys are `main.<index in the sequence>.*`, as in the reference.

use crate::layer::{join_key, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::activation::Act;
use crate::layers::batch_norm::BatchNorm;
use crate::layers::conv::{conv_spec, Conv};
use crate::layers::init::Init;
use medvae_runtime::ops::activation::Activation;
use medvae_runtime::{Result, RuntimeError, Tensor};

const LEAKY_SLOPE: f32 = 0.2;

pub struct NLayerDiscriminator {
    pub input_nc: usize,
    pub ndf: usize,
    pub n_layers: usize,
    /// `main`: the sequence, indexed as in the reference.
    pub main: Vec<Box<dyn Layer + Send>>,
}

impl std::fmt::Debug for NLayerDiscriminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NLayerDiscriminator(input_nc={}, ndf={}, n_layers={})",
            self.input_nc, self.ndf, self.n_layers
        )
    }
}

fn k4(
    cin: usize,
    cout: usize,
    stride: usize,
    bias: bool,
    init: &mut Init,
) -> Result<Box<dyn Layer + Send>> {
    Ok(Box::new(Conv::new(
        conv_spec(2, cin, cout, 4, stride, 1, 0)?,
        2,
        bias,
        init,
    )?))
}

fn leaky() -> Box<dyn Layer + Send> {
    Box::new(Act::new(Activation::LeakyRelu(LEAKY_SLOPE)))
}

impl NLayerDiscriminator {
    /// Convolution weights `N(0, 0.02²)` and BatchNorm weights `N(1, 0.02²)`, biases 0 (the
    /// reference's `weights_init`), under [`Init::Random`]; zeros under [`Init::Zeros`].
    pub fn new(
        input_nc: usize,
        ndf: usize,
        n_layers: usize,
        init: &mut Init,
    ) -> Result<NLayerDiscriminator> {
        if n_layers == 0 || ndf == 0 || input_nc == 0 {
            return Err(RuntimeError::Other(
                "NLayerDiscriminator needs input_nc, ndf, n_layers ≥ 1".into(),
            ));
        }
        let mut main: Vec<Box<dyn Layer + Send>> = vec![k4(input_nc, ndf, 2, true, init)?, leaky()];
        let mut mult = 1;
        for n in 1..=n_layers {
            let prev = mult;
            mult = (1usize << n).min(8);
            let stride = if n < n_layers { 2 } else { 1 };
            main.push(k4(ndf * prev, ndf * mult, stride, false, init)?);
            main.push(Box::new(BatchNorm::new(ndf * mult, init)?));
            main.push(leaky());
        }
        main.push(k4(ndf * mult, 1, 1, true, init)?);
        let mut d = NLayerDiscriminator {
            input_nc,
            ndf,
            n_layers,
            main,
        };
        d.weights_init(init)?;
        Ok(d)
    }

    fn weights_init(&mut self, init: &mut Init) -> Result<()> {
        if matches!(init, Init::Zeros) {
            return Ok(());
        }
        let mut result = Ok(());
        self.visit_params("", &mut |key, p| {
            let shape = p.value.shape().to_vec();
            let drawn = if p.layout.torch_shape().len() == 4 && key.ends_with(".weight") {
                init.normal(&shape, 0.02)
            } else if key.ends_with(".weight") {
                init.normal(&shape, 0.02).and_then(|mut t| {
                    for v in t.f32s_mut("weights_init")? {
                        *v += 1.0;
                    }
                    Ok(t)
                })
            } else if key.ends_with(".bias") {
                Ok(Tensor::zeros(&shape))
            } else {
                return;
            };
            match drawn {
                Ok(t) => p.value = t,
                Err(e) => result = Err(e),
            }
        });
        result
    }
}

impl Parameters for NLayerDiscriminator {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        let main = join_key(prefix, "main");
        for (i, layer) in self.main.iter_mut().enumerate() {
            layer.visit_params(&join_key(&main, &i.to_string()), f);
        }
    }
}

impl Layer for NLayerDiscriminator {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut h = x;
        for layer in self.main.iter_mut() {
            h = layer.forward_owned(h, ctx)?;
        }
        Ok(h)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let mut d = dy.clone();
        for layer in self.main.iter_mut().rev() {
            d = layer.backward(&d)?;
        }
        Ok(d)
    }
}
