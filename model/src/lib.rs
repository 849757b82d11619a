//! medvae-model
