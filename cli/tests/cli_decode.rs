//! `medvae-fast decode` end to end, through the real binary, on latents that `infer` wrote with
//! tiny random models: the reconstructions equal `infer --decode`'s, a file that is not z or
//! comes from another encoder is refused with the reason, and a latent from elsewhere (no
//! medvae-fast description) is decoded when its shape fits.

mod common;

use common::{
    descrip, gunzipped, mark_voxels, medvae, s, sample_folder, save_model, scratch, tiny_config,
    tiny_weights, EMBED, FACTOR,
};
use medvae_model::autoencoder::AutoencoderKL;
use medvae_model::layer::Parameters;
use medvae_model::layers::Init;
use medvae_runtime::data::volume3d::{read_nifti_array, write_nifti};
use std::path::Path;

const SLICES: [&str; 3] = ["ct_slice_u16.png", "mr_slice_u8.png", "mr_slice_rgb.png"];

fn infer(inp: &Path, out: &Path, weights: &Path, modality: &str, extra: &[&str]) {
    let mut args = vec!["infer", "-i", s(inp), "-o", s(out), "--weights", s(weights)];
    args.extend(["--modality", modality]);
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = medvae(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
}

fn decode(inp: &Path, out: &Path, weights: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "decode",
        "-i",
        s(inp),
        "-o",
        s(out),
        "--weights",
        s(weights),
    ];
    args.extend_from_slice(extra);
    medvae(&args)
}

/// 2D: `infer --latent z --decode` then `decode` on its folder gives the same reconstruction
/// files, byte for byte (description included); the reconstructions in the folder are skipped.
#[test]
fn decode_gives_infers_reconstructions_in_2d() {
    let t = scratch("decode-2d");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES);
    let z = t.path().join("z");
    infer(&inp, &z, &w, "xray", &["--latent", "z", "--decode"]);
    let stem = "mr_slice_u8";
    assert!(descrip(&z.join(format!("{stem}.nii.gz"))).starts_with("medvae-fast z e="));
    // z keeps both latent channels: [EMBED, 64 / FACTOR, 64 / FACTOR]
    let arr = read_nifti_array(&z.join(format!("{stem}.nii.gz"))).unwrap();
    assert_eq!(arr.shape, vec![EMBED, 64 / FACTOR, 64 / FACTOR]);

    let out = t.path().join("out");
    let (code, stdout, stderr) = decode(&z, &out, &w, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("6 file(s): 3 written, 0 failed, 3 not z"),
        "{stdout}"
    );
    assert_eq!(
        stderr.matches("(holds `decoded`, not z)").count(),
        3,
        "{stderr}"
    );
    for png in SLICES {
        let name = format!("{}_decoded.nii.gz", png.trim_end_matches(".png"));
        assert_eq!(
            gunzipped(&out.join(&name)),
            gunzipped(&z.join(&name)),
            "{name}"
        );
    }
    // One file to a named output.
    let one = t.path().join("one.nii.gz");
    let (code, _, stderr) = decode(&z.join(format!("{stem}.nii.gz")), &one, &w, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        gunzipped(&one),
        gunzipped(&z.join(format!("{stem}_decoded.nii.gz")))
    );
}

