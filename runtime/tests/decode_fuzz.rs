//! Deterministic mutation testing of the PNG and NIfTI (-1 and -2) decode paths (what `data prepare` runs on
//! every file): truncations, byte flips, chunk and header fields set to edge values, over the
//! real sample files. Every mutant must decode or return an error; a panic fails the test and
//! the input is saved under the system temp folder for reproduction.
//!
//! This is the stable-toolchain companion of the coverage-guided `decode_image` fuzz target
//! (fuzz/fuzz_targets/decode_image.rs). `MEDVAE_FUZZ_SCALE=N` multiplies the iteration counts.

use flate2::read::MultiGzDecoder;
use medvae_runtime::data::image2d::{decode_png, preprocess_2d, Preprocess2d};
use medvae_runtime::data::volume3d::{
    crop_foreground, decode_nifti, normalise, ras_orientation, reorient, Modality,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

fn scale() -> usize {
    std::env::var("MEDVAE_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn read(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("sample gunzip");
        out
    } else {
        raw
    }
}

/// Everything `prepare` (and the inference loaders) run after a PNG decodes.
fn run_png(bytes: &[u8]) {
    let path = Path::new("mutant.png");
    if let Ok(img) = decode_png(bytes, path) {
        let _ = preprocess_2d(&img, &Preprocess2d::inference(true), path);
        if img.height.saturating_mul(img.width) <= 256 * 256 {
            let p = Preprocess2d {
                resize_to: Some([24, 40]),
                merge_channels: false,
            };
            let _ = preprocess_2d(&img, &p, path);
        }
    }
}

/// Everything the 3D loaders run after a NIfTI decodes.
fn run_nifti(bytes: &[u8]) {
    let path = Path::new("mutant.nii");
    if let Ok(nii) = decode_nifti(path, bytes) {
        if let Ok(o) = ras_orientation(&nii.affine) {
            let vol = reorient(&nii.data, nii.dims, &o);
            for modality in [Modality::Ct, Modality::Mri] {
                let mut v = vol.clone();
                if normalise(&mut v.data, modality, path).is_ok() {
                    let _ = crop_foreground(&v, 16, path);
                }
            }
        }
    }
}

/// Run `f` on `input`; on a panic save the input and fail naming it.
fn check(what: &str, i: usize, input: &[u8], f: fn(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let saved = std::env::temp_dir().join(format!("medvae-decode-crash-{what}-{i}.bin"));
        let _ = std::fs::write(&saved, input);
        panic!(
            "{what} mutant {i} panicked; input saved to {}",
            saved.display()
        );
    }
}

/// Edge values for integer header fields.
const EDGE_I16: [i16; 9] = [0, 1, -1, 2, 3, 4, 8, i16::MAX, i16::MIN];
/// Edge values for float header fields.
const EDGE_F32: [f32; 11] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-30,
    1e30,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
];

/// A header field a mutation may set: its offset, its width in bytes, and whether it is a
/// float (else a signed integer).
type Field = (usize, usize, bool);

/// NIfTI-1 header fields: dim[0..8], datatype, bitpix, pixdim[0..8], vox_offset, scl_slope,
/// scl_inter, qform_code, sform_code, quatern_b/c/d, qoffset_x/y/z, srow_x/y/z.
fn nifti_fields() -> Vec<Field> {
    let mut f: Vec<Field> = (0..8).map(|i| (40 + 2 * i, 2, false)).collect();
    f.extend([(70, 2, false), (72, 2, false)]);
    f.extend((0..8).map(|i| (76 + 4 * i, 4, true)));
    f.extend([(108, 4, true), (112, 4, true), (116, 4, true)]);
    f.extend([(252, 2, false), (254, 2, false)]);
    f.extend((0..6).map(|i| (256 + 4 * i, 4, true)));
    f.extend((0..12).map(|i| (280 + 4 * i, 4, true)));
    f
}

