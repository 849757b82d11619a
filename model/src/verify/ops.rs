//! Golden cases with an `op` in their metadata: single kernels, forward and backward.

use super::tensors::{activation, activation_out, plain, to_target, zeros};
use super::Produced;
use medvae_kernels::cpu::conv::{weight_from_torch, weight_to_torch};
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::ops::activation::{activation_backward, activation_forward, Activation};
use medvae_runtime::ops::conv::{conv_backward, conv_forward, ConvSpec};
use medvae_runtime::ops::linear::{linear_backward, linear_forward};
use medvae_runtime::ops::loss::{hinge_backward, hinge_forward, kl_backward, kl_forward};
use medvae_runtime::ops::norm::{
    batch_norm_backward, batch_norm_forward, group_norm_backward, group_norm_forward,
    layer_norm_backward, layer_norm_forward, NormGrads, NormParams, Running,
};
use medvae_runtime::ops::resample::{
    resize_bicubic_aa_backward, resize_bicubic_aa_forward, upsample_nearest2_backward,
    upsample_nearest2_forward,
};
use medvae_runtime::ops::softmax::{softmax_backward, softmax_forward};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};
use std::borrow::Cow;

/// Run an op case. `Ok(None)`: the op is not implemented.
pub fn run(case: &GoldenCase, device: Device) -> Result<Option<Produced>> {
    let op = case.meta_str("op").unwrap_or_default().to_string();
    device.ensure_available()?;
    if !device.is_cpu() && !CUDA_OPS.contains(&op.as_str()) {
        return Ok(None);
    }
    super::tensors::on_device(device, || run_op(case, &op))
}

/// The op cases whose kernels the tensor ops dispatch to CUDA.
const CUDA_OPS: &[&str] = &[
    "conv2d",
    "conv3d",
    "silu",
    "relu",
    "leaky_relu",
    "gelu",
    "group_norm",
    "layer_norm",
    "upsample_nearest",
    "kl",
    "softmax_lastdim",
    "batch_norm",
    "hinge_loss",
    "linear",
    "resize",
];

fn run_op(case: &GoldenCase, op: &str) -> Result<Option<Produced>> {
    let produced = match op {
        "conv2d" => conv(case, 2)?,
        "conv3d" => conv(case, 3)?,
        "silu" => pointwise(case, Activation::Silu)?,
        "relu" => pointwise(case, Activation::Relu)?,
        "leaky_relu" => pointwise(
            case,
            Activation::LeakyRelu(case.meta_f64_or("negative_slope", 0.01)? as f32),
        )?,
        "gelu" => match case.meta_str("approximate").unwrap_or("none") {
            "none" => pointwise(case, Activation::Gelu)?,
            _ => return Ok(None),
        },
        "softmax_lastdim" => softmax(case)?,
        "group_norm" => group_norm(case)?,
        "layer_norm" => layer_norm(case)?,
        "batch_norm" => batch_norm(case)?,
        "linear" => linear(case)?,
        "upsample_nearest" => match case.meta_f64_or("scale", 2.0)? {
            2.0 => upsample(case)?,
            _ => return Ok(None),
        },
        "resize" => {
            let bicubic_aa = case.meta_str("mode") == Some("bicubic")
                && case.meta.get("antialias").and_then(|v| v.as_bool()) == Some(true)
                && case.meta.get("align_corners").and_then(|v| v.as_bool()) != Some(true);
            if !bicubic_aa {
                return Ok(None);
            }
            resize(case)?
        }
        "kl" => kl(case)?,
        "hinge_loss" => hinge(case)?,
        _ => return Ok(None),
    };
    Ok(Some(produced))
}

/// The gradient seed of output `name` as a channels-last activation.
fn gout(case: &GoldenCase, name: &str) -> Result<Tensor> {
    activation(case, &format!("gout.{name}"))
}

