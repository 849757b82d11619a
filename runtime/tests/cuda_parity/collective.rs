//! The all-reduce of data-parallel training over CUDA tensors (device chunks moved by peer
//! copies) against the same call on CPU tensors (host ring): the same bits. Ranks share
//! device 0 here, which runs the device path's packing, chunk copies and kernels; copies
//! between two devices need a second GPU.

use super::support::{device, randn, rng, GPU};
use medvae_runtime::collective::all_reduce_mean;
use medvae_runtime::{Device, Tensor};

#[test]
fn device_ring_gives_the_host_rings_bits() {
    if device().is_none() {
        return;
    }
    // Tensor sizes that cut chunks at odd places, a tensor smaller than the ring, and a
    // model-sized one.
    let shapes: [&[usize]; 5] = [&[3, 3, 64, 32], &[1], &[7], &[257, 3], &[512, 512]];
    for n in [2, 3, 4] {
        let cpu: Vec<Vec<Tensor>> = (0..n)
            .map(|rank| {
                shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let len = s.iter().product();
                        let v = randn(&mut rng((rank * 10 + i) as u64), len, 0.01);
                        Tensor::from_vec(s, v).expect("tensor")
                    })
                    .collect()
            })
            .collect();
        let mut gpu: Vec<Vec<Tensor>> = cpu
            .iter()
            .map(|ts| {
                ts.iter()
                    .map(|t| t.to_device(GPU).expect("upload"))
                    .collect()
            })
            .collect();
        let mut host = cpu.clone();
        all_reduce_mean(&mut host).expect("host ring");
        all_reduce_mean(&mut gpu).expect("device ring");
        for (rank, (g, h)) in gpu.iter().zip(&host).enumerate() {
            for (i, (g, h)) in g.iter().zip(h).enumerate() {
                assert_eq!(g.device(), GPU);
                assert_eq!(g.shape(), h.shape());
                let (gb, hb): (Vec<u32>, Vec<u32>) = (
                    g.to_f32_vec().iter().map(|v| v.to_bits()).collect(),
                    h.to_f32_vec().iter().map(|v| v.to_bits()).collect(),
                );
                let differ = gb.iter().zip(&hb).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ, 0,
                    "{n} ranks, rank {rank}, tensor {i}: {differ} differ"
                );
            }
        }
        println!("all-reduce over {n} ranks on cuda:0: bit-identical to the host ring");
    }
    // A CPU rank with a CUDA rank takes the host path and returns each to its device.
    let a = vec![Tensor::from_vec(&[4], vec![1.0, 2.0, 3.0, 4.0]).expect("tensor")];
    let b = vec![Tensor::from_vec(&[4], vec![3.0, 2.0, 1.0, 0.0])
        .expect("tensor")
        .to_device(GPU)
        .expect("upload")];
    let mut mixed = vec![a, b];
    all_reduce_mean(&mut mixed).expect("mixed ring");
    assert_eq!(mixed[0][0].device(), Device::Cpu);
    assert_eq!(mixed[1][0].device(), GPU);
    assert_eq!(mixed[1][0].to_f32_vec(), vec![2.0; 4]);
}
