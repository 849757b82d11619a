//! MedVAE's `AttnBlock` (GroupNorm(32), 1×1 q/k/v convs, attention, 1×1 projection,
//! residual) rebuilt from the kernels and checked against the golden files: output and every
//! input and parameter gradient. This pins down the reference semantics the attention kernel
//! must reproduce: softmax over keys, scale `C^-½`, output `v·wᵀ`.

use crate::ops_support::{assert_golden, golden_dir, to_channels_last};
use medvae_kernels::cpu::attention::*;
use medvae_kernels::cpu::group_norm::*;
use medvae_kernels::cpu::linear::*;
use std::collections::HashMap;

/// Tensors of a `modules/` golden file by name (`[shape], values`).
fn load_module_golden(name: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let path = golden_dir()
        .join("modules")
        .join(format!("{name}.safetensors"));
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(key, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (key, (view.shape().to_vec(), data))
        })
        .collect()
}

/// `AttnBlock.forward` and its backward rebuilt from kernels (channels-last, f32):
/// `y = x + proj(attn(q(h), k(h), v(h)))`, `h = GroupNorm32(x)`, 1×1 convs as linear layers
/// (a `[out, in, 1, 1]` conv weight is the `[out, in]` linear weight).
fn attn_block_case(name: &str) {
    let g = load_module_golden(name);
    let get = |key: &str| &g.get(key).unwrap_or_else(|| panic!("{name}: no {key}")).1;
    let cl = |key: &str| {
        let (shape, data) = &g[key];
        to_channels_last(shape, data)
    };
    let shape = &g["in.x"].0;
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let rows = n * s;
    let x = cl("in.x");
    let gn = GroupNormDims {
        n,
        spatial: s,
        channels: c,
        groups: 32,
        eps: 1e-6,
    };
    let lin = LinearDims {
        rows,
        in_features: c,
        out_features: c,
    };
    let att = AttentionDims {
        batch: n,
        tokens: s,
        dim: c,
        scale: (c as f64).powf(-0.5),
    };

    let mut h = vec![0f32; x.len()];
    let (mut mean, mut rstd) = (vec![0f32; gn.stats_len()], vec![0f32; gn.stats_len()]);
    let (gamma, beta) = (get("param.norm.weight"), get("param.norm.bias"));
    group_norm_forward(
        &gn,
        &x,
        Affine { gamma, beta },
        &mut h,
        NormStatsMut {
            mean: &mut mean,
            rstd: &mut rstd,
        },
    )
    .unwrap();
    let proj = |key: &str, input: &[f32]| {
        let mut y = vec![0f32; rows * c];
        linear_forward(
            &lin,
            input,
            get(&format!("param.{key}.weight")),
            Some(get(&format!("param.{key}.bias"))),
            &mut y,
        )
        .unwrap();
        y
    };
    let (q, k, v) = (proj("q", &h), proj("k", &h), proj("v", &h));
    let (mut a, mut lse) = (vec![0f32; att.len()], vec![0f32; att.lse_len()]);
    attention_forward(&att, &q, &k, &v, &mut a, &mut lse).unwrap();
    let y: Vec<f32> = proj("proj_out", &a)
        .iter()
        .zip(&x)
        .map(|(p, x)| p + x)
        .collect();
    assert_golden(name, "y", &y, &cl("out.y"));

    // Backward: dy flows to x directly (residual) and through proj_out, attention, q/k/v, norm.
    let dy = cl("gout.y");
    let mut param_grads: HashMap<String, Vec<f32>> = HashMap::new();
    let mut lin_back = |key: &str, input: &[f32], dout: &[f32]| {
        let (mut dx, mut dw, mut db) = (vec![0f32; rows * c], vec![0f32; c * c], vec![0f32; c]);
        let grads = LinearGrads {
            dx: Some(&mut dx),
            dweight: Some(&mut dw),
            dbias: Some(&mut db),
        };
        linear_backward(
            &lin,
            input,
            get(&format!("param.{key}.weight")),
            dout,
            grads,
        )
        .unwrap();
        param_grads.insert(format!("{key}.weight"), dw);
        param_grads.insert(format!("{key}.bias"), db);
        dx
    };
    let da = lin_back("proj_out", &a, &dy);
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; att.len()],
        vec![0f32; att.len()],
        vec![0f32; att.len()],
    );
    attention_backward(&att, &q, &k, &v, &a, &lse, &da, &mut dq, &mut dk, &mut dv).unwrap();
    let dh: Vec<f32> = {
        let (hq, hk, hv) = (
            lin_back("q", &h, &dq),
            lin_back("k", &h, &dk),
            lin_back("v", &h, &dv),
        );
        hq.iter()
            .zip(&hk)
            .zip(&hv)
            .map(|((a, b), c)| a + b + c)
            .collect()
    };
    let mut dx = vec![0f32; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
    group_norm_backward(
        &gn,
        &x,
        gamma,
        NormStats {
            mean: &mean,
            rstd: &rstd,
        },
        &dh,
        &mut dx,
        AffineGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        },
    )
    .unwrap();
    dx.iter_mut().zip(&dy).for_each(|(d, g)| *d += g);
    assert_golden(name, "dx", &dx, &cl("grad.in.x"));
    assert_golden(name, "norm.weight", &dgamma, get("grad.param.norm.weight"));
    assert_golden(name, "norm.bias", &dbeta, get("grad.param.norm.bias"));
    for key in [
        "q.weight",
        "q.bias",
        "k.weight",
        "v.weight",
        "v.bias",
        "proj_out.weight",
        "proj_out.bias",
    ] {
        assert_golden(
            name,
            key,
            &param_grads[key],
            get(&format!("grad.param.{key}")),
        );
    }
    // The key bias adds the same q_i·b to every score of row i, which the softmax cancels:
    // its gradient is exactly zero (the golden file holds rounding noise, ~1e-17), so a
    // relative comparison means nothing; it must be negligible next to the query bias's.
    let norm = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let (kb, qb) = (norm(&param_grads["k.bias"]), norm(get("grad.param.q.bias")));
    println!("{name}: |d k.bias| {kb:.3e} (|d q.bias| {qb:.3e})");
    assert!(
        kb <= 1e-5 * qb,
        "{name}: key-bias gradient {kb:e} is not ~0"
    );
}

#[test]
fn golden_attn_block_2d() {
    attn_block_case("attn_block_2d");
}

#[test]
fn golden_attn_block_3d() {
    attn_block_case("attn_block_3d");
}
