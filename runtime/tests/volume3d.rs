//! 3D NIfTI preprocessing against the reference:
//! * every `preprocess/load_*_3d*` golden case (MONAI/nibabel output of medvae's loaders on real
//!   volumes: big-endian int16 `.nii`, gzip float32, an LPS int16 CT);
//! * extra references in `tests/data/volume3d/` (made by `gen_refs.py` there with MONAI): oblique
//!   and permuted sforms, qform-only with qfac -1, no xform (base affine), scl_slope/inter,
//!   int8/uint8/uint16/int32-BE/float64, a trailing singleton 4th dimension, a CT box needing
//!   zero padding;
//! * bad input: each an error naming the file.
//!
//! Data: `$MEDVAE_DATA` (default `<repo>/../shared/data`), goldens `$MEDVAE_GOLDEN` (default
//! the `golden` folder beside the data folder).

use medvae_runtime::data::volume3d::{
    crop_origin, load_ct_3d, load_ct_3d_finetune, load_mri_3d, load_mri_3d_finetune, load_volume,
    read_nifti, Modality, Volume, VolumeError,
};
use medvae_runtime::golden::GoldenCase;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    std::env::var_os("MEDVAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

fn golden_dir() -> PathBuf {
    std::env::var_os("MEDVAE_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir().join("../golden"))
}

fn extra_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/volume3d")
}

/// A temporary folder of one test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-volume3d-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

/// Relative error ‖a − ref‖ / ‖ref‖ in f64.
fn rel_err(a: &[f32], r: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(r)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = r.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn check(vol: &Volume, case: &GoldenCase) {
    let img = case.tensor("img").expect("img tensor");
    assert_eq!(img.shape.len(), 4, "{}", case.path.display());
    assert_eq!(img.shape[0], 1);
    assert_eq!(
        vol.shape.to_vec(),
        img.shape[1..].to_vec(),
        "shape of {}",
        case.path.display()
    );
    assert!(vol.data.iter().all(|v| v.is_finite()));
    let e = rel_err(&vol.data, &img.data);
    assert!(e <= 1e-4, "{}: relative error {e:e}", case.path.display());
}

#[test]
fn golden_preprocess_cases() {
    let dir = golden_dir().join("preprocess");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.starts_with("load_mri_3d") || name.starts_with("load_ct_3d"))
                && name.ends_with(".safetensors")
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 6,
        "expected the 3D golden cases in {}",
        dir.display()
    );
    for path in cases {
        let case = GoldenCase::load(&path).expect("golden case loads");
        let loader = case.meta_str("loader").expect("loader").to_string();
        let file = case.meta_str("file").expect("file");
        // `file` is relative to the folder holding `golden/`; data may have moved, so resolve
        // the part below `data/` against the data folder.
        let file = data_dir().join(file.strip_prefix("data/").unwrap_or(file));
        // Finetune goldens are the identity crop (every axis <= 64): any seed gives it.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let vol = match loader.as_str() {
            "load_mri_3d" => load_mri_3d(&file),
            "load_ct_3d" => load_ct_3d(&file),
            "load_mri_3d_finetune" => load_mri_3d_finetune(&file, &mut rng),
            "load_ct_3d_finetune" => load_ct_3d_finetune(&file, &mut rng),
            other => panic!("{}: unknown loader {other}", path.display()),
        }
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&vol, &case);
    }
}

#[test]
fn extra_reference_cases() {
    let dir = extra_dir();
    let mut n = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/data/volume3d")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    entries.sort();
    for path in entries {
        let case = GoldenCase::load(&path).expect("reference loads");
        let file = dir.join(case.meta_str("file").expect("file"));
        let modality = match case.meta_str("modality") {
            Some("ct") => Modality::Ct,
            _ => Modality::Mri,
        };
        let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
        let vol = if name.ends_with("__infer.safetensors") {
            match modality {
                Modality::Mri => load_mri_3d(&file),
                Modality::Ct => load_ct_3d(&file),
            }
        } else {
            load_volume(&file, modality)
        }
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&vol, &case);
        n += 1;
    }
    assert!(n >= 14, "expected 14 extra reference cases, found {n}");
}

