//! Tests of the tiled (flash-style) attention kernel:
//! * forward and backward against a naive f64 implementation that materialises the scores,
//!   over shapes that are below, at and off the tile sizes, with default and tiny tiles and
//!   every backward schedule;
//! * f64 central differences of the backward (dq, dk, dv);
//! * 9,216 tokens (the mid block of a 384² image through a 4× model) forward and backward,
//!   spot-checked row by row, under an allocator that records the largest allocation, to show
//!   that nothing of size tokens² is ever allocated;
//! * both engines (fast AVX2 f32 and portable) on the same inputs;
//! * MedVAE's `AttnBlock` (GroupNorm, 1×1 q/k/v convs, attention, projection, residual)
//!   rebuilt from kernels against the golden files, output and every gradient
//!   (`attention_support/attn_block.rs`);
//! * argument validation.

mod attention_support;
mod ops_support;

use attention_support::*;
use medvae_kernels::cpu::attention::*;
use medvae_kernels::KernelError;
use ops_support::{assert_grad, dot, rel_err, rng, to_f32, uniform};
use rayon::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

// ------------------------------------------------------------------ allocation watcher

/// The system allocator, remembering the largest single allocation since the last reset.
struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

fn dims(batch: usize, tokens: usize, dim: usize) -> AttentionDims {
    AttentionDims {
        batch,
        tokens,
        dim,
        scale: (dim as f64).powf(-0.5),
    }
}

/// Random q, k, v, d_o of a geometry; q is spread by `spread` to make the softmax peaked.
fn operands(d: &AttentionDims, seed: u64, spread: f64) -> [Vec<f64>; 4] {
    let mut r = rng(seed);
    let q = uniform(&mut r, d.len(), -spread, spread);
    let k = uniform(&mut r, d.len(), -1.5, 1.5);
    let v = uniform(&mut r, d.len(), -1.0, 1.0);
    let d_o = uniform(&mut r, d.len(), -1.0, 1.0);
    [q, k, v, d_o]
}

fn tiny_plan(backward: BackwardSchedule) -> AttentionPlan {
    AttentionPlan {
        query_tile: 5,
        key_tile: 8,
        backward,
        engine: Engine::Auto,
    }
}

const SCHEDULES: [BackwardSchedule; 5] = [
    BackwardSchedule::Auto,
    BackwardSchedule::Fused { partitions: 1 },
    BackwardSchedule::Fused { partitions: 2 },
    BackwardSchedule::Fused { partitions: 3 },
    BackwardSchedule::TwoPass,
];

