//! Where an output file came from, written into its NIfTI description (`descrip`, 80 bytes,
//! shown by `fslhd` and nibabel) so that it travels with the file:
//!
//! ```text
//! medvae-fast z e=3f9a0c11d2b7 w=8e41f0aa9c03 ct roi160 ov0.25 fp32
//! ```
//!
//! * what the file holds: `latent` (the 2D stage-2 latent, `channel_proj`), `z` (the posterior
//!   mean the decoder reads) or `decoded` (a reconstruction);
//! * `e=`: a fingerprint of the encoder side of the weights (`encoder.*`, `quant_conv.*`), which
//!   alone decides `z`: `medvae-fast decode` checks it, so latents are never decoded by a
//!   decoder trained for another encoder (a stage-2 finetune keeps the encoder, so its `z` still
//!   matches);
//! * `w=`: a fingerprint of every parameter;
//! * the options that change the numbers: for 3D the modality's intensity rule, the window size
//!   and overlap; the convolution precision.
//!
//! `infer --skip-existing` keeps an existing output only when its description is exactly the
//! one this run would write. Fingerprints are 48-bit FNV-1a hashes ([`Fnv1a`]) over the
//! parameters' keys, PyTorch shapes and f32 bits (in the engine's layout): they tell weights
//! apart, they do not authenticate them.

use crate::autoencoder::AutoencoderKL;
use crate::layer::Parameters;
use medvae_runtime::data::volume3d::DESCRIP_MAX;
use medvae_runtime::hash::Fnv1a;
use medvae_runtime::Device;

/// The description's first word.
pub const TOOL: &str = "medvae-fast";
/// Fingerprints are shown (and compared) as 12 hex digits.
const FINGERPRINT_BITS: u32 = 48;

/// What an output file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// The 2D stage-2 latent, `channel_proj(channel_ds(z) + z)` (what the reference writes).
    Latent,
    /// The posterior mean `z`: the decoder's input.
    Z,
    /// A reconstruction, in the normalised [-1, 1] intensities.
    Decoded,
}

impl OutputKind {
    pub fn word(self) -> &'static str {
        match self {
            OutputKind::Latent => "latent",
            OutputKind::Z => "z",
            OutputKind::Decoded => "decoded",
        }
    }

    fn from_word(w: &str) -> Option<OutputKind> {
        [OutputKind::Latent, OutputKind::Z, OutputKind::Decoded]
            .into_iter()
            .find(|k| k.word() == w)
    }
}

/// The two fingerprints of a model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprints {
    /// `encoder.*` and `quant_conv.*`: what `z` depends on.
    pub encoder: u64,
    /// Every parameter and buffer.
    pub weights: u64,
}

/// A fingerprint cut to its shown width (the high bits folded in first).
fn shown(h: &Fnv1a) -> u64 {
    let v = h.value();
    (v ^ (v >> FINGERPRINT_BITS)) & ((1 << FINGERPRINT_BITS) - 1)
}

/// `text` and a separator byte, so that ("ab", "c") and ("a", "bc") differ.
fn add_text(h: &mut Fnv1a, text: &str) {
    h.bytes(text.as_bytes());
    h.bytes(&[0xff]);
}

/// Whether the parameter `key` belongs to the encoder side (what `z` depends on).
fn is_encoder_side(key: &str) -> bool {
    key.starts_with("encoder.") || key.starts_with("quant_conv.")
}

/// The fingerprints of `model`'s parameters (keys, PyTorch shapes and values), wherever they
/// live.
pub fn fingerprints(model: &mut AutoencoderKL) -> Fingerprints {
    let mut encoder = Fnv1a::new();
    let mut weights = Fnv1a::new();
    model.visit_params("", &mut |key, p| {
        // The values in the engine's layout, borrowed where they are f32 on the host (else a
        // converted copy), not a PyTorch-order copy: transposing every convolution weight cost
        // ~0.9 s of each run's start (medvae_4_1_2d, 2 cores). Any change of a value still
        // changes the hash; the shape hashed is PyTorch's.
        let host = p.value.on_device(Device::Cpu);
        let copy;
        let values: &[f32] = match host.as_ref().ok().and_then(|t| t.f32s("fingerprints").ok()) {
            Some(v) => v,
            None => {
                copy = p.value.to_f32_vec();
                &copy
            }
        };
        let shape = p.torch_shape();
        let mut hashers = vec![&mut weights];
        if is_encoder_side(key) {
            hashers.push(&mut encoder);
        }
        for h in hashers {
            add_text(h, key);
            for &d in &shape {
                h.word(d as u64);
            }
            for v in values {
                h.word(u64::from(v.to_bits()));
            }
        }
    });
    Fingerprints {
        encoder: shown(&encoder),
        weights: shown(&weights),
    }
}