#[test]
fn big_endian_and_gzip_files_are_what_the_goldens_say() {
    let be = data_dir().join("3d/anatomical_las_i16be.nii");
    let bytes = std::fs::read(&be).expect("read");
    // sizeof_hdr = 348 stored big-endian
    assert_eq!(
        &bytes[..4],
        &348i32.to_be_bytes(),
        "{} is big-endian",
        be.display()
    );
    assert_eq!(read_nifti(&be).expect("read BE").dims, [33, 41, 25]);

    let gz = data_dir().join("3d/stat_las_f32.nii.gz");
    assert_eq!(
        &std::fs::read(&gz).expect("read")[..2],
        &[0x1f, 0x8b],
        "gzip magic"
    );
    assert_eq!(read_nifti(&gz).expect("read gz").dims, [53, 63, 46]);
}

#[test]
fn finetune_crop_of_a_large_volume_is_a_window_of_it() {
    let path = data_dir().join("3d/mni152_t1_ras_u8.nii.gz");
    let full = load_volume(&path, Modality::Mri).expect("mni152");
    assert_eq!(full.shape, [197, 233, 189]);
    for seed in 0..4 {
        let crop = load_mri_3d_finetune(&path, &mut ChaCha8Rng::seed_from_u64(seed)).expect("crop");
        assert_eq!(crop.shape, [64, 64, 64]);
        let origin = crop_origin(full.shape, [64; 3], &mut ChaCha8Rng::seed_from_u64(seed));
        for a in 0..3 {
            assert!(
                origin[a] >= 0 && origin[a] as usize + 64 <= full.shape[a],
                "origin {origin:?}"
            );
        }
        // every voxel equals the full volume at origin + offset (independent indexing)
        for (idx, &v) in crop.data.iter().enumerate().step_by(997) {
            let (i, j, k) = (idx / 4096, (idx / 64) % 64, idx % 64);
            let (a, b, c) = (
                origin[0] as usize + i,
                origin[1] as usize + j,
                origin[2] as usize + k,
            );
            assert_eq!(v, full.data[(a * 233 + b) * 189 + c]);
        }
    }
}

// ----------------------------------------------------------------------------- bad input

