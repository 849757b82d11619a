//! Golden cases with an `op` in their metadata: single kernels, forward and backward.

use super::tensors::{activation, activation_out, plain};
use super::Produced;
use medvae_kernels::cpu::conv::{weight_from_torch, weight_to_torch};
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::ops::conv::{conv_backward, conv_forward, ConvSpec};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// Run an op case. `Ok(None)`: the op is not implemented.
pub fn run(case: &GoldenCase, device: Device) -> Result<Option<Produced>> {
    let op = case.meta_str("op").unwrap_or_default().to_string();
    device.ensure_available()?;
    let produced = match op.as_str() {
        "conv2d" => conv(case, 2)?,
        "conv3d" => conv(case, 3)?,
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
            format!("param.weight has shape {ws:?}, expected rank {} for conv{rank}d", rank + 2),
        ));
    }
    let (cout, cin) = (ws[0], ws[1]);
    let kernel = if rank == 2 { [1, ws[2], ws[3]] } else { [ws[2], ws[3], ws[4]] };
    let stride = case.meta_f64_or("stride", 1.0)? as usize;
    let pad = case.meta_f64_or("padding", 0.0)? as usize;
    // PyTorch's F.pad order is last axis first: (w_lo, w_hi, h_lo, h_hi[, d_lo, d_hi]).
    let pre = case
        .meta_usizes(if rank == 2 { "pre_pad_lrtb" } else { "pre_pad_lrtbfb" })?
        .unwrap_or_else(|| vec![0; 2 * rank]);
    if pre.len() != 2 * rank {
        return Err(RuntimeError::file(&case.path, format!("pre-pad {pre:?} needs {} entries", 2 * rank)));
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
    let w = Tensor::from_vec(&spec.weight_shape(), weight_from_torch(&w_torch.data, cout, cin, kernel))?;
    let b = if case.has("param.bias") { Some(plain(case, "param.bias")?) } else { None };
    let y = conv_forward(&spec, &x, &w, b.as_ref())?;
    let dy = gout(case, "y")?;
    let mut dw = Tensor::zeros(&spec.weight_shape());
    let mut db = Tensor::zeros(&[cout]);
    let dx = conv_backward(&spec, &x, &w, &dy, true, Some(&mut dw), Some(&mut db))?
        .ok_or_else(|| RuntimeError::Other("conv_backward returned no dx".into()))?;
    let mut out = Produced::new();
    out.insert("out.y".into(), activation_out(&y)?);
    out.insert("grad.in.x".into(), activation_out(&dx)?);
    out.insert("grad.param.weight".into(), weight_to_torch(&dw.to_f32_vec(), cout, cin, kernel));
    out.insert("grad.param.bias".into(), db.to_f32_vec());
    Ok(out)
}