/// `nifti` (an int16 NIfTI-1 file) with its dimensions set to `dims` and its voxel data cut
/// to fit them.
fn shrink_i16_nifti(nifti: &[u8], dims: [i16; 3]) -> Vec<u8> {
    let big_endian = nifti[0..4] == 348i32.to_be_bytes();
    let mut m = nifti.to_vec();
    for (i, d) in dims.iter().enumerate() {
        let b = if big_endian {
            d.to_be_bytes()
        } else {
            d.to_le_bytes()
        };
        m[42 + 2 * i..44 + 2 * i].copy_from_slice(&b);
    }
    let off = [m[108], m[109], m[110], m[111]];
    let off = if big_endian {
        f32::from_be_bytes(off)
    } else {
        f32::from_le_bytes(off)
    };
    let voxels: usize = dims.iter().map(|&d| d as usize).product();
    m.truncate(off as usize + 2 * voxels);
    m
}

fn mutate_nifti(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let big = seed.len() >= 4 && seed[0..4] == 348i32.to_be_bytes();
    mutate_header(seed, rng, &nifti_fields(), 400, big)
}

/// One mutation of a file with a fixed header: a truncation, byte flips in its first
/// `flip_span` bytes, or 1 to 3 of `fields` set to edge values (in the header's byte order).
fn mutate_header(
    seed: &[u8],
    rng: &mut ChaCha8Rng,
    fields: &[Field],
    flip_span: usize,
    big: bool,
) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.gen_range(0..4) {
        0 => m.truncate(rng.gen_range(0..=m.len())),
        1 => {
            for _ in 0..rng.gen_range(1..=8) {
                let at = rng.gen_range(0..m.len().clamp(1, flip_span));
                if let Some(b) = m.get_mut(at) {
                    *b = rng.gen();
                }
            }
        }
        _ => {
            for _ in 0..rng.gen_range(1..=3) {
                let (off, width, is_float) = fields[rng.gen_range(0..fields.len())];
                let mut bytes = if is_float {
                    let v = if rng.gen_bool(0.7) {
                        EDGE_F32[rng.gen_range(0..EDGE_F32.len())] as f64
                    } else {
                        rng.gen_range(-1e4f64..1e4)
                    };
                    match width {
                        4 => (v as f32).to_le_bytes().to_vec(),
                        _ => v.to_le_bytes().to_vec(),
                    }
                } else {
                    let v = match (rng.gen_bool(0.7), width) {
                        (true, 2) => EDGE_I16[rng.gen_range(0..EDGE_I16.len())] as i64,
                        (true, _) => EDGE_I64[rng.gen_range(0..EDGE_I64.len())],
                        (false, _) => rng.gen::<i16>() as i64,
                    };
                    v.to_le_bytes()[..width].to_vec()
                };
                if big {
                    bytes.reverse();
                }
                if off + width <= m.len() {
                    m[off..off + width].copy_from_slice(&bytes);
                }
            }
        }
    }
    m
}

