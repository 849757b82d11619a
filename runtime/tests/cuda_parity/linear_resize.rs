//! Linear layers and bicubic resize at the tensor level on CUDA tensors against the same calls
//! on CPU tensors (the ops the BiomedCLIP tower of stage 2 needs), in every precision. The
//! precision is process-wide: like the rest of this suite, run with `--test-threads 1`.

use super::support::{assert_close, device, tensor_pair, GPU};
use medvae_runtime::cuda::ops::conv::ConvPrecision;
use medvae_runtime::cuda::registry::set_precision;
use medvae_runtime::ops::linear::{linear_backward, linear_forward};
use medvae_runtime::ops::resample::{resize_bicubic_aa_backward, resize_bicubic_aa_forward};
use medvae_runtime::Tensor;

#[test]
fn linear_op_matches_cpu_in_every_precision() {
    if device().is_none() {
        return;
    }
    // [batch, tokens, features] as the ViT feeds it: 2 x 197 tokens, 768 -> 96 features.
    let (x, gx) = tensor_pair(&[2, 197, 768], 1, 1.0);
    let (w, gw) = tensor_pair(&[96, 768], 2, 0.05);
    let (b, gb) = tensor_pair(&[96], 3, 0.1);
    let (dy, gdy) = tensor_pair(&[2, 197, 96], 4, 1.0);
    let y = linear_forward(&x, &w, Some(&b)).expect("cpu");
    let (mut dw, mut db) = (
        Tensor::from_vec(&[96, 768], vec![0.5; 96 * 768]).unwrap(),
        Tensor::from_vec(&[96], vec![0.5; 96]).unwrap(),
    );
    let dx = linear_backward(&x, &w, &dy, true, Some(&mut dw), Some(&mut db))
        .expect("cpu")
        .expect("dx");
    for (prec, tol) in [
        (ConvPrecision::Fp32, 1e-5),
        (ConvPrecision::Tf32, 5e-3),
        (ConvPrecision::Bf16, 3e-2),
    ] {
        set_precision(prec);
        let gy = linear_forward(&gx, &gw, Some(&gb)).expect("gpu");
        assert_eq!(gy.device(), GPU);
        assert_close(
            &format!("linear op {prec:?} forward"),
            &gy.to_f32_vec(),
            &y.to_f32_vec(),
            tol,
        );
        let (mut gdw, mut gdb) = (
            Tensor::from_vec(&[96, 768], vec![0.5; 96 * 768])
                .unwrap()
                .to_device(GPU)
                .unwrap(),
            Tensor::from_vec(&[96], vec![0.5; 96])
                .unwrap()
                .to_device(GPU)
                .unwrap(),
        );
        let gdx = linear_backward(&gx, &gw, &gdy, true, Some(&mut gdw), Some(&mut gdb))
            .expect("gpu")
            .expect("dx");
        for (what, got, want, t) in [
            ("dx", &gdx, &dx, tol),
            ("dweight", &gdw, &dw, tol),
            ("dbias", &gdb, &db, 1e-5),
        ] {
            assert_close(
                &format!("linear op {prec:?} {what}"),
                &got.to_f32_vec(),
                &want.to_f32_vec(),
                t,
            );
        }
        // Frozen weight: only dx, nothing accumulated.
        let only_dx = linear_backward(&gx, &gw, &gdy, true, None, None)
            .expect("gpu")
            .expect("dx");
        assert_close(
            &format!("linear op {prec:?} dx alone"),
            &only_dx.to_f32_vec(),
            &dx.to_f32_vec(),
            tol,
        );
    }
    set_precision(ConvPrecision::Fp32);
}

#[test]
fn resize_op_matches_cpu() {
    if device().is_none() {
        return;
    }
    // Down (the ViT's 224² input from a 256² image), up, and one axis unchanged.
    for (shape, out_hw) in [
        ([2, 256, 256, 3], [224, 224]),
        ([1, 40, 30, 3], [64, 48]),
        ([1, 32, 50, 2], [32, 20]),
    ] {
        let (x, gx) = tensor_pair(&shape, 5, 1.0);
        let y = resize_bicubic_aa_forward(&x, out_hw).expect("cpu");
        let gy = resize_bicubic_aa_forward(&gx, out_hw).expect("gpu");
        assert_eq!(gy.device(), GPU);
        let tag = format!("resize op {shape:?} -> {out_hw:?}");
        assert_close(
            &format!("{tag} forward"),
            &gy.to_f32_vec(),
            &y.to_f32_vec(),
            1e-5,
        );
        let (dy, gdy) = tensor_pair(y.shape(), 6, 1.0);
        let dx = resize_bicubic_aa_backward(&shape, &dy).expect("cpu");
        let gdx = resize_bicubic_aa_backward(&shape, &gdy).expect("gpu");
        assert_close(
            &format!("{tag} backward"),
            &gdx.to_f32_vec(),
            &dx.to_f32_vec(),
            1e-5,
        );
    }
}