fn conv(case: &GoldenCase, rank: usize) -> Result<Produced> {
    let x = activation(case, "in.x")?;
    let w_torch = case.tensor("param.weight")?;
    let ws = &w_torch.shape;
    if ws.len() != rank + 2 {
        return Err(RuntimeError::file(
            &case.path,
            format!(
                "param.weight has shape {ws:?}, expected rank {} for conv{rank}d",
                rank + 2
            ),
        ));
    }
    let (cout, cin) = (ws[0], ws[1]);
    let kernel = if rank == 2 {
        [1, ws[2], ws[3]]
    } else {
        [ws[2], ws[3], ws[4]]
    };
    let stride = case.meta_f64_or("stride", 1.0)? as usize;
    let pad = case.meta_f64_or("padding", 0.0)? as usize;
    // PyTorch's F.pad order is last axis first: (w_lo, w_hi, h_lo, h_hi[, d_lo, d_hi]).
    let pre = case
        .meta_usizes(if rank == 2 {
            "pre_pad_lrtb"
        } else {
            "pre_pad_lrtbfb"
        })?
        .unwrap_or_else(|| vec![0; 2 * rank]);
    if pre.len() != 2 * rank {
        return Err(RuntimeError::file(
            &case.path,
            format!("pre-pad {pre:?} needs {} entries", 2 * rank),
        ));
    }
    let axis_pad = |axis_from_last: usize| (pre[2 * axis_from_last], pre[2 * axis_from_last + 1]);
    let mut spec = ConvSpec {
        cin,
        cout,
        kernel,
        stride: [1, stride, stride],
        pad_lo: [0, pad, pad],
        pad_hi: [0, pad, pad],
    };
    for (axis, from_last) in [(2usize, 0usize), (1, 1), (0, 2)] {
        if from_last >= rank {
            continue;
        }
        let (lo, hi) = axis_pad(from_last);
        spec.pad_lo[axis] = pad + lo;
        spec.pad_hi[axis] = pad + hi;
        spec.stride[axis] = stride;
    }
    let w = to_target(Tensor::from_vec(
        &spec.weight_shape(),
        weight_from_torch(&w_torch.data, cout, cin, kernel),
    )?)?;
    let b = if case.has("param.bias") {
        Some(plain(case, "param.bias")?)
    } else {
        None
    };
    let y = conv_forward(&spec, &x, &w, b.as_ref())?;
    let dy = gout(case, "y")?;
    let mut dw = zeros(&spec.weight_shape())?;
    let mut db = zeros(&[cout])?;
    let dx = conv_backward(
        &spec,
        Cow::Borrowed(&x),
        &w,
        &dy,
        true,
        Some(&mut dw),
        Some(&mut db),
    )?
    .ok_or_else(|| RuntimeError::Other("conv_backward returned no dx".into()))?;
    let mut out = Produced::new();
    out.insert("out.y".into(), activation_out(&y)?);
    out.insert("grad.in.x".into(), activation_out(&dx)?);
    out.insert(
        "grad.param.weight".into(),
        weight_to_torch(&dw.to_f32_vec(), cout, cin, kernel),
    );
    out.insert("grad.param.bias".into(), db.to_f32_vec());
    Ok(out)
}

/// Elementwise ops are layout-agnostic: tensors stay in the file's order.
fn pointwise(case: &GoldenCase, act: Activation) -> Result<Produced> {
    let x = plain(case, "in.x")?;
    let y = activation_forward(act, &x)?;
    let dx = activation_backward(act, &x, &plain(case, "gout.y")?)?;
    Ok(Produced::from([
        ("out.y".into(), y.to_f32_vec()),
        ("grad.in.x".into(), dx.to_f32_vec()),
    ]))
}

fn softmax(case: &GoldenCase) -> Result<Produced> {
    let y = softmax_forward(&plain(case, "in.x")?)?;
    let dx = softmax_backward(&y, &plain(case, "gout.y")?)?;
    Ok(Produced::from([
        ("out.y".into(), y.to_f32_vec()),
        ("grad.in.x".into(), dx.to_f32_vec()),
    ]))
}

/// Affine parameters and zeroed gradient buffers of a normalisation case.
fn norm_params(case: &GoldenCase) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let g = plain(case, "param.weight")?;
    let b = plain(case, "param.bias")?;
    let (dg, db) = (zeros(g.shape())?, zeros(b.shape())?);
    Ok((g, b, dg, db))
}

fn norm_outputs(y: Vec<f32>, dx: Vec<f32>, dg: &Tensor, db: &Tensor) -> Produced {
    Produced::from([
        ("out.y".into(), y),
        ("grad.in.x".into(), dx),
        ("grad.param.weight".into(), dg.to_f32_vec()),
        ("grad.param.bias".into(), db.to_f32_vec()),
    ])
}

fn group_norm(case: &GoldenCase) -> Result<Produced> {
    let groups = case.meta_f64("groups")? as usize;
    let eps = case.meta_f64_or("eps", 1e-5)?;
    let x = activation(case, "in.x")?;
    let (g, b, mut dg, mut db) = norm_params(case)?;
    let p = NormParams {
        gamma: &g,
        beta: &b,
    };
    let (y, saved) = group_norm_forward(&x, &p, groups, eps, false)?;
    let grads = NormGrads {
        dgamma: &mut dg,
        dbeta: &mut db,
    };
    let dx = group_norm_backward(
        &x,
        &p,
        groups,
        eps,
        false,
        &saved,
        // Owned: the in-place backward that training uses.
        Cow::Owned(gout(case, "y")?),
        Some(grads),
    )?;
    Ok(norm_outputs(
        activation_out(&y)?,
        activation_out(&dx)?,
        &dg,
        &db,
    ))
}

fn layer_norm(case: &GoldenCase) -> Result<Produced> {
    let eps = case.meta_f64_or("eps", 1e-5)?;
    let x = plain(case, "in.x")?;
    let (g, b, mut dg, mut db) = norm_params(case)?;
    let p = NormParams {
        gamma: &g,
        beta: &b,
    };
    let (y, saved) = layer_norm_forward(&x, &p, eps)?;
    let grads = NormGrads {
        dgamma: &mut dg,
        dbeta: &mut db,
    };
    let dx = layer_norm_backward(&x, &p, eps, &saved, &plain(case, "gout.y")?, Some(grads))?;
    Ok(norm_outputs(y.to_f32_vec(), dx.to_f32_vec(), &dg, &db))
}

