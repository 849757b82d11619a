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
