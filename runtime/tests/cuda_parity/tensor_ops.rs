//! The tensor-level op API on CUDA tensors against the same calls on CPU tensors: device
//! dispatch, copy-on-write of shared device buffers, channel split/concat through strided
//! copies, the Gaussian sample (with `deps`) and the L1 loss read back to the host.

use super::support::{assert_close, device, tensor_pair, GPU};
use medvae_runtime::ops::activation::{activation_backward, activation_forward, Activation};
use medvae_runtime::ops::elementwise::{
    add, concat_last, gaussian_sample_backward, gaussian_sample_forward, scaled_add_assign,
    split_last,
};
use medvae_runtime::ops::loss::{l1_mean_backward, l1_mean_forward};
use medvae_runtime::Tensor;
use std::borrow::Cow;

#[test]
fn tensors_round_trip_and_copy_on_write() {
    if device().is_none() {
        return;
    }
    let (cpu, gpu) = tensor_pair(&[2, 3, 5, 4], 1, 1.0);
    assert_eq!(gpu.device(), GPU);
    assert_eq!(
        gpu.to_f32_vec(),
        cpu.to_f32_vec(),
        "upload/download is exact"
    );
    assert!(
        gpu.f32s("host view").is_err(),
        "a CUDA tensor has no host slice"
    );
    // A clone shares the buffer; writing one must not change the other.
    let mut written = gpu.clone();
    scaled_add_assign(&mut written, &gpu, 2.0).expect("axpy");
    assert_eq!(
        gpu.to_f32_vec(),
        cpu.to_f32_vec(),
        "the clone's write leaked"
    );
    let tripled: Vec<f32> = cpu.to_f32_vec().iter().map(|v| v * 3.0).collect();
    assert_close("copy-on-write axpy", &written.to_f32_vec(), &tripled, 1e-6);
    let z = Tensor::zeros_on(&[7], GPU).expect("zeros");
    assert_eq!(z.to_f32_vec(), vec![0.0; 7]);
    // Mixed devices are an error, not a silent copy.
    assert!(add(&cpu, &gpu).is_err());
}

#[test]
fn channel_split_concat_and_pointwise_match_cpu() {
    if device().is_none() {
        return;
    }
    for (shape, c0) in [(vec![2, 4, 6, 3], 1), (vec![1, 3, 4, 5, 8], 4)] {
        let (cpu, gpu) = tensor_pair(&shape, 2, 1.0);
        let (a, b) = split_last(&cpu, c0).expect("cpu split");
        let (ga, gb) = split_last(&gpu, c0).expect("gpu split");
        assert_eq!(ga.to_f32_vec(), a.to_f32_vec(), "split head {shape:?}");
        assert_eq!(gb.to_f32_vec(), b.to_f32_vec(), "split tail {shape:?}");
        let joined = concat_last(&gb, &ga).expect("gpu concat");
        let want = concat_last(&b, &a).expect("cpu concat");
        assert_eq!(joined.shape(), want.shape());
        assert_eq!(joined.to_f32_vec(), want.to_f32_vec(), "concat {shape:?}");
        let y = activation_forward(Activation::Silu, &gpu).expect("silu");
        let dy = activation_backward(Activation::Silu, &gpu, &gpu).expect("silu bwd");
        assert_close(
            &format!("silu via tensors {shape:?}"),
            &y.to_f32_vec(),
            &activation_forward(Activation::Silu, &cpu)
                .unwrap()
                .to_f32_vec(),
            1e-6,
        );
        assert_close(
            &format!("silu backward via tensors {shape:?}"),
            &dy.to_f32_vec(),
            &activation_backward(Activation::Silu, &cpu, &cpu)
                .unwrap()
                .to_f32_vec(),
            1e-6,
        );
    }
}

#[test]
fn gaussian_sample_and_l1_match_cpu() {
    if device().is_none() {
        return;
    }
    let (moments, gm) = tensor_pair(&[2, 4, 4, 6], 3, 1.0);
    let (eps, ge) = tensor_pair(&[2, 4, 4, 3], 4, 1.0);
    let (dz, gdz) = tensor_pair(&[2, 4, 4, 3], 5, 1.0);
    let z = gaussian_sample_forward(&moments, &eps).unwrap();
    let gz = gaussian_sample_forward(&gm, &ge).unwrap();
    assert_close("gaussian sample z", &gz.to_f32_vec(), &z.to_f32_vec(), 1e-6);
    let (dm, de) = gaussian_sample_backward(&moments, &eps, &dz).unwrap();
    let (gdm, gde) = gaussian_sample_backward(&gm, &ge, &gdz).unwrap();
    assert_close(
        "gaussian sample dmoments",
        &gdm.to_f32_vec(),
        &dm.to_f32_vec(),
        1e-6,
    );
    assert_close(
        "gaussian sample deps",
        &gde.to_f32_vec(),
        &de.to_f32_vec(),
        1e-6,
    );
    let l = l1_mean_forward(&z, &eps).unwrap();
    let gl = l1_mean_forward(&gz, &ge).unwrap();
    assert_close("l1 mean", &[gl], &[l], 1e-5);
    let da = l1_mean_backward(&z, &eps, 0.5).unwrap();
    let gda = l1_mean_backward(&gz, &ge, 0.5).unwrap();
    assert_close(
        "l1 mean backward",
        &gda.to_f32_vec(),
        &da.to_f32_vec(),
        1e-6,
    );
}