/// Forward and backward of the kernel in f64 and in f32 against the naive reference.
fn check_against_naive(d: AttentionDims, plan: AttentionPlan, seed: u64, spread: f64) {
    let [q, k, v, d_o] = operands(&d, seed, spread);
    let dim = d.dim;
    let reference = per_batch(d.batch, [&q, &k, &v], |[q, k, v]| {
        let (o, lse) = naive_forward(q, k, v, dim, d.scale);
        vec![o, lse]
    });
    let grads = per_batch(d.batch, [&q, &k, &v, &d_o], |[q, k, v, g]| {
        naive_backward(q, k, v, g, dim, d.scale).to_vec()
    });
    let label = format!("{d:?} {plan:?}");
    // The floor for vanishing dq, dk: a fraction of dv's RMS (dv = Pᵀ·dO never vanishes).
    let dv_rms = (grads[2].iter().map(|g| g * g).sum::<f64>() / grads[2].len() as f64).sqrt();

    // f64: agreement to rounding.
    let (mut o, mut lse) = (vec![f64::NAN; d.len()], vec![f64::NAN; d.lse_len()]);
    attention_forward_with(&plan, &d, &q, &k, &v, &mut o, &mut lse).unwrap();
    assert!(
        f64_rel_err(&o, &reference[0]) < 1e-12,
        "{label}: f64 o {:e}",
        f64_rel_err(&o, &reference[0])
    );
    assert!(f64_rel_err(&lse, &reference[1]) < 1e-12, "{label}: f64 lse");
    let mut g64 = [
        vec![f64::NAN; d.len()],
        vec![f64::NAN; d.len()],
        vec![f64::NAN; d.len()],
    ];
    let [dq, dk, dv] = &mut g64;
    attention_backward_with(&plan, &d, &q, &k, &v, &o, &lse, &d_o, dq, dk, dv).unwrap();
    for (name, got, want) in [
        ("dq", &g64[0], &grads[0]),
        ("dk", &g64[1], &grads[1]),
        ("dv", &g64[2], &grads[2]),
    ] {
        let e = rel_err_floor(got, want, 1e-6 * dv_rms);
        assert!(e < 1e-11, "{label}: f64 {name} rel err {e:e}");
    }

    // f32, both engines (the fast one where the CPU has it): within the golden tolerance
    // (in practice ~1e-6).
    let [q32, k32, v32, do32] = [&q, &k, &v, &d_o].map(|x| to_f32(x));
    for engine in [Engine::Auto, Engine::Portable] {
        let plan = AttentionPlan { engine, ..plan };
        let label = format!("{label} {engine:?}");
        let (mut o32, mut lse32) = (vec![f32::NAN; d.len()], vec![f32::NAN; d.lse_len()]);
        attention_forward_with(&plan, &d, &q32, &k32, &v32, &mut o32, &mut lse32).unwrap();
        let e = rel_err(&o32, &to_f32(&reference[0]));
        assert!(e < 1e-5, "{label}: f32 o rel err {e:e}");
        let e = rel_err(&lse32, &to_f32(&reference[1]));
        assert!(e < 1e-6, "{label}: f32 lse rel err {e:e}");
        let mut g32 = [
            vec![f32::NAN; d.len()],
            vec![f32::NAN; d.len()],
            vec![f32::NAN; d.len()],
        ];
        let [dq, dk, dv] = &mut g32;
        attention_backward_with(&plan, &d, &q32, &k32, &v32, &o32, &lse32, &do32, dq, dk, dv)
            .unwrap();
        for (name, got, want) in [
            ("dq", &g32[0], &grads[0]),
            ("dk", &g32[1], &grads[1]),
            ("dv", &g32[2], &grads[2]),
        ] {
            let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
            let e = rel_err_floor(&got, want, 1e-2 * dv_rms);
            assert!(e < 2e-5, "{label}: f32 {name} rel err {e:e}");
        }
    }
}

#[test]
fn matches_naive_default_tiles() {
    // Below one tile, off-multiple token counts, batch 2, dims 1/3/32/64.
    for (i, &(batch, tokens, dim)) in [
        (1, 1, 1),
        (2, 5, 3),
        (1, 37, 1),
        (2, 37, 32),
        (2, 130, 64),
        (1, 300, 3),
        (2, 300, 32),
        (1, 513, 64),
    ]
    .iter()
    .enumerate()
    {
        check_against_naive(
            dims(batch, tokens, dim),
            AttentionPlan::default(),
            10 + i as u64,
            2.0,
        );
    }
}

#[test]
fn matches_naive_tiny_tiles_every_schedule() {
    for (s, schedule) in SCHEDULES.into_iter().enumerate() {
        for (i, &(batch, tokens, dim)) in [
            (1, 1, 3),
            (2, 4, 1),
            (2, 23, 3),
            (1, 40, 32),
            (2, 41, 64),
            (2, 101, 3),
            (1, 150, 32),
        ]
        .iter()
        .enumerate()
        {
            check_against_naive(
                dims(batch, tokens, dim),
                tiny_plan(schedule),
                (100 * s + i) as u64,
                2.0,
            );
        }
    }
}

#[test]
fn peaked_softmax_with_late_maxima() {
    // Large scores and keys sorted so each query's maximum keeps moving to later key tiles:
    // the online rescaling must be exact.
    let d = dims(2, 77, 8);
    for schedule in [BackwardSchedule::Auto, BackwardSchedule::TwoPass] {
        check_against_naive(d, tiny_plan(schedule), 7, 12.0);
        check_against_naive(
            d,
            AttentionPlan {
                query_tile: 16,
                key_tile: 4,
                backward: schedule,
                engine: Engine::Auto,
            },
            8,
            12.0,
        );
    }
}

// ------------------------------------------------------------------ finite differences

