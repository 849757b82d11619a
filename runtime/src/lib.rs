//! medvae-runtime
