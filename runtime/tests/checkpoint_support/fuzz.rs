//! Deterministic mutation fuzzing of the checkpoint reader, run inside the normal test suite
//! (the coverage-guided target lives in fuzz/). Four generators, round-robin, until the time
//! budget is spent:
//! 1. byte-level mutations of whole fixture files (flips, truncations, insertions, splices),
//!    zip archives and legacy streams;
//! 2. mutations of a fixture's `data.pkl` alone, re-zipped, so they reach the unpickler;
//! 3. random opcode streams with plausible arguments;
//! 4. random well-formed state dicts with random tensor views over random storages, whose
//!    result is checked against a naive gather written here (values or the exact error).
//!
//! A panic anywhere fails the test; 1-3 only require "no panic, and errors name the file".

use std::time::{Duration, Instant};

use half::f16;
use medvae_runtime::checkpoint::{load_checkpoint_bytes, CheckpointError, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::pickle_writer::Pickle;
use super::{fixture, rezip, torch_zip, zip_records};

const SEEDS: &[&str] = &[
    "lightning_full.ckpt",
    "varied_protocol5.pt",
    "forbidden_custom_class.pt",
    "forbidden_os_system.ckpt",
];

/// Legacy (non-zip) streams: mutated as whole files only (they hold no zip records).
const LEGACY_SEEDS: &[&str] = &["legacy_wrapped.ckpt", "legacy_os_system.pt"];

fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..5) {
            0 if !bytes.is_empty() => {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] = rng.gen();
            }
            2 => {
                let cut = rng.gen_range(0..=bytes.len());
                bytes.truncate(cut);
            }
            3 => {
                let i = rng.gen_range(0..=bytes.len());
                let n = rng.gen_range(1..16);
                let chunk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                bytes.splice(i..i, chunk);
            }
            _ if bytes.len() > 2 => {
                // Duplicate a slice elsewhere: repeats opcodes with their arguments.
                let a = rng.gen_range(0..bytes.len());
                let b = rng.gen_range(a..bytes.len().min(a + 32));
                let chunk = bytes[a..b].to_vec();
                let at = rng.gen_range(0..=bytes.len());
                bytes.splice(at..at, chunk);
            }
            _ => {}
        }
    }
}

fn check_no_panic(bytes: &[u8]) {
    if let Err(e) = load_checkpoint_bytes(bytes, "fuzz.ckpt") {
        let msg = e.to_string();
        assert!(
            msg.starts_with("fuzz.ckpt: "),
            "error without file name: {msg}"
        );
    }
}

const OPCODES: &[u8] = b"(.NKJMGXTUBCdlt}])eaqhrjsu012cRbQ\x80\x81\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96IiopgLFSVP\x82\x97\xff";

fn random_opcodes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(0x80).op(rng.gen_range(0..7));
    for _ in 0..rng.gen_range(0..60) {
        let op = OPCODES[rng.gen_range(0..OPCODES.len())];
        match op {
            b'X' => {
                let s = ["storage", "state_dict", "cpu", "0", "w"][rng.gen_range(0..5)];
                p.str(s);
            }
            b'c' => {
                let (m, n) = [
                    ("torch._utils", "_rebuild_tensor_v2"),
                    ("torch", "FloatStorage"),
                    ("collections", "OrderedDict"),
                    ("torch._tensor", "_rebuild_from_type_v2"),
                    ("torch._utils", "_rebuild_parameter"),
                    ("_codecs", "encode"),
                    ("__builtin__", "set"),
                    ("some.module", "Thing"),
                ][rng.gen_range(0..8)];
                p.global(m, n);
            }
            _ => {
                p.op(op);
                let n = rng.gen_range(0..9);
                for _ in 0..n {
                    p.0.push(if rng.gen_bool(0.7) {
                        rng.gen_range(0..4)
                    } else {
                        rng.gen()
                    });
                }
            }
        }
    }
    p.op(b'.');
    p.0
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    F32,
    F16,
    I64,
}

