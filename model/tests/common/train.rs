//! The tiny finetuning setup shared by the CPU and CUDA training-loop tests.

use medvae_model::train::TrainConfig;
use medvae_runtime::ops::elementwise::standard_normal;
use medvae_runtime::Tensor;

/// A tiny 2D stage-1 run: 16² images, 32 channels, the discriminator from step 3,
/// accumulation 2 (so resumes land mid-accumulation).
pub fn tiny_config(out: &str) -> TrainConfig {
    serde_json::from_value(serde_json::json!({
        "task_name": "test",
        "model_name": "medvae_4_1_2d",
        "ddconfig": {"double_z": true, "z_channels": 1, "resolution": 16, "in_channels": 1,
                      "out_ch": 1, "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1,
                      "attn_resolutions": [], "dropout": 0.0},
        "dataloader": {"config": "unused.yaml", "prepared_dir": "unused"},
        "criterion": {"disc_start": 3, "perceptual_weight": 0.0, "disc_ndf": 8,
                       "disc_layers": 2, "learn_logvar": true},
        "batch_size": 2,
        "base_learning_rate": 2.5e-4,
        "gradient_accumulation_steps": 2,
        "max_epoch": 1,
        "seed": 3,
        "output_dir": out
    }))
    .expect("config")
}

pub fn batch(seed: u64) -> Tensor {
    // Smooth-ish images in [-1, 1]: a random field squashed.
    let t = standard_normal(&[2, 16, 16, 1], seed).unwrap();
    let v: Vec<f32> = t.to_f32_vec().iter().map(|x| (x * 0.5).tanh()).collect();
    Tensor::from_vec(&[2, 16, 16, 1], v).unwrap()
}

/// A tiny random BiomedCLIP-like tower saved as an open_clip checkpoint (`visual.*` keys).
pub fn tiny_tower_file(dir: &std::path::Path) -> std::path::PathBuf {
    use medvae_model::layers::state::to_state_dict;
    use medvae_model::layers::Init;
    use medvae_model::vit::{VisionTower, VitConfig};
    use medvae_runtime::checkpoint::{save_safetensors, StateDict};
    let cfg = VitConfig {
        image_size: 32,
        patch: 16,
        in_chans: 3,
        width: 32,
        depth: 1,
        heads: 2,
        mlp_hidden: 64,
        embed_dim: 16,
        proj_bias: false,
    };
    let mut tower = VisionTower::new(&cfg, &mut Init::random(11)).unwrap();
    let mut sd = StateDict::new("tower");
    for (k, t) in to_state_dict(&mut tower, "tower").unwrap().iter() {
        sd.insert(format!("visual.{k}"), t.clone()).unwrap();
    }
    let path = dir.join("open_clip_tiny.safetensors");
    save_safetensors(&path, &sd).unwrap();
    path
}
