//! medvae-model: MedVAE layers with explicit forward/backward, networks, losses, and the
//! golden-case verifier behind `medvae-fast verify`.

pub mod verify;
