//! Loading and exporting parameters: PyTorch-layout round trips, key reports, real
//! `torch.save` checkpoints of the small reference autoencoder.

mod common;

use medvae_model::autoencoder::{AutoencoderKL, Outputs, Sampling};
use medvae_model::blocks::NLayerDiscriminator;
use medvae_model::layer::{Ctx, Layer, ParamKind};
use medvae_model::layers::state::{
    export_params, load_params, load_state_dict, param_shapes, to_state_dict,
};
use medvae_model::layers::Init;
use medvae_model::zoo::ModelConfig;
use medvae_runtime::checkpoint::{
    load_checkpoint, read_safetensors, safetensors_bytes, SaveOptions, TensorData,
};
use serde_json::json;

fn small_config() -> ModelConfig {
    let dd = json!({"double_z": true, "z_channels": 1, "resolution": 16, "in_channels": 1, "out_ch": 1, "ch": 32,
                    "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0});
    ModelConfig::from_ddconfig(&dd, 1, None, 2).unwrap()
}

fn decode_mode(model: &mut AutoencoderKL, x: &medvae_runtime::Tensor) -> Vec<f32> {
    let out = model
        .forward(
            x,
            Sampling::Mode,
            Outputs {
                decode: true,
                latent: true,
            },
            &mut Ctx::eval(),
        )
        .unwrap();
    let mut v = out.dec.unwrap().to_f32_vec();
    v.extend(out.latent.unwrap().to_f32_vec());
    v
}

#[test]
fn export_then_load_reproduces_the_model() {
    let cfg = small_config();
    let mut a = AutoencoderKL::new(&cfg, &mut Init::random(1)).unwrap();
    let mut b = AutoencoderKL::new(&cfg, &mut Init::random(2)).unwrap();
    let x = common::randn(&[1, 16, 16, 1], 3);
    assert_ne!(decode_mode(&mut a, &x), decode_mode(&mut b, &x));
    let exported = export_params(&mut a);
    let report = load_params(
        &mut b,
        exported
            .iter()
            .map(|t| (t.key.as_str(), t.shape.as_slice(), t.data.as_slice())),
    )
    .unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.loaded, exported.len());
    assert_eq!(decode_mode(&mut a, &x), decode_mode(&mut b, &x));
    // Conv weights are exported in PyTorch's (O, I, kh, kw) layout.
    let w = exported
        .iter()
        .find(|t| t.key == "encoder.conv_in.weight")
        .unwrap();
    assert_eq!(w.shape, vec![32, 1, 3, 3]);
}

#[test]
fn key_problems_are_reported_not_loaded() {
    let mut m = AutoencoderKL::new(&small_config(), &mut Init::Zeros).unwrap();
    let ones = vec![1.0f32; 32 * 9];
    let bias = vec![0.5f32; 32];
    let entries: [(&str, &[usize], &[f32]); 3] = [
        ("encoder.conv_in.weight", &[32, 1, 3, 3], &ones),
        ("encoder.conv_in.bias", &[16], &bias[..16]),
        ("encoder.nonexistent.weight", &[32], &bias),
    ];
    let r = load_params(&mut m, entries).unwrap();
    assert_eq!(r.loaded, 1);
    assert_eq!(r.unexpected, vec!["encoder.nonexistent.weight".to_string()]);
    assert_eq!(
        r.mismatched,
        vec![("encoder.conv_in.bias".to_string(), vec![32], vec![16])]
    );
    assert_eq!(r.missing.len(), param_shapes(&mut m).len() - 2);
    assert!(r.ensure_exact("test").is_err());
    let exported = export_params(&mut m);
    let b = exported
        .iter()
        .find(|t| t.key == "encoder.conv_in.bias")
        .unwrap();
    assert!(
        b.data.iter().all(|&v| v == 0.0),
        "a mismatched tensor is not loaded"
    );
    // An entry whose data does not fill its shape is an error, not a report.
    assert!(load_params(
        &mut m,
        vec![("encoder.conv_in.bias", &[32][..], &bias[..3])]
    )
    .is_err());
}

#[test]
fn real_torch_checkpoints_load_exactly() {
    let dir = common::golden_dir().join("checkpoints");
    let expected_bytes = std::fs::read(dir.join("ae2d_small_expected.safetensors")).unwrap();
    let (expected, _) = read_safetensors("expected", &expected_bytes).unwrap();
    for file in [
        "ae2d_small_lightning.ckpt",
        "ae2d_small_plain_state_dict.bin",
    ] {
        let state = load_checkpoint(&dir.join(file)).unwrap();
        let shapes: Vec<(String, Vec<usize>)> = state
            .iter()
            .map(|(k, t)| (k.to_string(), t.shape.clone()))
            .collect();
        let cfg = ModelConfig::from_state_dict_shapes(&shapes).unwrap();
        assert_eq!(cfg, small_config(), "{file}");
        let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros).unwrap();
        let report = load_state_dict(&mut model, &state).unwrap();
        assert!(report.is_exact(), "{file}: {report}");
        for t in export_params(&mut model) {
            let want = expected
                .get(&format!("param.{}", t.key))
                .unwrap_or_else(|| panic!("{}", t.key));
            assert_eq!(want.shape, t.shape, "{}", t.key);
            assert_eq!(
                want.as_f32().unwrap(),
                t.data.as_slice(),
                "{file}: {}",
                t.key
            );
        }
    }
}

#[test]
fn state_dict_round_trip_through_safetensors_keeps_int_buffers() {
    let mut d = NLayerDiscriminator::new(1, 8, 3, &mut Init::random(5)).unwrap();
    // One training-mode pass counts a batch and moves the running statistics.
    let x = common::randn(&[2, 32, 32, 1], 4);
    d.forward_owned(x, &mut Ctx::train(0)).unwrap();
    let sd = to_state_dict(&mut d, "disc").unwrap();
    let tracked = sd.get("main.3.num_batches_tracked").unwrap();
    assert_eq!(tracked.data, TensorData::Int(vec![1]));
    let bytes = safetensors_bytes(&sd, &SaveOptions::default()).unwrap();
    let (back, _) = read_safetensors("disc", &bytes).unwrap();
    let mut fresh = NLayerDiscriminator::new(1, 8, 3, &mut Init::Zeros).unwrap();
    let report = load_state_dict(&mut fresh, &back).unwrap();
    assert!(report.is_exact(), "{report}");
    let a = export_params(&mut d);
    let b = export_params(&mut fresh);
    assert_eq!(a, b);
    assert!(a
        .iter()
        .any(|t| t.kind == ParamKind::IntBuffer && t.data == vec![1.0]));
}
