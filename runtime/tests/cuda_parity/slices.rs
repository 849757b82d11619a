//! The slice batches of volumes (`ops::slices`, `slices.cu`) on CUDA tensors against the CPU:
//! every axis and grouping, non-cubic shapes, C = 1 and 3, writes at an image offset into a
//! shared batch, and the backward adding into an existing gradient. Pure data movement (and one
//! add per voxel and axis, in the CPU's order), so the results must be bit-identical.

use super::support::{assert_close, device, tensor_pair, GPU};
use medvae_runtime::ops::slices::{
    gather_slices, gather_slices_backward, gather_slices_into, scatter_add_slices,
    slice_batch_shape,
};

/// Volumes and the axis groups whose slices share a shape.
const CASES: &[(&[usize], &[&[usize]])] = &[
    (&[1, 16, 17, 18, 1], &[&[0], &[1], &[2]]),
    (&[2, 5, 5, 5, 3], &[&[0, 1, 2], &[2, 0], &[1]]),
    (&[2, 4, 6, 6, 3], &[&[1, 2], &[0]]),
    (&[3, 7, 3, 2, 1], &[&[0], &[1], &[2]]),
];

#[test]
fn slice_batches_match_cpu() {
    if device().is_none() {
        return;
    }
    for (k, &(shape, groups)) in CASES.iter().enumerate() {
        let (x_cpu, x_gpu) = tensor_pair(shape, 10 + k as u64, 1.0);
        for &axes in groups {
            let what = format!("{shape:?} axes {axes:?}");
            let (y_cpu, y_gpu) = (
                gather_slices(&x_cpu, axes).expect("cpu gather"),
                gather_slices(&x_gpu, axes).expect("gpu gather"),
            );
            assert_eq!(y_gpu.device(), GPU);
            assert_eq!(y_gpu.shape(), y_cpu.shape());
            assert_close(
                &format!("gather {what}"),
                &y_gpu.to_f32_vec(),
                &y_cpu.to_f32_vec(),
                0.0,
            );
            // Backward onto a non-zero gradient: it must add, not overwrite.
            let (g_cpu, g_gpu) = tensor_pair(y_cpu.shape(), 20 + k as u64, 1.0);
            let (mut dx_cpu, dx_gpu) = tensor_pair(shape, 30 + k as u64, 1.0);
            let mut dx_gpu_acc = dx_gpu.clone();
            gather_slices_backward(&g_cpu, axes, &mut dx_cpu).expect("cpu backward");
            gather_slices_backward(&g_gpu, axes, &mut dx_gpu_acc).expect("gpu backward");
            assert_close(
                &format!("backward {what}"),
                &dx_gpu_acc.to_f32_vec(),
                &dx_cpu.to_f32_vec(),
                0.0,
            );
            // Copy on write: the clone the gradient started from is unchanged.
            let start = tensor_pair(shape, 30 + k as u64, 1.0).0;
            assert_eq!(
                dx_gpu.to_f32_vec(),
                start.to_f32_vec(),
                "{what}: clone written"
            );
        }
    }
}

#[test]
fn one_axis_at_an_offset_leaves_the_rest_of_the_batch() {
    if device().is_none() {
        return;
    }
    let shape = [2, 6, 6, 4, 3];
    let (x_cpu, x_gpu) = tensor_pair(&shape, 41, 1.0);
    // Height slices [2·6, 6, 4, 3] at image 5 of a batch of 20.
    let batch = [20, 6, 4, 3];
    let (mut b_cpu, b_gpu) = tensor_pair(&batch, 42, 1.0);
    let mut b_gpu = b_gpu;
    gather_slices_into(&x_cpu, 1, &mut b_cpu, 5).expect("cpu");
    gather_slices_into(&x_gpu, 1, &mut b_gpu, 5).expect("gpu");
    assert_close(
        "gather axis 1 at image 5",
        &b_gpu.to_f32_vec(),
        &b_cpu.to_f32_vec(),
        0.0,
    );
    // And back from that offset into a gradient.
    let (mut dx_cpu, mut dx_gpu) = tensor_pair(&shape, 43, 1.0);
    scatter_add_slices(&b_cpu, 1, 5, &mut dx_cpu).expect("cpu");
    scatter_add_slices(&b_gpu, 1, 5, &mut dx_gpu).expect("gpu");
    assert_close(
        "scatter-add axis 1 from image 5",
        &dx_gpu.to_f32_vec(),
        &dx_cpu.to_f32_vec(),
        0.0,
    );
    // Out of range on the device is the same error as on the host.
    assert!(gather_slices_into(&x_gpu, 1, &mut b_gpu, 9).is_err());
    assert!(slice_batch_shape(&shape, &[0, 2]).is_err());
    // Mixed devices are refused.
    assert!(gather_slices_into(&x_cpu, 1, &mut b_gpu, 0).is_err());
}