/// The stage-2 latent and a z of another encoder are refused with the reason; weights that
/// changed only the decoder (same encoder) are accepted.
#[test]
fn decode_refuses_what_its_decoder_cannot_invert() {
    let t = scratch("decode-refuse");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES[..1]);
    let head = t.path().join("head");
    infer(&inp, &head, &w, "xray", &[]);
    let latent = head.join("ct_slice_u16.nii.gz");
    let (code, _, stderr) = decode(&latent, &t.path().join("o1"), &w, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("stage-2 latent") && stderr.contains("infer --latent z"),
        "{stderr}"
    );
    let (code, _, stderr) = decode(&head, &t.path().join("o2"), &w, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nothing decoded"), "{stderr}");

    let z = t.path().join("z");
    infer(&inp, &z, &w, "xray", &["--latent", "z"]);
    let zfile = z.join("ct_slice_u16.nii.gz");
    let other = save_model(
        AutoencoderKL::new(&tiny_config(2), &mut Init::random(12)).unwrap(),
        &t.path().join("other.safetensors"),
    );
    let (code, _, stderr) = decode(&zfile, &t.path().join("o3.nii.gz"), &other, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("another encoder") && stderr.contains("--any-encoder"),
        "{stderr}"
    );
    assert!(!t.path().join("o3.nii.gz").exists());
    let (code, _, stderr) = decode(
        &zfile,
        &t.path().join("o4.nii.gz"),
        &other,
        &["--any-encoder"],
    );
    assert_eq!(code, 0, "{stderr}");

    // The original weights with a changed decoder (as a finetune of the decoder alone).
    let mut m = AutoencoderKL::new(&tiny_config(2), &mut Init::random(11)).unwrap();
    m.visit_params("", &mut |key, p| {
        if key.starts_with("decoder.") && !p.kind.is_buffer() {
            let v: Vec<f32> = p.value.to_f32_vec().iter().map(|x| x * 0.5).collect();
            p.value = medvae_runtime::Tensor::from_vec(p.value.shape(), v).unwrap();
        }
    });
    let new_decoder = save_model(m, &t.path().join("new_decoder.safetensors"));
    let (code, _, stderr) = decode(&zfile, &t.path().join("o5.nii.gz"), &new_decoder, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(
        gunzipped(&t.path().join("o5.nii.gz"))[352..],
        gunzipped(&t.path().join("o4.nii.gz"))[352..],
        "another decoder, another image"
    );
}

/// A latent without a medvae-fast description (as nibabel writes them) is decoded when its
/// shape is z's, and refused with the expected shape otherwise.
#[test]
fn foreign_latents_are_decoded_by_shape() {
    let t = scratch("decode-foreign");
    let w = tiny_weights(t.path(), 2);
    let good = t.path().join("good.nii.gz");
    let data: Vec<f32> = (0..EMBED * 8 * 12)
        .map(|v| (v % 7) as f32 * 0.3 - 1.0)
        .collect();
    write_nifti(&good, &[EMBED, 8, 12], &data, "").unwrap();
    let (code, stdout, stderr) = decode(&good, &t.path().join("out"), &w, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("latent 2x8x12, image 32x48"), "{stdout}");
    let made = descrip(&t.path().join("out/good_decoded.nii.gz"));
    assert!(made.starts_with("medvae-fast decoded e="), "{made}");

    let bad = t.path().join("bad.nii.gz");
    write_nifti(&bad, &[3, 8, 12], &[0.5; 3 * 8 * 12], "").unwrap();
    let (code, _, stderr) = decode(&bad, &t.path().join("out"), &w, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("bad.nii.gz") && stderr.contains("is not [2, n, n]"),
        "{stderr}"
    );
}

/// 3D: one window gives `infer --decode`'s reconstruction (to float rounding: the stored z went
/// through the window blend); several windows give the volume's shape.
#[test]
fn decode_3d_in_one_window_and_several() {
    let t = scratch("decode-3d");
    let w = tiny_weights(t.path(), 3);
    let inp = sample_folder(t.path(), "3d", &["anatomical_las_i16be.nii"]);
    // 3D latents are z (as the reference writes them): asking for the head is an error.
    let (code, _, stderr) = medvae(&[
        "infer",
        "-i",
        s(&inp),
        "-o",
        s(&t.path().join("head")),
        "--weights",
        s(&w),
        "--modality",
        "mri",
        "--latent",
        "head",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("3D latents are z"), "{stderr}");
    let z = t.path().join("z");
    infer(&inp, &z, &w, "mri", &["--decode"]);
    let stem = "anatomical_las_i16be";
    let (code, stdout, stderr) = decode(
        &z.join(format!("{stem}.nii.gz")),
        &t.path().join("one"),
        &w,
        &[],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let want = read_nifti_array(&z.join(format!("{stem}_decoded.nii.gz"))).unwrap();
    let got = read_nifti_array(&t.path().join(format!("one/{stem}_decoded.nii.gz"))).unwrap();
    assert_eq!(got.shape, want.shape);
    let worst = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "largest difference {worst}");
    assert!(want.data.iter().any(|&v| v != want.data[0]));

    let (code, stdout, stderr) = decode(
        &z.join(format!("{stem}.nii.gz")),
        &t.path().join("win"),
        &w,
        &["--roi-size", "16"],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("windows)"), "{stdout}");
    let tiled = read_nifti_array(&t.path().join(format!("win/{stem}_decoded.nii.gz"))).unwrap();
    assert_eq!(tiled.shape, want.shape);
}

/// `--skip-existing` keeps reconstructions this run would write (a rewrite would show in the
/// marked one), redoes missing ones, and stops on reconstructions of other weights.
#[test]
fn skip_existing_keeps_only_this_runs_reconstructions() {
    let t = scratch("decode-skip");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES);
    let z = t.path().join("z");
    infer(&inp, &z, &w, "xray", &["--latent", "z"]);
    let out = t.path().join("out");
    let (code, _, stderr) = decode(&z, &out, &w, &[]);
    assert_eq!(code, 0, "{stderr}");
    let kept = out.join("ct_slice_u16_decoded.nii.gz");
    let marked = mark_voxels(&kept);
    let redone = out.join("mr_slice_u8_decoded.nii.gz");
    let original = std::fs::read(&redone).unwrap();
    std::fs::remove_file(&redone).unwrap();

    let (code, stdout, stderr) = decode(&z, &out, &w, &["--skip-existing"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("1 file(s): 1 written, 0 failed, 0 not z, 2 already done"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), marked);
    assert_eq!(std::fs::read(&redone).unwrap(), original);

    // Decoded by other weights (with --any-encoder): not this run's, so the run stops.
    let other = save_model(
        AutoencoderKL::new(&tiny_config(2), &mut Init::random(12)).unwrap(),
        &t.path().join("other.safetensors"),
    );
    let (code, _, stderr) = decode(&z, &out, &other, &["--skip-existing", "--any-encoder"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("3 existing output(s)") && stderr.contains("another encoder"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), marked, "nothing rewritten");
}

/// SIGINT between files: the summary says how far it got, the status is 130, every output is
/// whole, and `--skip-existing` finishes the rest.
#[cfg(unix)]
#[test]
fn a_signal_stops_between_files_and_skip_existing_finishes() {
    let t = scratch("decode-signal");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(t.path(), "2d", &SLICES[1..2]);
    let one = t.path().join("one");
    infer(&inp, &one, &w, "xray", &["--latent", "z"]);
    let z = t.path().join("z");
    std::fs::create_dir_all(&z).unwrap();
    const FILES: usize = 300;
    for i in 0..FILES {
        std::fs::copy(
            one.join("mr_slice_u8.nii.gz"),
            z.join(format!("z_{i:04}.nii.gz")),
        )
        .unwrap();
    }
    let out = t.path().join("out");
    let (code, rest) = common::interrupt_after_first_file(&[
        "decode",
        "-i",
        s(&z),
        "-o",
        s(&out),
        "--weights",
        s(&w),
        "--threads",
        "1",
    ]);
    let summary = rest.last().expect("a summary line");
    assert_eq!(code, Some(130), "{summary}");
    assert!(
        summary.starts_with("decode: stopped by SIGINT: "),
        "{summary}"
    );
    let written = std::fs::read_dir(&out).unwrap().count();
    assert!(written < FILES, "the run finished before the signal");
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(read_nifti_array(&path).unwrap().shape, vec![64, 64]);
    }

    let (code, stdout, stderr) = decode(&z, &out, &w, &["--skip-existing", "--threads", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} written, 0 failed, 0 not z, {written} already done",
            FILES - written
        )),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), FILES);
}