/// The options part of a description: what changes the numbers besides the weights.
/// `modality_rule` is the 3D intensity rule (`ct` or `mri`); 2D outputs name only the precision.
pub fn settings(
    dims: usize,
    modality_rule: &str,
    roi: usize,
    overlap: f64,
    precision: &str,
) -> String {
    if dims == 2 {
        return precision.to_string();
    }
    // Three decimals: overlaps that differ further are taken as equal.
    let ov = format!("{overlap:.3}");
    let ov = ov.trim_end_matches('0').trim_end_matches('.');
    // Compact, so that the longest (a `decoded` file with a 4-digit window, a 3-decimal
    // overlap and `infer --source-affine`'s ` aff`) still fits the 79 bytes unhashed.
    format!("{modality_rule} roi{roi} ov{ov} {precision}")
}

/// A parsed description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub kind: OutputKind,
    pub fingerprints: Fingerprints,
    /// [`settings`], or `s=` and its hash when the description would not fit otherwise.
    pub settings: String,
}

impl Provenance {
    pub fn new(kind: OutputKind, fingerprints: Fingerprints, settings: &str) -> Provenance {
        let p = Provenance {
            kind,
            fingerprints,
            settings: settings.to_string(),
        };
        if p.descrip().len() <= DESCRIP_MAX {
            return p;
        }
        let mut h = Fnv1a::new();
        add_text(&mut h, settings);
        Provenance {
            settings: format!("s={:012x}", shown(&h)),
            ..p
        }
    }

    /// The NIfTI description (at most [`DESCRIP_MAX`] bytes when made by [`Provenance::new`]).
    pub fn descrip(&self) -> String {
        format!(
            "{TOOL} {} e={:012x} w={:012x} {}",
            self.kind.word(),
            self.fingerprints.encoder,
            self.fingerprints.weights,
            self.settings
        )
    }

    /// The provenance in a description, if medvae-fast wrote it.
    pub fn parse(descrip: &str) -> Option<Provenance> {
        let mut words = descrip.split_whitespace();
        if words.next()? != TOOL {
            return None;
        }
        let kind = OutputKind::from_word(words.next()?)?;
        let hex = |w: Option<&str>, tag: &str| -> Option<u64> {
            u64::from_str_radix(w?.strip_prefix(tag)?, 16).ok()
        };
        let encoder = hex(words.next(), "e=")?;
        let weights = hex(words.next(), "w=")?;
        Some(Provenance {
            kind,
            fingerprints: Fingerprints { encoder, weights },
            settings: words.collect::<Vec<_>>().join(" "),
        })
    }

