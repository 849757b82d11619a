//! Every zoo model has exactly the state-dict keys and shapes of the published PyTorch models
//! (`shared/golden/model_keys.json`, listed by the reference package), in `state_dict` order, and
//! its configuration is recovered from those shapes alone.

mod common;

use medvae_model::autoencoder::AutoencoderKL;
use medvae_model::blocks::NLayerDiscriminator;
use medvae_model::layer::count_params;
use medvae_model::layers::state::param_shapes;
use medvae_model::layers::Init;
use medvae_model::zoo::{zoo_config, ModelConfig, ZOO_NAMES};
use serde_json::Value;

fn listing() -> (Value, String) {
    let path = common::golden_dir().join("model_keys.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (
        serde_json::from_str(&text).expect("model_keys.json parses"),
        text,
    )
}

fn listed_shapes(entry: &Value) -> Vec<(String, Vec<usize>)> {
    entry["state_dict"]
        .as_object()
        .expect("state_dict object")
        .iter()
        .map(|(k, v)| {
            let shape = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect()
}

/// The keys of `name`'s section in file order (the JSON map type may sort keys).
fn file_order(text: &str, name: &str) -> Vec<String> {
    let start = text
        .find(&format!("\"{name}\": {{"))
        .expect("model section");
    let section = &text[start..];
    let sd = section.find("\"state_dict\": {").expect("state_dict") + "\"state_dict\": {".len();
    let end = section[sd..]
        .find("\n  }")
        .map(|e| sd + e)
        .expect("end of state_dict");
    section[sd..end]
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('"')
                .and_then(|r| r.split_once("\": ["))
                .map(|(k, _)| k.to_string())
        })
        .collect()
}

fn assert_same_keys(name: &str, built: &[(String, Vec<usize>)], listed: &[(String, Vec<usize>)]) {
    let mut a = built.to_vec();
    let mut b = listed.to_vec();
    a.sort();
    b.sort();
    let missing: Vec<_> = b.iter().filter(|e| !a.contains(e)).take(5).collect();
    let extra: Vec<_> = a.iter().filter(|e| !b.contains(e)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: keys/shapes differ; listed but not built: {missing:?}; built but not listed: {extra:?}"
    );
}

#[test]
fn zoo_models_have_the_published_keys_shapes_order_and_sizes() {
    let (json, text) = listing();
    let mut seen = 0;
    for (name, entry) in json.as_object().unwrap() {
        if !name.starts_with("medvae_") {
            continue;
        }
        seen += 1;
        let cfg = zoo_config(name).unwrap();
        // One model at a time (the largest is ~1 GB of f32).
        let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros).unwrap();
        let built = param_shapes(&mut model);
        let listed = listed_shapes(entry);
        assert_same_keys(name, &built, &listed);
        let order: Vec<String> = built.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(order, file_order(&text, name), "{name}: state_dict order");
        let (all, _) = count_params(&mut model);
        assert_eq!(
            all as u64,
            entry["params"].as_u64().unwrap(),
            "{name}: parameter count"
        );

        // The configuration from the shapes alone, and from the listed ddconfig.
        assert_eq!(
            ModelConfig::from_state_dict_shapes(&listed).unwrap(),
            cfg,
            "{name}: from shapes"
        );
        let dims = if name.ends_with("_3d") { 3 } else { 2 };
        let lora = entry["lora_rank"].as_u64().map(|r| r as usize);
        let embed = entry["embed_dim"].as_u64().unwrap() as usize;
        assert_eq!(
            ModelConfig::from_ddconfig(&entry["ddconfig"], embed, lora, dims).unwrap(),
            cfg,
            "{name}: from ddconfig"
        );
    }
    assert_eq!(seen, 6, "model_keys.json lists six MedVAE models");
}

#[test]
fn every_zoo_name_builds_and_round_trips_its_config() {
    for name in ZOO_NAMES {
        let cfg = zoo_config(name).unwrap();
        // Small init cost: only the 2D models here (the 3D ones are covered above).
        if cfg.dims == 3 {
            continue;
        }
        let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros).unwrap();
        let shapes = param_shapes(&mut model);
        assert_eq!(
            ModelConfig::from_state_dict_shapes(&shapes).unwrap(),
            cfg,
            "{name}"
        );
    }
    assert!(zoo_config("medvae_16_1_2d")
        .unwrap_err()
        .to_string()
        .contains("medvae_4_1_2d"));
}

#[test]
fn discriminator_has_the_published_keys() {
    let (json, text) = listing();
    let mut d = NLayerDiscriminator::new(1, 64, 3, &mut Init::Zeros).unwrap();
    let built = param_shapes(&mut d);
    let listed = listed_shapes(&json["discriminator_1ch"]);
    assert_same_keys("discriminator_1ch", &built, &listed);
    let order: Vec<String> = built.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(order, file_order(&text, "discriminator_1ch"));
}

#[test]
fn config_from_shapes_reads_variants() {
    // A non-zoo variant: other widths, 3 res blocks, attention on level 1, no LoRA, 3D.
    let cfg = ModelConfig {
        dims: 3,
        in_channels: 2,
        out_ch: 2,
        ch: 32,
        ch_mult: vec![1, 2, 3],
        num_res_blocks: 3,
        attn_levels: vec![1],
        z_channels: 2,
        embed_dim: 5,
        dropout: 0.0,
        lora_rank: Some(2),
        latent_head: false,
    };
    let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros).unwrap();
    let shapes = param_shapes(&mut model);
    assert!(shapes
        .iter()
        .any(|(k, _)| k == "decoder.up.1.attn.3.proj_out.lora_up.weight"));
    assert!(!shapes.iter().any(|(k, _)| k.starts_with("channel_")));
    assert_eq!(ModelConfig::from_state_dict_shapes(&shapes).unwrap(), cfg);
    // ddconfig round trip: attention placed by resolution.
    let dd = cfg.to_ddconfig(64);
    assert_eq!(dd["attn_resolutions"], serde_json::json!([32]));
    let back = ModelConfig::from_ddconfig(&dd, 5, Some(2), 3).unwrap();
    assert_eq!(
        back,
        ModelConfig {
            latent_head: true,
            ..cfg
        }
    );
}

#[test]
fn bad_configs_are_errors() {
    let base = zoo_config("medvae_4_1_2d").unwrap();
    let bad = [
        ModelConfig {
            ch: 48,
            ..base.clone()
        },
        ModelConfig {
            dims: 4,
            ..base.clone()
        },
        ModelConfig {
            attn_levels: vec![3],
            ..base.clone()
        },
        ModelConfig {
            ch_mult: vec![],
            ..base.clone()
        },
    ];
    for cfg in bad {
        assert!(
            AutoencoderKL::new(&cfg, &mut Init::Zeros).is_err(),
            "{cfg:?}"
        );
    }
    let shapes = vec![("encoder.conv_in.weight".to_string(), vec![128, 1, 3])];
    assert!(ModelConfig::from_state_dict_shapes(&shapes).is_err());
    let mut m = AutoencoderKL::new(&base, &mut Init::Zeros).unwrap();
    let mut shapes = param_shapes(&mut m);
    shapes.retain(|(k, _)| k != "quant_conv.weight");
    let e = ModelConfig::from_state_dict_shapes(&shapes)
        .unwrap_err()
        .to_string();
    assert!(e.contains("quant_conv.weight"), "{e}");
}