/// A minimal single-file NIfTI-1 (little-endian, identity sform) with the given raw voxel bytes.
fn nifti_bytes(dims: &[u16], datatype: i16, bitpix: i16, voxels: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[40..42].copy_from_slice(&(dims.len() as i16).to_le_bytes());
    for (i, &d) in dims.iter().enumerate() {
        h[42 + 2 * i..44 + 2 * i].copy_from_slice(&(d as i16).to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for (i, p) in [1.0f32, 1.0, 1.0, 1.0].iter().enumerate() {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&p.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes());
    h[254..256].copy_from_slice(&1i16.to_le_bytes()); // sform_code
    for (row, off) in [280usize, 296, 312].iter().enumerate() {
        let mut r = [0f32; 4];
        r[row] = 1.0;
        for (i, v) in r.iter().enumerate() {
            h[off + 4 * i..off + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(voxels);
    h
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn assert_names(err: &VolumeError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    assert_eq!(err.path(), path);
}

#[test]
fn truncated_and_corrupt_gzip_are_errors_naming_the_file() {
    let dir = scratch("gz");
    let good = std::fs::read(data_dir().join("3d/stat_las_f32.nii.gz")).expect("read");

    let truncated = dir.path().join("truncated.nii.gz");
    std::fs::write(&truncated, &good[..good.len() * 3 / 5]).expect("write");
    let err = read_nifti(&truncated).expect_err("truncated gzip must fail");
    assert!(matches!(err, VolumeError::Gzip { .. }), "{err}");
    assert_names(&err, &truncated);

    let corrupt = dir.path().join("corrupt.nii.gz");
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &bytes).expect("write");
    let err = read_nifti(&corrupt).expect_err("corrupt gzip must fail");
    assert!(matches!(err, VolumeError::Gzip { .. }), "{err}");
    assert_names(&err, &corrupt);
}

#[test]
fn truncated_nii_and_short_header_are_errors() {
    let dir = scratch("trunc");
    let good = std::fs::read(data_dir().join("3d/anatomical_las_i16be.nii")).expect("read");
    let truncated = dir.path().join("truncated.nii");
    std::fs::write(&truncated, &good[..good.len() - 1000]).expect("write");
    let err = load_volume(&truncated, Modality::Mri).expect_err("truncated");
    assert!(matches!(err, VolumeError::Truncated { .. }), "{err}");
    assert_names(&err, &truncated);

    let short = dir.path().join("short.nii");
    std::fs::write(&short, &good[..100]).expect("write");
    let err = read_nifti(&short).expect_err("short");
    assert!(matches!(err, VolumeError::Header { .. }), "{err}");
    assert_names(&err, &short);

    let garbage = dir.path().join("garbage.nii");
    std::fs::write(&garbage, vec![7u8; 2000]).expect("write");
    let err = read_nifti(&garbage).expect_err("garbage");
    assert!(matches!(err, VolumeError::Header { .. }), "{err}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = scratch("missing");
    let path = dir.path().join("nope.nii.gz");
    let err = load_mri_3d(&path).expect_err("missing");
    assert!(matches!(err, VolumeError::Io { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn nan_voxel_is_an_error_with_its_position() {
    let dir = scratch("nan");
    let mut values: Vec<f32> = (0..24).map(|v| v as f32).collect();
    // file order is i fastest: voxel (i=1, j=2, k=1) of dims [2, 3, 4]
    values[1 + 2 * (2 + 3)] = f32::NAN;
    let path = dir.path().join("nan.nii");
    std::fs::write(&path, nifti_bytes(&[2, 3, 4], 16, 32, &f32_bytes(&values))).expect("write");
    let err = load_volume(&path, Modality::Ct).expect_err("NaN");
    match &err {
        VolumeError::NonFinite { voxel, .. } => assert_eq!(*voxel, [1, 2, 1]),
        other => panic!("expected NonFinite, got {other}"),
    }
    assert_names(&err, &path);
}

#[test]
fn constant_volume_and_empty_foreground_are_errors() {
    let dir = scratch("const");
    let path = dir.path().join("const.nii");
    std::fs::write(
        &path,
        nifti_bytes(&[4, 4, 4], 16, 32, &f32_bytes(&[3.5; 64])),
    )
    .expect("write");
    let err = load_volume(&path, Modality::Mri).expect_err("constant");
    assert!(matches!(err, VolumeError::Constant { .. }), "{err}");
    assert_names(&err, &path);
    // CT has a fixed window, so a constant volume is fine for training; at inference a volume
    // with nothing above 0 HU has no foreground box.
    let vol = load_volume(&path, Modality::Ct).expect("CT constant is a valid volume");
    assert!(vol
        .data
        .iter()
        .all(|&v| (v - (3.5f32 + 1000.0) / 2000.0 * 2.0 + 1.0).abs() < 1e-6));
    let air = dir.path().join("air.nii");
    std::fs::write(
        &air,
        nifti_bytes(&[4, 4, 4], 16, 32, &f32_bytes(&[-1000.0; 64])),
    )
    .expect("write");
    let err = load_ct_3d(&air).expect_err("no foreground");
    assert!(matches!(err, VolumeError::NoForeground { .. }), "{err}");
    assert_names(&err, &air);
}

#[test]
fn four_d_with_several_volumes_and_complex_data_are_rejected() {
    let dir = scratch("dims");
    let path = dir.path().join("4d.nii");
    std::fs::write(
        &path,
        nifti_bytes(&[2, 2, 2, 2], 16, 32, &f32_bytes(&[1.0; 16])),
    )
    .expect("write");
    let err = read_nifti(&path).expect_err("4D");
    assert!(matches!(err, VolumeError::Dims { .. }), "{err}");
    assert_names(&err, &path);

    let flat = dir.path().join("2d.nii");
    std::fs::write(&flat, nifti_bytes(&[4, 4], 16, 32, &f32_bytes(&[1.0; 16]))).expect("write");
    assert!(matches!(read_nifti(&flat), Err(VolumeError::Dims { .. })));

    let complex = dir.path().join("complex.nii");
    std::fs::write(&complex, nifti_bytes(&[2, 2, 2], 32, 64, &[0u8; 64])).expect("write");
    let err = read_nifti(&complex).expect_err("complex");
    assert!(
        matches!(err, VolumeError::Datatype { code: 32, .. }),
        "{err}"
    );
}

#[test]
fn synthetic_orientation_and_scaling_are_exact() {
    // identity sform: RAS already; int16 with slope 2, inter 10; values checked by hand
    let dir = scratch("scale");
    let raw: Vec<i16> = (0..24).map(|v| v as i16 - 5).collect();
    let mut bytes = nifti_bytes(
        &[2, 3, 4],
        4,
        16,
        &raw.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
    );
    bytes[112..116].copy_from_slice(&2f32.to_le_bytes());
    bytes[116..120].copy_from_slice(&10f32.to_le_bytes());
    let path = dir.path().join("scaled.nii");
    std::fs::write(&path, &bytes).expect("write");
    let nii = read_nifti(&path).expect("read");
    let expect: Vec<f32> = raw.iter().map(|&r| r as f32 * 2.0 + 10.0).collect();
    assert_eq!(nii.data, expect);
    // RAS array order is C-order over (i, j, k): element (i, j, k) = file[i + 2 (j + 3 k)]
    let vol = medvae_runtime::data::volume3d::load_ras(&path).expect("ras");
    assert_eq!(vol.shape, [2, 3, 4]);
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(vol.data[(i * 3 + j) * 4 + k], expect[i + 2 * (j + 3 * k)]);
            }
        }
    }
}

/// `load_inference`'s affine places every voxel of the reoriented, cropped volume where its
/// file voxel is: for the bundled LAS and LPS samples, the world position of each output
/// voxel inside the image maps back (through the file's affine) to an integer file voxel
/// holding the same normalised value.
#[test]
fn inference_affine_maps_each_voxel_to_its_file_voxel() {
    use medvae_runtime::data::volume3d::{load_inference, normalise, read_nifti, Modality};
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/3d");
    for name in ["anatomical_las_i16be.nii", "ct_small_vol_lps_i16.nii.gz"] {
        let path = samples.join(name);
        let (vol, affine) = load_inference(&path, Modality::Mri).expect("load");
        let mut file = read_nifti(&path).expect("read");
        normalise(&mut file.data, Modality::Mri, &path).expect("normalise");
        let src = file.affine;
        // Solve src[:3,:3] · i = world − src[:3,3] by Cramer's rule.
        let det3 = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        let lin: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| src[r][c]));
        let det = det3(lin);
        let [d0, d1, d2] = file.dims;
        let mut checked = 0;
        for (n, &value) in vol.data.iter().enumerate().step_by(37) {
            let c = [
                n / (vol.shape[1] * vol.shape[2]),
                (n / vol.shape[2]) % vol.shape[1],
                n % vol.shape[2],
            ];
            let world: [f64; 3] = std::array::from_fn(|r| {
                (0..3).map(|k| affine[r][k] * c[k] as f64).sum::<f64>() + affine[r][3] - src[r][3]
            });
            let i: [f64; 3] = std::array::from_fn(|col| {
                let mut m = lin;
                for r in 0..3 {
                    m[r][col] = world[r];
                }
                det3(m) / det
            });
            for v in i {
                assert!((v - v.round()).abs() < 1e-4, "{name} {c:?} -> {i:?}");
            }
            let i = i.map(|v| v.round() as isize);
            if (0..3).all(|a| i[a] >= 0 && (i[a] as usize) < [d0, d1, d2][a]) {
                let at = i[0] as usize + d0 * (i[1] as usize + d1 * i[2] as usize);
                assert_eq!(file.data[at], value, "{name} {c:?} -> {i:?}");
                checked += 1;
            }
        }
        assert!(
            checked > 50,
            "{name}: only {checked} voxels inside the image"
        );
    }
}
