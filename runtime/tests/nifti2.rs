//! NIfTI-2 files (`tests/data/nifti2/`, written by nibabel from two bundled NIfTI-1 samples by
//! `make.py` there) read as their NIfTI-1 originals, whose preprocessing the golden cases pin
//! to the reference; and damaged NIfTI-2 headers, each an error naming the file.

use medvae_runtime::data::volume3d::{
    decode_nifti, load_ct_3d, load_mri_3d, read_nifti, read_nifti_array, read_nifti_descrip,
    VolumeError,
};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn nifti2(name: &str) -> PathBuf {
    repo().join("runtime/tests/data/nifti2").join(name)
}

fn sample(name: &str) -> PathBuf {
    repo().join("samples/3d").join(name)
}

/// The big-endian fixture: scl_slope 0.5, scl_inter -10, an extension, voxels at byte 576.
const ANATOMICAL: &str = "anatomical_las_i16be_n2.nii";
const CT: &str = "ct_small_vol_lps_i16_n2.nii.gz";

#[test]
fn nifti2_files_read_as_their_nifti1_originals() {
    // Big-endian, scaled: the stored integers are the original's.
    let two = read_nifti(&nifti2(ANATOMICAL)).expect("NIfTI-2 reads");
    let one = read_nifti(&sample("anatomical_las_i16be.nii")).expect("NIfTI-1 reads");
    assert_eq!(two.dims, one.dims);
    assert_eq!(two.affine, one.affine);
    let scaled: Vec<f32> = one.data.iter().map(|&v| v * 0.5 - 10.0).collect();
    assert_eq!(two.data, scaled);
    // MRI min-max normalisation undoes the scaling, up to rounding.
    let (a, b) = (
        load_mri_3d(&nifti2(ANATOMICAL)).unwrap(),
        load_mri_3d(&sample("anatomical_las_i16be.nii")).unwrap(),
    );
    assert_eq!(a.shape, b.shape);
    let worst = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "normalised volumes differ by {worst}");

    // Little-endian gzip, unscaled: the CT preprocessing gives the same bytes.
    let (a, b) = (
        load_ct_3d(&nifti2(CT)).unwrap(),
        load_ct_3d(&sample("ct_small_vol_lps_i16.nii.gz")).unwrap(),
    );
    assert_eq!((a.shape, &a.data), (b.shape, &b.data));
    let array = read_nifti_array(&nifti2(CT)).unwrap();
    assert_eq!(array.shape, vec![48, 40, 24]);
    assert_eq!(
        array.affine,
        read_nifti(&sample("ct_small_vol_lps_i16.nii.gz"))
            .unwrap()
            .affine
            .into()
    );
    // The description is read from the first 540 bytes of the stream alone.
    assert_eq!(read_nifti_descrip(&nifti2(CT)).unwrap(), array.descrip);
}

fn raw(name: &str) -> Vec<u8> {
    std::fs::read(nifti2(name)).unwrap()
}

/// Set the 8-byte big-endian field at `at` of the anatomical fixture.
fn with_i64(at: usize, v: i64) -> Vec<u8> {
    let mut b = raw(ANATOMICAL);
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    b
}

/// The error `bytes` decode to, which must name the file.
fn error_of(bytes: &[u8]) -> String {
    let path = Path::new("damaged_n2.nii");
    match decode_nifti(path, bytes) {
        Ok(v) => panic!("decoded {:?} instead of an error", v.dims),
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("damaged_n2.nii: "), "{text}");
            if let VolumeError::Io { .. } = e {
                panic!("not a format error: {text}");
            }
            text
        }
    }
}

#[test]
fn damaged_nifti2_headers_are_errors_naming_the_file() {
    let good = raw(ANATOMICAL);
    assert!(decode_nifti(Path::new("ok.nii"), &good).is_ok());

    let short = error_of(&good[..400]);
    assert!(
        short.contains("shorter than a NIfTI-2 header (540)"),
        "{short}"
    );
    let cut = error_of(&good[..good.len() - 1]);
    assert!(cut.contains("truncated"), "{cut}");

    let mut pair = good.clone();
    pair[4..8].copy_from_slice(b"ni2\0");
    assert!(error_of(&pair).contains("header-only"));
    let mut magic = good.clone();
    magic[4..8].copy_from_slice(b"n+1\0");
    assert!(error_of(&magic).contains("magic"));
    let mut eol = good.clone();
    eol[8..12].copy_from_slice(b"\n\n\x1a\n");
    assert!(error_of(&eol).contains("text-mode"));

    assert!(error_of(&with_i64(16, 0)).contains("dim[0] = 0"));
    assert!(error_of(&with_i64(16, 9)).contains("dim[0] = 9"));
    assert!(error_of(&with_i64(24, -3)).contains("dim[1] = -3"));
    let long = error_of(&with_i64(24, 40_000));
    assert!(long.contains("longer than 32767"), "{long}");
    // 4D with several volumes is refused as for NIfTI-1.
    let mut four = with_i64(16, 4);
    four[48..56].copy_from_slice(&2i64.to_be_bytes());
    assert!(
        error_of(&four).contains("33, 41, 25, 2"),
        "{}",
        error_of(&four)
    );

    let inside = error_of(&with_i64(168, 100));
    assert!(
        inside.contains("inside the header (minimum 544)"),
        "{inside}"
    );
    let huge = error_of(&with_i64(168, i64::MAX));
    assert!(huge.contains("vox_offset"), "{huge}");
    // An unsupported datatype (complex64) is named.
    let mut complex = good.clone();
    complex[12..14].copy_from_slice(&32i16.to_be_bytes());
    assert!(error_of(&complex).contains("complex64"));
}

#[test]
fn a_zero_vox_offset_means_right_after_the_header() {
    // The CT fixture has no extension: its voxels start at 544, which offset 0 also means.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw(CT)[..]), &mut bytes)
        .unwrap();
    assert_eq!(i64::from_le_bytes(bytes[168..176].try_into().unwrap()), 544);
    let at_544 = decode_nifti(Path::new("ct.nii"), &bytes).unwrap();
    bytes[168..176].copy_from_slice(&0i64.to_le_bytes());
    let at_0 = decode_nifti(Path::new("ct.nii"), &bytes).unwrap();
    assert_eq!(at_0.data, at_544.data);
}
