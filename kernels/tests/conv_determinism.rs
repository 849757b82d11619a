//! Weight and bias gradients are parallel reductions. For a given thread count they must come
//! out bit-for-bit the same on every run, whatever the scheduler does: training runs are
//! reproducible, and activation recomputation must replay the exact same gradients.

use medvae_kernels::cpu::conv::{
    conv_backward_weight_with, ConvAlgorithm, ConvGeometry, ConvScratch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn geometry(
    input: [usize; 3],
    cin: usize,
    cout: usize,
    k: [usize; 3],
    pad: [usize; 3],
) -> ConvGeometry {
    ConvGeometry {
        batch: 2,
        in_spatial: input,
        cin,
        cout,
        kernel: k,
        stride: [1, 1, 1],
        pad_lo: pad,
        pad_hi: pad,
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

#[test]
fn weight_and_bias_gradients_repeat_bit_for_bit() {
    let cases = [
        // 1×1 (the LoRA and attention projections), many pixels: the implicit GEMM reduction.
        (
            geometry([1, 48, 40], 16, 8, [1, 1, 1], [0, 0, 0]),
            ConvAlgorithm::Auto,
        ),
        // 3×3: Winograd under Auto, implicit GEMM when forced.
        (
            geometry([1, 36, 28], 8, 16, [1, 3, 3], [0, 1, 1]),
            ConvAlgorithm::Auto,
        ),
        (
            geometry([1, 36, 28], 8, 16, [1, 3, 3], [0, 1, 1]),
            ConvAlgorithm::ImplicitGemm,
        ),
        // 3D.
        (
            geometry([6, 10, 12], 4, 8, [3, 3, 3], [1, 1, 1]),
            ConvAlgorithm::Auto,
        ),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // More threads than cores, so tasks really are stolen and interleaved differently.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(5)
        .build()
        .unwrap();
    for (g, alg) in cases {
        let x = random(&mut rng, g.input_len());
        let dy = random(&mut rng, g.output_len());
        let run = |scratch: &mut ConvScratch<f32>| {
            let mut dw = vec![0f32; g.weight_len()];
            let mut db = vec![0f32; g.cout];
            pool.install(|| {
                conv_backward_weight_with(scratch, &g, &x, &dy, &mut dw, Some(&mut db)).unwrap()
            });
            (dw, db)
        };
        let mut shared = ConvScratch::with_algorithm(alg);
        let first = run(&mut shared);
        for attempt in 0..12 {
            let again = if attempt % 2 == 0 {
                run(&mut shared)
            } else {
                run(&mut ConvScratch::with_algorithm(alg))
            };
            assert!(
                first
                    .0
                    .iter()
                    .zip(&again.0)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} {alg:?}: weight gradient changed between runs (attempt {attempt})"
            );
            assert!(
                first
                    .1
                    .iter()
                    .zip(&again.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} {alg:?}: bias gradient changed between runs (attempt {attempt})"
            );
        }
    }
}