#[test]
fn backward_matches_central_differences() {
    for (case, (d, plan)) in [
        (
            dims(2, 7, 3),
            tiny_plan(BackwardSchedule::Fused { partitions: 2 }),
        ),
        (dims(1, 11, 4), tiny_plan(BackwardSchedule::TwoPass)),
        (dims(2, 6, 1), AttentionPlan::default()),
        (
            dims(1, 9, 5),
            AttentionPlan {
                query_tile: 2,
                key_tile: 3,
                backward: BackwardSchedule::Fused { partitions: 3 },
                engine: Engine::Portable,
            },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let [q, k, v, gout] = operands(&d, 500 + case as u64, 1.5);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            let (mut o, mut lse) = (vec![0.0; d.len()], vec![0.0; d.lse_len()]);
            attention_forward_with(&plan, &d, q, k, v, &mut o, &mut lse).unwrap();
            dot(&o, &gout)
        };
        let (mut o, mut lse) = (vec![0.0; d.len()], vec![0.0; d.lse_len()]);
        attention_forward_with(&plan, &d, &q, &k, &v, &mut o, &mut lse).unwrap();
        let (mut dq, mut dk, mut dv) = (
            vec![f64::NAN; d.len()],
            vec![f64::NAN; d.len()],
            vec![f64::NAN; d.len()],
        );
        attention_backward_with(
            &plan, &d, &q, &k, &v, &o, &lse, &gout, &mut dq, &mut dk, &mut dv,
        )
        .unwrap();
        let tag = format!("attention {d:?} {plan:?}");
        assert_grad(&format!("{tag} dq"), &q, &dq, |p| loss(p, &k, &v));
        assert_grad(&format!("{tag} dk"), &k, &dk, |p| loss(&q, p, &v));
        assert_grad(&format!("{tag} dv"), &v, &dv, |p| loss(&q, &k, p));
    }
}

// ------------------------------------------------------------------ many tokens

#[test]
fn nine_thousand_tokens_without_quadratic_memory() {
    let d = dims(1, 9216, 64);
    let [q, k, v, d_o] = operands(&d, 42, 2.0);
    let [q32, k32, v32, do32] = [&q, &k, &v, &d_o].map(|x| to_f32(x));
    // Values the kernel sees, widened back, so the reference differs only by arithmetic.
    let [q, k, v, d_o] =
        [&q32, &k32, &v32, &do32].map(|x| x.iter().map(|&a| a as f64).collect::<Vec<_>>());
    let (mut o, mut lse) = (vec![0f32; d.len()], vec![0f32; d.lse_len()]);
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; d.len()],
        vec![0f32; d.len()],
        vec![0f32; d.len()],
    );

    LARGEST.store(0, Ordering::SeqCst);
    attention_forward(&d, &q32, &k32, &v32, &mut o, &mut lse).unwrap();
    attention_backward(
        &d, &q32, &k32, &v32, &o, &lse, &do32, &mut dq, &mut dk, &mut dv,
    )
    .unwrap();
    let largest = LARGEST.load(Ordering::SeqCst);
    let scores_bytes = d.tokens * d.tokens * 4;
    println!("largest allocation during forward+backward: {largest} bytes (scores would need {scores_bytes})");
    assert!(
        largest < scores_bytes / 16,
        "an allocation of {largest} bytes: tokens² memory?"
    );

    let (n, dim, scale) = (d.tokens, d.dim, d.scale);
    // Every row's log-sum-exp and D_r = Σ_j P_rj·(dO_r·v_j), needed for the key-side rows.
    let (lse64, delta): (Vec<f64>, Vec<f64>) = (0..n)
        .into_par_iter()
        .map(|r| {
            let (p, l) = softmax_lse(&score_row(&q, &k, dim, scale, r));
            let dor = &d_o[r * dim..(r + 1) * dim];
            let dr: f64 = p
                .iter()
                .zip(v.chunks_exact(dim))
                .map(|(pj, vj)| pj * dot4(dor, vj))
                .sum();
            (l, dr)
        })
        .unzip();
    let close = |what: &str, row: usize, got: &[f32], want: &[f64]| {
        let e = rel_err(got, &to_f32(want));
        assert!(e < 1e-4, "{what} row {row}: rel err {e:e}");
    };
    for i in [0, 1, 4097, 9215] {
        // Query side: o_i, lse_i, dq_i from row i of P.
        let (p, l) = softmax_lse(&score_row(&q, &k, dim, scale, i));
        assert!(
            (lse[i] as f64 - l).abs() < 1e-5 * l.abs().max(1.0),
            "lse row {i}"
        );
        let mut oi = vec![0.0; dim];
        let mut dqi = vec![0.0; dim];
        for (j, &pj) in p.iter().enumerate() {
            let dp = dot4(&d_o[i * dim..(i + 1) * dim], &v[j * dim..(j + 1) * dim]);
            for c in 0..dim {
                oi[c] += pj * v[j * dim + c];
                dqi[c] += pj * (dp - delta[i]) * k[j * dim + c] * scale;
            }
        }
        close("o", i, &o[i * dim..(i + 1) * dim], &oi);
        close("dq", i, &dq[i * dim..(i + 1) * dim], &dqi);
        // Key side (j = i): dk_j, dv_j from column j of P.
        let (mut dkj, mut dvj) = (vec![0.0; dim], vec![0.0; dim]);
        let rows: Vec<(f64, f64)> = (0..n)
            .into_par_iter()
            .map(|r| {
                let s = dot4(&q[r * dim..(r + 1) * dim], &k[i * dim..(i + 1) * dim]) * scale;
                let dp = dot4(&d_o[r * dim..(r + 1) * dim], &v[i * dim..(i + 1) * dim]);
                ((s - lse64[r]).exp(), dp)
            })
            .collect();
        for (r, &(pj, dp)) in rows.iter().enumerate() {
            for c in 0..dim {
                dvj[c] += pj * d_o[r * dim + c];
                dkj[c] += pj * (dp - delta[r]) * q[r * dim + c] * scale;
            }
        }
        close("dk", i, &dk[i * dim..(i + 1) * dim], &dkj);
        close("dv", i, &dv[i * dim..(i + 1) * dim], &dvj);
    }
}

