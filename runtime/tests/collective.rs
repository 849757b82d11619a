//! The tensor-level all-reduce of data-parallel training, on CPU tensors: it equals the ring
//! over the packed values, keeps shapes and devices, and refuses ranks that do not match.

use medvae_runtime::collective::{all_reduce_mean, ring_all_reduce_mean};
use medvae_runtime::{Device, Tensor};

fn rank_tensors(rank: usize, shapes: &[&[usize]]) -> Vec<Tensor> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let n: usize = shape.iter().product();
            let v = (0..n)
                .map(|j| ((j * 31 + i * 7 + rank * 101) as f32 * 0.113).sin() * (1 + j % 4) as f32)
                .collect();
            Tensor::from_vec(shape, v).unwrap()
        })
        .collect()
}

const SHAPES: &[&[usize]] = &[&[3, 3, 4, 2], &[1], &[5], &[0], &[2, 7]];

#[test]
fn tensors_get_the_packed_rings_bits() {
    for n in [2, 3, 5] {
        let mut ranks: Vec<Vec<Tensor>> = (0..n).map(|r| rank_tensors(r, SHAPES)).collect();
        let mut packed: Vec<Vec<f32>> = ranks
            .iter()
            .map(|ts| ts.iter().flat_map(|t| t.to_f32_vec()).collect())
            .collect();
        ring_all_reduce_mean(&mut packed).unwrap();
        all_reduce_mean(&mut ranks).unwrap();
        for (rank, tensors) in ranks.iter().enumerate() {
            let got: Vec<u32> = tensors
                .iter()
                .flat_map(|t| t.to_f32_vec())
                .map(f32::to_bits)
                .collect();
            let want: Vec<u32> = packed[rank].iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "n {n} rank {rank}");
            for (t, shape) in tensors.iter().zip(SHAPES) {
                assert_eq!(t.shape(), *shape);
                assert_eq!(t.device(), Device::Cpu);
            }
        }
        // And the bits are the mean, not merely the same on every rank.
        let originals: Vec<Vec<f32>> = (0..n)
            .map(|r| {
                rank_tensors(r, SHAPES)
                    .iter()
                    .flat_map(|t| t.to_f32_vec())
                    .collect()
            })
            .collect();
        for (i, got) in packed[0].iter().enumerate() {
            let mean = originals.iter().map(|o| o[i] as f64).sum::<f64>() / n as f64;
            let scale = originals.iter().map(|o| o[i].abs() as f64).sum::<f64>();
            assert!((*got as f64 - mean).abs() <= 1e-6 * scale, "n {n} [{i}]");
        }
    }
}

#[test]
fn mismatched_ranks_are_refused_by_name() {
    let mut ranks = vec![rank_tensors(0, SHAPES), rank_tensors(1, &SHAPES[..4])];
    let err = all_reduce_mean(&mut ranks).unwrap_err().to_string();
    assert!(
        err.contains("rank 1 holds 4 tensors, rank 0 holds 5"),
        "{err}"
    );
    let mut ranks = vec![rank_tensors(0, SHAPES), rank_tensors(1, SHAPES)];
    ranks[1][2] = Tensor::from_vec(&[6], vec![0.0; 6]).unwrap();
    let err = all_reduce_mean(&mut ranks).unwrap_err().to_string();
    assert!(
        err.contains("tensor 2 of rank 1 is [6], rank 0's is [5]"),
        "{err}"
    );
}

#[test]
fn one_rank_is_left_alone() {
    let mut ranks = vec![rank_tensors(0, SHAPES)];
    let before: Vec<Vec<f32>> = ranks[0].iter().map(|t| t.to_f32_vec()).collect();
    all_reduce_mean(&mut ranks).unwrap();
    let after: Vec<Vec<f32>> = ranks[0].iter().map(|t| t.to_f32_vec()).collect();
    assert_eq!(before, after);
}