/// Spatial attention through the tensor API: FP32 takes the flash kernels, TF32/BF16 the
/// tensor-core GEMM path (materialised probabilities). Both against the CPU kernels. One test,
/// because the CUDA precision is process-wide.
#[test]
fn attention_paths_match_cpu() {
    use medvae_runtime::ops::attention::{attention_backward, attention_forward};
    use medvae_runtime::set_cuda_precision;
    if device().is_none() {
        return;
    }
    for (prec, tol) in [("fp32", 1e-4), ("tf32", 5e-3), ("bf16", 3e-2)] {
        set_cuda_precision(prec).expect("precision");
        for shape in [vec![2, 8, 8, 64], vec![1, 4, 4, 4, 32]] {
            let c = *shape.last().unwrap();
            let scale = (c as f64).powf(-0.5);
            let (q, gq) = tensor_pair(&shape, 11, 1.0);
            let (k, gk) = tensor_pair(&shape, 12, 1.0);
            let (v, gv) = tensor_pair(&shape, 13, 1.0);
            let (d_o, gdo) = tensor_pair(&shape, 14, 1.0);
            let (o, saved) = attention_forward(&q, &k, &v, scale).unwrap();
            let (go, gsaved) = attention_forward(&gq, &gk, &gv, scale).unwrap();
            assert_eq!(
                gsaved.device_probs.is_some(),
                prec != "fp32",
                "{prec} must take the {} path",
                if prec == "fp32" { "flash" } else { "GEMM" }
            );
            let what = format!("attention {prec} {shape:?}");
            assert_close(&format!("{what} o"), &go.to_f32_vec(), &o.to_f32_vec(), tol);
            let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &saved, &d_o, scale).unwrap();
            let (gdq, gdk, gdv) =
                attention_backward(&gq, &gk, &gv, &go, &gsaved, &gdo, scale).unwrap();
            assert_close(
                &format!("{what} dq"),
                &gdq.to_f32_vec(),
                &dq.to_f32_vec(),
                tol,
            );
            assert_close(
                &format!("{what} dk"),
                &gdk.to_f32_vec(),
                &dk.to_f32_vec(),
                tol,
            );
            assert_close(
                &format!("{what} dv"),
                &gdv.to_f32_vec(),
                &dv.to_f32_vec(),
                tol,
            );
        }
    }
    set_cuda_precision("fp32").expect("precision");
}

/// The tensor-level convolution backward on CUDA (the data gradient allocated after the weight
/// gradient) against the CPU, with and without each gradient, in every precision.
#[test]
fn conv_backward_op_matches_cpu_with_every_gradient_subset() {
    use medvae_runtime::cuda::ops::conv::ConvPrecision;
    use medvae_runtime::cuda::registry::set_precision;
    use medvae_runtime::ops::conv::{conv_backward, ConvSpec};
    if device().is_none() {
        return;
    }
    // 16 -> 24 channels (the streamed BF16 kernels), and 3 -> 8 with stride 2 (staged).
    for (spec, x_shape) in [
        (ConvSpec::square_2d(16, 24, 3, 1, 1), [2, 20, 12, 16]),
        (ConvSpec::square_2d(3, 8, 3, 2, 1), [2, 17, 13, 3]),
    ] {
        let (x, gx) = tensor_pair(&x_shape, 1, 1.0);
        let (w, gw) = tensor_pair(&spec.weight_shape(), 2, 0.2);
        let out = [
            x_shape[0],
            x_shape[1].div_ceil(spec.stride[1]),
            x_shape[2].div_ceil(spec.stride[2]),
            spec.cout,
        ];
        let (dy, gdy) = tensor_pair(&out, 3, 1.0);
        for (prec, tol) in [
            (ConvPrecision::Fp32, 1e-4),
            (ConvPrecision::Tf32, 5e-3),
            (ConvPrecision::Bf16, 3e-2),
        ] {
            set_precision(prec);
            for (need_dx, with_dw, with_db) in [
                (true, true, true),
                (true, false, false),
                (false, true, true),
                (true, true, false),
            ] {
                let what =
                    format!("conv op {spec:?} {prec:?} dx {need_dx} dw {with_dw} db {with_db}");
                let (mut dw, mut gdw) = tensor_pair(&spec.weight_shape(), 4, 0.1);
                let (mut db, mut gdb) = tensor_pair(&[spec.cout], 5, 0.1);
                let dx = conv_backward(
                    &spec,
                    Cow::Borrowed(&x),
                    &w,
                    &dy,
                    need_dx,
                    with_dw.then_some(&mut dw),
                    with_db.then_some(&mut db),
                )
                .expect("cpu");
                // Both ways of handing x over: a share the backward releases between the
                // weight and the data gradient (a clone here, so gx itself stays), or a borrow.
                let gpu_x = if need_dx && with_dw {
                    Cow::Owned(gx.clone())
                } else {
                    Cow::Borrowed(&gx)
                };
                let gdx = conv_backward(
                    &spec,
                    gpu_x,
                    &gw,
                    &gdy,
                    need_dx,
                    with_dw.then_some(&mut gdw),
                    with_db.then_some(&mut gdb),
                )
                .expect("gpu");
                assert_eq!(dx.is_some(), gdx.is_some(), "{what}");
                if let (Some(dx), Some(gdx)) = (dx, gdx) {
                    assert_eq!(gdx.device(), GPU);
                    assert_eq!(gdx.shape(), dx.shape());
                    assert_close(
                        &format!("{what}: dx"),
                        &gdx.to_f32_vec(),
                        &dx.to_f32_vec(),
                        tol,
                    );
                }
                assert_close(
                    &format!("{what}: dw"),
                    &gdw.to_f32_vec(),
                    &dw.to_f32_vec(),
                    tol,
                );
                assert_close(
                    &format!("{what}: db"),
                    &gdb.to_f32_vec(),
                    &db.to_f32_vec(),
                    1e-4,
                );
            }
        }
        set_precision(ConvPrecision::Fp32);
    }
}