fn batch_norm(case: &GoldenCase) -> Result<Produced> {
    let training = case
        .meta
        .get("training")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let eps = case.meta_f64_or("eps", 1e-5)?;
    let momentum = case.meta_f64_or("momentum", 0.1)?;
    let x = activation(case, "in.x")?;
    let (g, b, mut dg, mut db) = norm_params(case)?;
    let mut mean = plain(case, "param.running_mean")?;
    let mut var = plain(case, "param.running_var")?;
    let p = NormParams {
        gamma: &g,
        beta: &b,
    };
    let running = Running {
        mean: &mut mean,
        var: &mut var,
    };
    let (y, saved) = batch_norm_forward(&x, &p, running, training, eps, momentum)?;
    let grads = NormGrads {
        dgamma: &mut dg,
        dbeta: &mut db,
    };
    let dx = batch_norm_backward(
        &x,
        &p,
        training,
        eps,
        &saved,
        &gout(case, "y")?,
        Some(grads),
    )?;
    let mut out = norm_outputs(activation_out(&y)?, activation_out(&dx)?, &dg, &db);
    out.insert("buf.running_mean".into(), mean.to_f32_vec());
    out.insert("buf.running_var".into(), var.to_f32_vec());
    Ok(out)
}

fn linear(case: &GoldenCase) -> Result<Produced> {
    let x = plain(case, "in.x")?;
    let w = plain(case, "param.weight")?;
    let b = if case.has("param.bias") {
        Some(plain(case, "param.bias")?)
    } else {
        None
    };
    let y = linear_forward(&x, &w, b.as_ref())?;
    let mut dw = zeros(w.shape())?;
    let mut db = zeros(&[w.shape()[0]])?;
    let dx = linear_backward(
        &x,
        &w,
        &plain(case, "gout.y")?,
        true,
        Some(&mut dw),
        Some(&mut db),
    )?
    .ok_or_else(|| RuntimeError::Other("linear_backward returned no dx".into()))?;
    Ok(Produced::from([
        ("out.y".into(), y.to_f32_vec()),
        ("grad.in.x".into(), dx.to_f32_vec()),
        ("grad.param.weight".into(), dw.to_f32_vec()),
        ("grad.param.bias".into(), db.to_f32_vec()),
    ]))
}

fn upsample(case: &GoldenCase) -> Result<Produced> {
    let x = activation(case, "in.x")?;
    let y = upsample_nearest2_forward(&x)?;
    let dx = upsample_nearest2_backward(x.shape(), &gout(case, "y")?)?;
    Ok(Produced::from([
        ("out.y".into(), activation_out(&y)?),
        ("grad.in.x".into(), activation_out(&dx)?),
    ]))
}

fn resize(case: &GoldenCase) -> Result<Produced> {
    let size = case
        .meta_usizes("size")?
        .ok_or_else(|| RuntimeError::file(&case.path, "resize case without `size`"))?;
    let out_hw = match size[..] {
        [h, w] => [h, w],
        [s] => [s, s],
        _ => {
            return Err(RuntimeError::file(
                &case.path,
                format!("resize size {size:?} is not 2D"),
            ))
        }
    };
    let x = activation(case, "in.x")?;
    let y = resize_bicubic_aa_forward(&x, out_hw)?;
    let dx = resize_bicubic_aa_backward(x.shape(), &gout(case, "y")?)?;
    Ok(Produced::from([
        ("out.y".into(), activation_out(&y)?),
        ("grad.in.x".into(), activation_out(&dx)?),
    ]))
}

fn kl(case: &GoldenCase) -> Result<Produced> {
    let moments = activation(case, "in.moments")?;
    let dkl = plain(case, "gout.kl")?;
    // A per-(sample, W) output is the reference's 3D quirk; the gradient seed's rank says which.
    let keep_last_axis = dkl.rank() == 2;
    let kl = kl_forward(&moments, keep_last_axis)?;
    let dm = kl_backward(&moments, keep_last_axis, &dkl)?;
    Ok(Produced::from([
        ("out.kl".into(), kl.to_f32_vec()),
        ("grad.in.moments".into(), activation_out(&dm)?),
    ]))
}

fn hinge(case: &GoldenCase) -> Result<Produced> {
    let real = plain(case, "in.logits_real")?;
    let fake = plain(case, "in.logits_fake")?;
    let dloss = plain(case, "gout.loss")?
        .to_f32_vec()
        .first()
        .copied()
        .unwrap_or(1.0);
    let loss = hinge_forward(&real, &fake)?;
    let (dr, df) = hinge_backward(&real, &fake, dloss)?;
    Ok(Produced::from([
        ("out.loss".into(), vec![loss]),
        ("grad.in.logits_real".into(), dr.to_f32_vec()),
        ("grad.in.logits_fake".into(), df.to_f32_vec()),
    ]))
}
