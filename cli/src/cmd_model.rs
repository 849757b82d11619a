//! `medvae-fast model keys NAME`: the state-dict keys and PyTorch shapes of a zoo model, one
//! `key shape` line each, in `state_dict` order (what a checkpoint for it must contain).

use anyhow::{Context, Result};
use medvae_model::autoencoder::AutoencoderKL;
use medvae_model::layer::count_params;
use medvae_model::layers::state::param_shapes;
use medvae_model::layers::Init;
use medvae_model::zoo::zoo_config;
use std::io::Write;

pub fn run_model_keys(name: &str) -> Result<()> {
    let cfg = zoo_config(name)?;
    // Zero initialisation: no random-number work for a listing.
    let mut model =
        AutoencoderKL::new(&cfg, &mut Init::Zeros).with_context(|| format!("building {name}"))?;
    let mut out = std::io::stdout().lock();
    for (key, shape) in param_shapes(&mut model) {
        writeln!(out, "{key} {shape:?}")?;
    }
    let (all, trainable) = count_params(&mut model);
    eprintln!("{name}: {all} parameters ({trainable} trainable)");
    Ok(())
}