/// Generator 4: a valid state dict of random views, checked against a naive gather.
fn structured_case(rng: &mut ChaCha8Rng) {
    let kinds = [Kind::F32, Kind::F16, Kind::I64];
    let storages: Vec<(Kind, Vec<u8>)> = (0..rng.gen_range(1..4))
        .map(|_| {
            let kind = kinds[rng.gen_range(0..3)];
            let elem = match kind {
                Kind::F32 => 4,
                Kind::F16 => 2,
                Kind::I64 => 8,
            };
            let n = rng.gen_range(0..48) * elem;
            (kind, (0..n).map(|_| rng.gen()).collect())
        })
        .collect();
    let mut p = Pickle::default();
    p.op(0x80).op(2).op(b'}').op(b'(');
    let mut tensors = Vec::new();
    for t in 0..rng.gen_range(1..5) {
        let s = rng.gen_range(0..storages.len());
        let rank = rng.gen_range(0..4);
        let shape: Vec<usize> = (0..rank).map(|_| rng.gen_range(0..5)).collect();
        let stride: Vec<usize> = (0..rank).map(|_| rng.gen_range(0..7)).collect();
        let offset = rng.gen_range(0..12);
        let (kind, bytes) = &storages[s];
        let (class, elem) = match kind {
            Kind::F32 => ("FloatStorage", 4),
            Kind::F16 => ("HalfStorage", 2),
            Kind::I64 => ("LongStorage", 8),
        };
        p.str(&format!("t{t}")).tensor_v2(
            class,
            &s.to_string(),
            bytes.len() / elem,
            offset,
            &shape,
            &stride,
        );
        tensors.push((format!("t{t}"), s, offset, shape, stride));
    }
    p.op(b'u').op(b'.');
    let records: Vec<(String, Vec<u8>)> = storages
        .iter()
        .enumerate()
        .map(|(i, (_, b))| (i.to_string(), b.clone()))
        .collect();
    let result = load_checkpoint_bytes(&torch_zip(p.0, &records), "gen.ckpt");

    // Naive reference: every multi-index, decomposed from the flat row-major index.
    let elem_size = |kind: &Kind| match kind {
        Kind::F32 => 4,
        Kind::F16 => 2,
        Kind::I64 => 8,
    };
    let naive_index = |flat: usize, offset: usize, shape: &[usize], stride: &[usize]| {
        let mut rem = flat;
        let mut at = offset;
        for d in (0..shape.len()).rev() {
            at += (rem % shape[d]) * stride[d];
            rem /= shape[d];
        }
        at
    };
    // The first out-of-bounds key in file order is the one reported.
    let first_out_of_bounds = tensors.iter().find(|(_, s, offset, shape, stride)| {
        let (kind, bytes) = &storages[*s];
        let numel: usize = shape.iter().product();
        (0..numel).any(|i| naive_index(i, *offset, shape, stride) >= bytes.len() / elem_size(kind))
    });
    if let Some((key, ..)) = first_out_of_bounds {
        match &result {
            Err(CheckpointError::StorageTooShort { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: expected StorageTooShort, got {other:?}"),
        }
        return;
    }
    let state = result.unwrap_or_else(|e| panic!("generated state dict: {e}"));
    for (key, s, offset, shape, stride) in &tensors {
        let (kind, bytes) = &storages[*s];
        let elem = elem_size(kind);
        let got = state.get(key).unwrap();
        assert_eq!(&got.shape, shape, "{key}");
        let at = |i: usize| {
            let j = naive_index(i, *offset, shape, stride);
            &bytes[j * elem..(j + 1) * elem]
        };
        match (&got.data, kind) {
            (TensorData::Float(v), Kind::F32) => {
                for (i, x) in v.iter().enumerate() {
                    let e = f32::from_le_bytes(at(i).try_into().unwrap());
                    assert!(
                        x.to_bits() == e.to_bits() || (x.is_nan() && e.is_nan()),
                        "{key}[{i}]"
                    );
                }
            }
            (TensorData::Float(v), Kind::F16) => {
                for (i, x) in v.iter().enumerate() {
                    let e = f16::from_le_bytes(at(i).try_into().unwrap()).to_f32();
                    assert!(
                        x.to_bits() == e.to_bits() || (x.is_nan() && e.is_nan()),
                        "{key}[{i}]"
                    );
                }
            }
            (TensorData::Int(v), Kind::I64) => {
                for (i, x) in v.iter().enumerate() {
                    assert_eq!(
                        *x,
                        i64::from_le_bytes(at(i).try_into().unwrap()),
                        "{key}[{i}]"
                    );
                }
            }
            _ => panic!("{key}: wrong value kind"),
        }
        assert_eq!(got.data.len(), shape.iter().product::<usize>(), "{key}");
    }
}

/// Runs the four generators round-robin for `budget`; deterministic sequence (fixed seed).
pub fn mutation_fuzz(budget: Duration) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6d65_6476_6165);
    let seeds: Vec<Vec<u8>> = SEEDS
        .iter()
        .chain(LEGACY_SEEDS)
        .map(|s| std::fs::read(fixture(s)).unwrap())
        .collect();
    let seed_records: Vec<Vec<(String, Vec<u8>)>> =
        SEEDS.iter().map(|s| zip_records(&fixture(s))).collect();
    let start = Instant::now();
    let mut runs = [0usize; 4];
    while start.elapsed() < budget {
        let which = runs.iter().sum::<usize>() % 4;
        runs[which] += 1;
        match which {
            0 => {
                let mut bytes = seeds[rng.gen_range(0..seeds.len())].clone();
                mutate(&mut rng, &mut bytes);
                check_no_panic(&bytes);
            }
            1 => {
                let mut records = seed_records[rng.gen_range(0..seed_records.len())].clone();
                if let Some((_, pkl)) = records.iter_mut().find(|(n, _)| n.ends_with("data.pkl")) {
                    mutate(&mut rng, pkl);
                }
                check_no_panic(&rezip(&records));
            }
            2 => {
                let storage = vec![("0".to_owned(), vec![0u8; 64])];
                check_no_panic(&torch_zip(random_opcodes(&mut rng), &storage));
            }
            _ => structured_case(&mut rng),
        }
    }
    eprintln!(
        "checkpoint mutation fuzz: {} file mutations, {} pickle mutations, {} opcode streams, \
         {} generated state dicts in {:?}",
        runs[0],
        runs[1],
        runs[2],
        runs[3],
        start.elapsed()
    );
    assert!(runs.iter().all(|&n| n > 0));
}