// ------------------------------------------------------------------ engines

#[test]
fn fast_engine_is_dispatched_and_agrees_with_portable() {
    let d = dims(2, 203, 40);
    let [q, k, v, d_o] = operands(&d, 77, 2.0).map(|x| to_f32(&x));
    let run = |engine| {
        let plan = AttentionPlan {
            engine,
            ..AttentionPlan::default()
        };
        let (mut o, mut lse) = (vec![0f32; d.len()], vec![0f32; d.lse_len()]);
        attention_forward_with(&plan, &d, &q, &k, &v, &mut o, &mut lse).unwrap();
        let mut g = [
            vec![0f32; d.len()],
            vec![0f32; d.len()],
            vec![0f32; d.len()],
        ];
        let [dq, dk, dv] = &mut g;
        attention_backward_with(&plan, &d, &q, &k, &v, &o, &lse, &d_o, dq, dk, dv).unwrap();
        let [dq, dk, dv] = g;
        [o, lse, dq, dk, dv]
    };
    let (auto, portable) = (run(Engine::Auto), run(Engine::Portable));
    println!("fast engine available: {}", fast_engine_available());
    for (name, (a, p)) in ["o", "lse", "dq", "dk", "dv"]
        .iter()
        .zip(auto.iter().zip(&portable))
    {
        let e = rel_err(a, p);
        assert!(e < 1e-5, "{name}: engines differ by {e:e}");
        // Different summation orders: bitwise equality would mean Auto did not dispatch.
        if fast_engine_available() {
            assert_ne!(a, p, "{name}: Auto gave the portable result bit for bit");
        }
    }
}

// ------------------------------------------------------------------ validation