/// The PNG CRC-32 (ISO-HDLC) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Set IHDR fields to edge values and fix the chunk CRC, so the mutant gets past the CRC
/// check into header validation and decoding.
fn mutate_ihdr(m: &mut [u8], rng: &mut ChaCha8Rng) {
    if m.len() < 33 || &m[12..16] != b"IHDR" {
        return;
    }
    match rng.gen_range(0..4) {
        0 => {
            let v: u32 = [0, 1, 2, 7, 8192, 65535, 1 << 24, u32::MAX][rng.gen_range(0..8)];
            let at = if rng.gen() { 16 } else { 20 };
            m[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        1 => m[24] = [0, 1, 2, 3, 4, 5, 8, 16, 32][rng.gen_range(0..9)],
        2 => m[25] = [0, 1, 2, 3, 4, 5, 6, 7, 8][rng.gen_range(0..9)],
        _ => m[26 + rng.gen_range(0..3)] = rng.gen_range(0..3),
    }
    let crc = crc32(&m[12..29]);
    m[29..33].copy_from_slice(&crc.to_be_bytes());
}

fn mutate_png(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.gen_range(0..4) {
        0 => m.truncate(rng.gen_range(0..=m.len())),
        1 => {
            for _ in 0..rng.gen_range(1..=8) {
                let at = rng.gen_range(0..m.len().max(1));
                if let Some(b) = m.get_mut(at) {
                    *b = rng.gen();
                }
            }
        }
        2 => mutate_ihdr(&mut m, rng),
        _ => {
            // splice: duplicate or drop a random range (shifts chunk boundaries)
            let a = rng.gen_range(0..m.len().max(1));
            let b = rng.gen_range(a..=m.len());
            if rng.gen() {
                let copy = m[a..b].to_vec();
                m.splice(b..b, copy);
            } else {
                m.drain(a..b);
            }
        }
    }
    m
}

fn sample_pngs() -> Vec<Vec<u8>> {
    let dir = samples().join("2d");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples/2d")
        .chain(std::fs::read_dir(dir.join("derived")).expect("samples/2d/derived"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 6,
        "expected the sample PNGs, found {paths:?}"
    );
    paths.iter().map(|p| read(p)).collect()
}

#[test]
fn mutated_pngs_never_panic() {
    let seeds = sample_pngs();
    for seed in &seeds {
        // the unmutated seeds decode (so the mutants start from valid files)
        decode_png(seed, Path::new("seed.png")).expect("sample PNG decodes");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
    let n = 1500 * scale();
    let start = Instant::now();
    for i in 0..n {
        let seed = &seeds[i % seeds.len()];
        let mut m = mutate_png(seed, &mut rng);
        if rng.gen_bool(0.3) {
            m = mutate_png(&m, &mut rng);
        }
        check("png", i, &m, run_png);
    }
    eprintln!("{n} PNG mutants in {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn mutated_niftis_never_panic() {
    let dir = samples().join("3d");
    // Real headers (big- and little-endian, LAS and LPS affines) over the first voxels of
    // each volume cut to 9 x 7 x 5, so that every mutant decodes quickly.
    let seeds: Vec<Vec<u8>> = ["anatomical_las_i16be.nii", "ct_small_vol_lps_i16.nii.gz"]
        .iter()
        .map(|f| shrink_i16_nifti(&read(&dir.join(f)), [9, 7, 5]))
        .collect();
    for seed in &seeds {
        decode_nifti(Path::new("seed.nii"), seed).expect("sample NIfTI decodes");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0002);
    let n = 4000 * scale();
    let start = Instant::now();
    for i in 0..n {
        let seed = &seeds[i % seeds.len()];
        let mut m = mutate_nifti(seed, &mut rng);
        if rng.gen_bool(0.3) {
            m = mutate_nifti(&m, &mut rng);
        }
        check("nifti", i, &m, run_nifti);
    }
    eprintln!(
        "{n} NIfTI mutants in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// NIfTI-2 header fields (offset, width in bytes, is_float): datatype, bitpix, dim[0..8],
/// pixdim[0..8], vox_offset, scl_slope, scl_inter, qform_code, sform_code, quatern_b/c/d,
/// qoffset_x/y/z, srow_x/y/z.
fn nifti2_fields() -> Vec<Field> {
    let mut f = vec![(12, 2, false), (14, 2, false)];
    f.extend((0..8).map(|i| (16 + 8 * i, 8, false)));
    f.extend((0..8).map(|i| (104 + 8 * i, 8, true)));
    f.extend([(168, 8, false), (176, 8, true), (184, 8, true)]);
    f.extend([(344, 4, false), (348, 4, false)]);
    f.extend((0..6).map(|i| (352 + 8 * i, 8, true)));
    f.extend((0..12).map(|i| (400 + 8 * i, 8, true)));
    f
}

/// Edge values for NIfTI-2's 64-bit integer fields (dims, vox_offset).
const EDGE_I64: [i64; 12] = [
    0,
    1,
    -1,
    3,
    8,
    544,
    32_767,
    32_768,
    1 << 24,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// `nifti` (an int16 NIfTI-2 file) with its dimensions set to `dims` and its voxels cut to fit.
fn shrink_i16_nifti2(nifti: &[u8], dims: [i64; 3]) -> Vec<u8> {
    let big = nifti[0..4] == 540i32.to_be_bytes();
    let mut m = nifti.to_vec();
    for (i, d) in dims.iter().enumerate() {
        let b = if big {
            d.to_be_bytes()
        } else {
            d.to_le_bytes()
        };
        m[24 + 8 * i..32 + 8 * i].copy_from_slice(&b);
    }
    let off: [u8; 8] = m[168..176].try_into().unwrap();
    let off = if big {
        i64::from_be_bytes(off)
    } else {
        i64::from_le_bytes(off)
    };
    m.truncate(off as usize + 2 * dims.iter().product::<i64>() as usize);
    m
}

fn mutate_nifti2(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let big = seed.len() >= 4 && seed[0..4] == 540i32.to_be_bytes();
    mutate_header(seed, rng, &nifti2_fields(), 600, big)
}

#[test]
fn mutated_nifti2_files_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nifti2");
    // Big-endian with an extension and scaling, little-endian gzip: cut to 9 x 7 x 5.
    let seeds: Vec<Vec<u8>> = [
        "anatomical_las_i16be_n2.nii",
        "ct_small_vol_lps_i16_n2.nii.gz",
    ]
    .iter()
    .map(|f| shrink_i16_nifti2(&read(&dir.join(f)), [9, 7, 5]))
    .collect();
    for seed in &seeds {
        decode_nifti(Path::new("seed.nii"), seed).expect("NIfTI-2 seed decodes");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0003);
    let n = 4000 * scale();
    for i in 0..n {
        let mut m = mutate_nifti2(&seeds[i % seeds.len()], &mut rng);
        if rng.gen_bool(0.3) {
            m = mutate_nifti2(&m, &mut rng);
        }
        check("nifti2", i, &m, run_nifti);
    }
    // Every cut through the header and the first voxels is an error.
    for len in 0..700 {
        let r = catch_unwind(|| decode_nifti(Path::new("cut.nii"), &seeds[0][..len]).is_err());
        assert_eq!(r.ok(), Some(true), "NIfTI-2 cut at {len}");
    }
}

#[test]
fn every_truncation_of_a_png_and_a_nifti_header_is_an_error() {
    let png = read(&samples().join("2d/mr_slice_u8.png"));
    // Cuts inside the image data must fail; a missing IEND trailer may be accepted (as
    // Pillow does), but never panic.
    let iend = png
        .windows(4)
        .rposition(|w| w == b"IEND")
        .expect("IEND chunk")
        - 4;
    for len in 0..png.len() {
        let r = catch_unwind(|| decode_png(&png[..len], Path::new("cut.png")).is_err());
        assert!(r.is_ok(), "PNG cut at {len} panicked");
        if len < iend {
            assert_eq!(
                r.ok(),
                Some(true),
                "PNG cut at {len} of {} bytes",
                png.len()
            );
        }
    }
    let nii = read(&samples().join("3d/anatomical_las_i16be.nii"));
    for len in (0..600).chain([nii.len() - 1]) {
        let r = catch_unwind(|| decode_nifti(Path::new("cut.nii"), &nii[..len]).is_err());
        assert_eq!(
            r.ok(),
            Some(true),
            "NIfTI cut at {len} of {} bytes",
            nii.len()
        );
    }
}

/// Regression: an IHDR claiming a huge image made the decoder allocate the whole output
/// buffer (1 TiB here) and abort the process; it must be an error naming the file.
#[test]
fn huge_ihdr_dimensions_are_an_error_not_an_abort() {
    let seed = read(&samples().join("2d/derived/mr_slice_rgba_rot180.png"));
    for (width, height) in [(u32::MAX, 64u32), (60_000, 60_000), (1 << 24, 1 << 24)] {
        let mut m = seed.clone();
        m[16..20].copy_from_slice(&width.to_be_bytes());
        m[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&m[12..29]);
        m[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_png(&m, Path::new("huge.png")).expect_err("huge image accepted");
        assert!(err.to_string().contains("huge.png"), "{err}");
    }
}