/// `infer --source-affine` gives a 3D model's outputs the scan's geometry: the reconstruction
/// the preprocessed grid's affine, the (1-channel, hence 3-axis) latent the f-times coarser
/// one; `decode` carries it on to its reconstruction. 2D images have none to give.
#[test]
fn source_affine_places_outputs_in_the_scans_space() {
    use medvae_runtime::data::volume3d::{latent_affine, load_inference, Affine, Modality};
    let t = scratch("decode-affine");
    let mut cfg = tiny_config(3);
    cfg.z_channels = 1;
    cfg.embed_dim = 1;
    let w = save_model(
        AutoencoderKL::new(&cfg, &mut Init::random(5)).unwrap(),
        &t.path().join("one_channel.safetensors"),
    );
    let name = "anatomical_las_i16be.nii";
    let inp = sample_folder(t.path(), "3d", &[name]);
    let z = t.path().join("z");
    infer(&inp, &z, &w, "mri", &["--decode", "--source-affine"]);
    let (_, want) = load_inference(&inp.join(name), Modality::Mri).unwrap();
    let close = |a: &Affine, b: &Affine, what: &str| {
        for r in 0..4 {
            for c in 0..4 {
                assert!((a[r][c] - b[r][c]).abs() < 1e-4, "{what}: {a:?} vs {b:?}");
            }
        }
    };
    let stem = "anatomical_las_i16be";
    let dec = read_nifti_array(&z.join(format!("{stem}_decoded.nii.gz"))).unwrap();
    close(&dec.affine.unwrap(), &want, "reconstruction");
    let lat = read_nifti_array(&z.join(format!("{stem}.nii.gz"))).unwrap();
    assert_eq!(lat.shape.len(), 3);
    close(
        &lat.affine.unwrap(),
        &latent_affine(&want, FACTOR),
        "latent",
    );
    assert!(lat.descrip.ends_with(" fp32 aff"), "{}", lat.descrip);

    let (code, _, stderr) = decode(
        &z.join(format!("{stem}.nii.gz")),
        &t.path().join("out"),
        &w,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let again = read_nifti_array(&t.path().join(format!("out/{stem}_decoded.nii.gz"))).unwrap();
    close(&again.affine.unwrap(), &want, "decode's reconstruction");

    let w2 = tiny_weights(t.path(), 2);
    let pngs = sample_folder(t.path(), "2d", &SLICES[..1]);
    let (code, _, stderr) = medvae(&[
        "infer",
        "-i",
        s(&pngs),
        "-o",
        s(&t.path().join("o2")),
        "--weights",
        s(&w2),
        "--modality",
        "xray",
        "--source-affine",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("only volumes"), "{stderr}");
}