#[test]
fn bad_arguments_are_errors() {
    let d = dims(2, 5, 3);
    let ok = vec![0f32; d.len()];
    let short = vec![0f32; d.len() - 1];
    let lse = vec![0f32; d.lse_len()];
    let (mut o, mut l) = (vec![0f32; d.len()], vec![0f32; d.lse_len()]);
    let is_len = |r: Result<(), KernelError>, what: &str| match r {
        Err(KernelError::Length { what: w, .. }) => assert_eq!(w, what),
        other => panic!("{what}: expected a length error, got {other:?}"),
    };
    is_len(attention_forward(&d, &short, &ok, &ok, &mut o, &mut l), "q");
    is_len(attention_forward(&d, &ok, &short, &ok, &mut o, &mut l), "k");
    is_len(attention_forward(&d, &ok, &ok, &short, &mut o, &mut l), "v");
    is_len(
        attention_forward(&d, &ok, &ok, &ok, &mut o[1..], &mut l),
        "o",
    );
    is_len(
        attention_forward(&d, &ok, &ok, &ok, &mut o, &mut l[1..]),
        "lse",
    );
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; d.len()],
        vec![0f32; d.len()],
        vec![0f32; d.len()],
    );
    is_len(
        attention_backward(
            &d, &ok, &ok, &ok, &ok, &lse, &short, &mut dq, &mut dk, &mut dv,
        ),
        "d_o",
    );
    is_len(
        attention_backward(
            &d, &ok, &ok, &ok, &short, &lse, &ok, &mut dq, &mut dk, &mut dv,
        ),
        "o",
    );
    is_len(
        attention_backward(
            &d,
            &ok,
            &ok,
            &ok,
            &ok,
            &lse[1..],
            &ok,
            &mut dq,
            &mut dk,
            &mut dv,
        ),
        "lse",
    );
    is_len(
        attention_backward(
            &d,
            &ok,
            &ok,
            &ok,
            &ok,
            &lse,
            &ok,
            &mut dq[1..],
            &mut dk,
            &mut dv,
        ),
        "dq",
    );
    is_len(
        attention_backward(
            &d,
            &ok,
            &ok,
            &ok,
            &ok,
            &lse,
            &ok,
            &mut dq,
            &mut dk[1..],
            &mut dv,
        ),
        "dk",
    );
    is_len(
        attention_backward(
            &d,
            &ok,
            &ok,
            &ok,
            &ok,
            &lse,
            &ok,
            &mut dq,
            &mut dk,
            &mut dv[1..],
        ),
        "dv",
    );

    let is_geometry = |r: Result<(), KernelError>, why: &str| {
        assert!(
            matches!(r, Err(KernelError::Geometry { .. })),
            "{why}: expected a geometry error, got {r:?}"
        )
    };
    let empty: Vec<f32> = Vec::new();
    let (mut eo, mut el) = (Vec::new(), vec![0f32; 10]);
    is_geometry(
        attention_forward(
            &AttentionDims {
                batch: 2,
                tokens: 5,
                dim: 0,
                scale: 1.0,
            },
            &empty,
            &empty,
            &empty,
            &mut eo,
            &mut el,
        ),
        "dim 0",
    );
    let nan_scale = AttentionDims {
        scale: f64::NAN,
        ..d
    };
    is_geometry(
        attention_forward(&nan_scale, &ok, &ok, &ok, &mut o, &mut l),
        "NaN scale",
    );
    let huge = AttentionDims {
        batch: usize::MAX,
        tokens: 2,
        dim: 2,
        scale: 1.0,
    };
    is_geometry(
        attention_forward(&huge, &ok, &ok, &ok, &mut o, &mut l),
        "overflow",
    );
    for plan in [
        AttentionPlan {
            query_tile: 0,
            ..AttentionPlan::default()
        },
        AttentionPlan {
            key_tile: 0,
            ..AttentionPlan::default()
        },
        AttentionPlan {
            backward: BackwardSchedule::Fused { partitions: 0 },
            ..AttentionPlan::default()
        },
    ] {
        is_geometry(
            attention_forward_with(&plan, &d, &ok, &ok, &ok, &mut o, &mut l),
            "zero tile",
        );
        is_geometry(
            attention_backward_with(
                &plan, &d, &ok, &ok, &ok, &ok, &lse, &ok, &mut dq, &mut dk, &mut dv,
            ),
            "zero tile",
        );
    }

    // Nothing to do is not an error.
    let none = dims(0, 5, 3);
    attention_forward(
        &none,
        &empty,
        &empty,
        &empty,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .unwrap();
    let no_tokens = dims(2, 0, 3);
    attention_backward(
        &no_tokens,
        &empty,
        &empty,
        &empty,
        &empty,
        &empty,
        &empty,
        &mut [],
        &mut [],
        &mut [],
    )
    .unwrap();
}