    /// How `self` (an existing file's) differs from `want` (this run's), in words.
    pub fn difference(&self, want: &Provenance) -> String {
        let mut what = Vec::new();
        if self.kind != want.kind {
            what.push(format!(
                "it holds `{}`, not `{}`",
                self.kind.word(),
                want.kind.word()
            ));
        }
        if self.fingerprints.encoder != want.fingerprints.encoder {
            what.push("another encoder".to_string());
        } else if self.fingerprints.weights != want.fingerprints.weights {
            what.push("other weights (same encoder)".to_string());
        }
        if self.settings != want.settings {
            what.push(format!(
                "options `{}`, not `{}`",
                self.settings, want.settings
            ));
        }
        what.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Init;
    use crate::zoo::ModelConfig;

    fn tiny(seed: u64) -> AutoencoderKL {
        AutoencoderKL::new(&ModelConfig::tiny(2), &mut Init::random(seed)).unwrap()
    }

    /// The same weights give the same fingerprints; a change in the decoder changes only the
    /// whole-model one, a change in the encoder both.
    #[test]
    fn fingerprints_follow_the_weights_they_cover() {
        let base = fingerprints(&mut tiny(1));
        assert_eq!(base, fingerprints(&mut tiny(1)));
        assert_ne!(base.encoder, base.weights);
        let other = fingerprints(&mut tiny(2));
        assert!(other.encoder != base.encoder && other.weights != base.weights);

        let nudge = |prefix: &str| {
            let mut m = tiny(1);
            let mut done = false;
            m.visit_params("", &mut |key, p| {
                if !done && key.starts_with(prefix) && !p.kind.is_buffer() {
                    let mut v = p.value.to_f32_vec();
                    v[0] = f32::from_bits(v[0].to_bits() ^ 1); // one ulp
                    p.value = medvae_runtime::Tensor::from_vec(p.value.shape(), v).unwrap();
                    done = true;
                }
            });
            assert!(done, "{prefix}");
            fingerprints(&mut m)
        };
        let decoder = nudge("decoder.");
        assert_eq!(decoder.encoder, base.encoder);
        assert_ne!(decoder.weights, base.weights);
        let head = nudge("channel_proj.");
        assert_eq!(head.encoder, base.encoder);
        assert_ne!(head.weights, base.weights);
        let encoder = nudge("quant_conv.");
        assert_ne!(encoder.encoder, base.encoder);
        assert_ne!(encoder.weights, base.weights);
    }

    /// Descriptions parse back to what made them, fit the header, and anything else is not ours.
    #[test]
    fn descriptions_round_trip_and_fit() {
        let f = Fingerprints {
            encoder: 0x0123_4567_89ab,
            weights: 0xfedc_ba98_7654,
        };
        let p = Provenance::new(OutputKind::Z, f, &settings(3, "ct", 160, 0.25, "fp32"));
        assert_eq!(
            p.descrip(),
            "medvae-fast z e=0123456789ab w=fedcba987654 ct roi160 ov0.25 fp32"
        );
        assert_eq!(Provenance::parse(&p.descrip()), Some(p.clone()));
        assert_eq!(settings(2, "ct", 160, 0.25, "bf16"), "bf16");
        assert_eq!(settings(3, "mri", 96, 0.5, "fp32"), "mri roi96 ov0.5 fp32");
        assert_eq!(settings(3, "mri", 96, 0.0, "fp32"), "mri roi96 ov0 fp32");

        // Too long for 79 bytes: the options become their hash, still told apart.
        let long = format!("{} aff", settings(3, "mri", 123_456_789, 1.0 / 3.0, "bf16"));
        let a = Provenance::new(OutputKind::Decoded, f, &long);
        assert!(a.descrip().len() <= DESCRIP_MAX, "{}", a.descrip());
        assert!(a.settings.starts_with("s="), "{}", a.settings);
        assert_eq!(Provenance::parse(&a.descrip()), Some(a.clone()));
        let b = Provenance::new(OutputKind::Decoded, f, &long.replace("bf16", "tf32"));
        assert_ne!(a, b);

        for foreign in [
            "",
            "FSL5.0",
            "medvae-fast",
            "medvae-fast q e=1 w=2",
            "medvae-fast z e=zz w=1",
        ] {
            assert_eq!(Provenance::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn differences_are_told_in_words() {
        let f = Fingerprints {
            encoder: 1,
            weights: 2,
        };
        let want = Provenance::new(OutputKind::Z, f, "fp32");
        let other_decoder =
            Provenance::new(OutputKind::Z, Fingerprints { weights: 3, ..f }, "fp32");
        assert_eq!(
            other_decoder.difference(&want),
            "other weights (same encoder)"
        );
        let other = Provenance::new(
            OutputKind::Latent,
            Fingerprints {
                encoder: 5,
                weights: 3,
            },
            "bf16",
        );
        assert_eq!(
            other.difference(&want),
            "it holds `latent`, not `z`; another encoder; options `bf16`, not `fp32`"
        );
    }
}
