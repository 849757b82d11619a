//! Inference setup without the CLI: model loading from a checkpoint (configuration from its
//! shapes, conflicts with a named model, exact key match, training-loss entries), the refusal
//! without weights, and the output arrays' layout. The file plan: `infer_plan.rs`.

use medvae_model::autoencoder::AutoencoderKL;
use medvae_model::infer::{
    load_model, reference_array, InferError, InferOptions, Inferencer, Modality, ModelRequest,
};
use medvae_model::layers::state::to_state_dict;
use medvae_model::layers::Init;
use medvae_model::zoo::ModelConfig;
use medvae_runtime::checkpoint::{save_safetensors, NamedTensor};
use medvae_runtime::data::image2d::{Image2d, Samples};
use medvae_runtime::Tensor;
use std::path::{Path, PathBuf};

/// A temporary folder of one test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-infer-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

fn tiny(dims: usize) -> ModelConfig {
    ModelConfig::tiny(dims)
}

/// Save a random tiny model; `extra` entries are added to its state dict.
fn save_tiny(dir: &Path, dims: usize, extra: &[&str]) -> PathBuf {
    let mut m = AutoencoderKL::new(&tiny(dims), &mut Init::random(7)).unwrap();
    let mut sd = to_state_dict(&mut m, "tiny").unwrap();
    for k in extra {
        sd.insert(
            k.to_string(),
            NamedTensor::from_f32(vec![2], vec![1.0, 2.0]),
        )
        .unwrap();
    }
    let path = dir.join(format!("tiny{dims}d_{}.safetensors", extra.len()));
    save_safetensors(&path, &sd).unwrap();
    path
}

fn req(name: Option<&str>, weights: Option<&Path>, random: bool) -> ModelRequest {
    ModelRequest {
        name: name.map(str::to_string),
        weights: weights.map(Path::to_path_buf),
        random_weights: random,
        seed: 0,
    }
}

#[test]
fn a_checkpoint_gives_its_own_configuration() {
    let s = scratch("cfg");
    let w = save_tiny(s.path(), 2, &[]);
    let m = load_model(&req(None, Some(&w), false)).unwrap();
    assert_eq!(m.model.config, tiny(2));
    assert!(m.notes.is_empty(), "{:?}", m.notes);

    // a zoo name that disagrees is an error naming the differences
    let e = load_model(&req(Some("medvae_4_1_2d"), Some(&w), false)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, InferError::Weights { .. }), "{e:?}");
    assert!(
        msg.contains("conflicts with --model medvae_4_1_2d"),
        "{msg}"
    );
    assert!(msg.contains("ch 128 (model) vs 32 (checkpoint)"), "{msg}");
    assert!(msg.contains(w.to_str().unwrap()), "{msg}");

    // Lightning's training-loss entries are dropped; any other extra key is an error
    let with_loss = save_tiny(
        s.path(),
        2,
        &["loss.logvar", "loss.discriminator.main.0.bias"],
    );
    let m = load_model(&req(None, Some(&with_loss), false)).unwrap();
    assert!(
        m.notes.iter().any(|n| n.contains("ignored 2")),
        "{:?}",
        m.notes
    );
    let with_junk = save_tiny(s.path(), 2, &["encoder.extra.weight"]);
    let msg = load_model(&req(None, Some(&with_junk), false))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unexpected") && msg.contains("encoder.extra.weight"),
        "{msg}"
    );
}

#[test]
fn without_weights_it_refuses_and_says_where_to_get_them() {
    let msg = load_model(&req(Some("medvae_4_1_3d"), None, false))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("stanfordmimi/MedVAE"), "{msg}");
    assert!(msg.contains("model_weights/vae_4x_1c_3D.ckpt"), "{msg}");
    assert!(msg.contains("--random-weights"), "{msg}");
    // random weights need a name, and exclude a weights file
    assert!(load_model(&req(None, None, true)).is_err());
    let s = scratch("refuse");
    let w = save_tiny(s.path(), 2, &[]);
    assert!(load_model(&req(None, Some(&w), true)).is_err());
    assert!(load_model(&req(Some("no_such_model"), None, true))
        .unwrap_err()
        .to_string()
        .contains("medvae_4_1_2d"));
}

#[test]
fn the_output_array_is_channels_first_and_squeezed() {
    // channels-last [1, 2, 3, 2]: value = 100 y + 10 x + c
    let mut data = Vec::new();
    for y in 0..2 {
        for x in 0..3 {
            for c in 0..2 {
                data.push((100 * y + 10 * x + c) as f32);
            }
        }
    }
    let a = reference_array(&Tensor::from_vec(&[1, 2, 3, 2], data).unwrap()).unwrap();
    assert_eq!(a.shape, vec![2, 2, 3]);
    assert_eq!(&a.data[..6], &[0.0, 10.0, 20.0, 100.0, 110.0, 120.0]);
    assert_eq!(a.data[6], 1.0);
    let one = reference_array(&Tensor::zeros(&[1, 4, 1, 5, 1])).unwrap();
    assert_eq!(one.shape, vec![4, 5]);
}

#[test]
fn a_2d_image_gives_the_latent_and_reconstruction_shapes() {
    let m = AutoencoderKL::new(&tiny(2), &mut Init::random(1)).unwrap();
    let opts = InferOptions {
        modality: Modality::Xray,
        decode: true,
        roi_size: 160,
        overlap: 0.25,
        device: medvae_runtime::Device::Cpu,
        latent_z: false,
    };
    let mut inf = Inferencer::new(m, opts).unwrap();
    let img = Image2d {
        height: 12,
        width: 20,
        channels: 1,
        data: (0..240).map(|v| (v % 17) as f32 / 8.0 - 1.0).collect(),
        samples: Samples::Float,
    };
    let out = inf.infer_image(&img, Path::new("mem.png")).unwrap();
    assert_eq!(out.latent.shape, vec![2, 3, 5]);
    assert_eq!(out.decoded.unwrap().shape, vec![12, 20]);
    // a 3-channel image for a 1-channel model is refused
    let rgb = Image2d {
        channels: 3,
        data: vec![0.0; 720],
        ..img
    };
    assert!(inf.infer_image(&rgb, Path::new("rgb.png")).is_err());
    // a 3D model cannot run on x-rays
    let m3 = AutoencoderKL::new(&tiny(3), &mut Init::random(1)).unwrap();
    assert!(Inferencer::new(m3, opts).is_err());
}
