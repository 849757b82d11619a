//! `medvae-fast infer` end to end, through the real binary: the sample folders with tiny
//! random models saved as safetensors (configuration read back from the file), output shapes
//! and layout, and the error paths (no weights, a conflicting --model, bad files among good
//! ones, a wrong modality).
//!
//! Expected shapes come from the inputs (PNG header sizes; the 3D loader's cropped shape, which
//! the golden preprocess cases pin to the reference) and the tiny model's 4x downsampling.

mod common;

use common::{
    descrip, gunzipped, mark_voxels, medvae, medvae_with_env, repo, s, sample_folder, scratch,
    tiny_weights, EMBED, FACTOR,
};
use medvae_runtime::data::volume3d::{decode_nifti, load_mri_3d};
use std::path::{Path, PathBuf};

/// `medvae-fast infer ARGS`.
fn run(args: &[&str]) -> (i32, String, String) {
    medvae(&[&["infer"], args].concat())
}

/// `infer -i input -o output --weights weights --modality modality` and `extra`.
fn infer_with_weights(
    input: &Path,
    output: &Path,
    weights: &Path,
    modality: &str,
    extra: &[&str],
) -> (i32, String, String) {
    medvae(&infer_args(input, output, weights, modality, extra))
}

/// The arguments of [`infer_with_weights`], `infer` first.
fn infer_args<'a>(
    input: &'a Path,
    output: &'a Path,
    weights: &'a Path,
    modality: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "infer",
        "-i",
        s(input),
        "-o",
        s(output),
        "--weights",
        s(weights),
        "--modality",
        modality,
    ];
    args.extend_from_slice(extra);
    args
}

/// The NumPy shape nibabel would give for a written file (dims from the header, any rank),
/// after checking the format fields the reference's files have.
fn nifti_shape(path: &Path) -> Vec<usize> {
    let bytes = gunzipped(path);
    let i16_at = |o: usize| i16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let f32_at = |o: usize| f32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(&bytes[344..348], b"n+1\0");
    assert_eq!(i16_at(70), 16, "float32");
    assert_eq!(i16_at(254), 2, "sform aligned");
    let srow: Vec<f32> = (0..12).map(|n| f32_at(280 + 4 * n)).collect();
    assert_eq!(
        srow,
        vec![1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.],
        "identity affine"
    );
    let ndim = i16_at(40) as usize;
    let shape: Vec<usize> = (1..=ndim).map(|n| i16_at(40 + 2 * n) as usize).collect();
    assert_eq!(bytes.len(), 352 + 4 * shape.iter().product::<usize>());
    let data: Vec<f32> = bytes[352..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(data.iter().all(|v| v.is_finite()));
    assert!(
        data.iter().any(|&v| v != data[0]),
        "{} is constant",
        path.display()
    );
    shape
}

#[test]
fn infer_2d_on_the_sample_folder() {
    let t = scratch("2d");
    let w = tiny_weights(t.path(), 2);
    let out = t.path().join("out");
    let samples = repo().join("samples/2d");
    let (code, stdout, stderr) = infer_with_weights(&samples, &out, &w, "xray", &["--decode"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("time in each stage (all devices): read and preprocess "),
        "{stderr}"
    );
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert!(pngs.len() >= 3);
    assert!(
        stdout.contains(&format!("{} written, 0 failed", pngs.len())),
        "{stdout}"
    );
    for png in &pngs {
        let (w, h) = image::image_dimensions(png).unwrap();
        let (h, w) = (h as usize, w as usize);
        let stem = png.file_stem().unwrap().to_str().unwrap();
        // the reference's squeeze: [embed, h/4, w/4] latent, [H, W] reconstruction (1 channel)
        assert_eq!(
            nifti_shape(&out.join(format!("{stem}.nii.gz"))),
            vec![EMBED, h / FACTOR, w / FACTOR],
            "{stem}"
        );
        assert_eq!(
            nifti_shape(&out.join(format!("{stem}_decoded.nii.gz"))),
            vec![h, w],
            "{stem}"
        );
    }
    // the derived/ subfolder is not read (the reference lists the folder, not the tree)
    assert!(!out.join("ct_slice_u16_fliplr.nii.gz").exists());
}

#[test]
fn infer_3d_with_overlapping_windows() {
    // The small sample volumes (the 197x233x189 MNI template would take minutes on 2 cores).
    let t = scratch("3d");
    let names = [
        "anatomical_las_i16be.nii",
        "ct_small_vol_lps_i16.nii.gz",
        "stat_las_f32.nii.gz",
    ];
    let inp = sample_folder(t.path(), "3d", &names);
    let w = tiny_weights(t.path(), 3);
    let out = t.path().join("out");
    let (code, stdout, stderr) =
        infer_with_weights(&inp, &out, &w, "mri", &["--roi-size", "24", "--decode"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("windows"), "{stdout}");
    for n in names {
        let cropped = load_mri_3d(&inp.join(n)).unwrap().shape;
        let stem = n.split('.').next().unwrap();
        let lat = out.join(format!("{stem}.nii.gz"));
        let mut want = vec![EMBED];
        want.extend(cropped.iter().map(|d| d / FACTOR));
        // channels first, then the RAS axes; the 1-channel reconstruction squeezed to 3 axes
        assert_eq!(nifti_shape(&lat), want, "{n}");
        assert_eq!(
            nifti_shape(&out.join(format!("{stem}_decoded.nii.gz"))),
            cropped.to_vec(),
            "{n}"
        );
        // and the engine's own (3D) reader agrees on the reconstruction
        let dec = out.join(format!("{stem}_decoded.nii.gz"));
        assert_eq!(decode_nifti(&dec, &gunzipped(&dec)).unwrap().dims, cropped);
    }
}

#[test]
fn no_weights_is_refused_with_where_to_download_them() {
    let t = scratch("noweights");
    let out = t.path().join("out");
    let samples = repo().join("samples/2d");
    let (code, _, stderr) = run(&[
        "-i",
        s(&samples),
        "-o",
        s(&out),
        "--model",
        "medvae_4_1_2d",
        "--modality",
        "xray",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("huggingface.co/stanfordmimi/MedVAE")
            && stderr.contains("model_weights/vae_4x_1c_2D.ckpt")
            && stderr.contains("--random-weights"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written");

    // --random-weights runs the published layout (one file, to a named output file)
    let one = t.path().join("one.nii.gz");
    let (code, stdout, stderr) = run(&[
        "-i",
        s(&samples.join("mr_slice_u8.png")),
        "-o",
        s(&one),
        "--model",
        "medvae_4_1_2d",
        "--modality",
        "xray",
        "--random-weights",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("random weights"), "{stderr}");
    // 64x64, 4x, 1-channel latent: squeezed to [16, 16]
    assert_eq!(nifti_shape(&one), vec![16, 16]);
}

#[test]
fn a_conflicting_model_name_is_an_error() {
    let t = scratch("conflict");
    let w = tiny_weights(t.path(), 2);
    let (code, _, stderr) = infer_with_weights(
        &repo().join("samples/2d"),
        &t.path().join("out"),
        &w,
        "xray",
        &["--model", "medvae_4_1_2d"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("conflicts with --model medvae_4_1_2d") && stderr.contains("tiny2d"),
        "{stderr}"
    );
    // a 3D checkpoint cannot take x-rays
    let w3 = tiny_weights(t.path(), 3);
    let (code, _, stderr) = infer_with_weights(
        &repo().join("samples/3d"),
        &t.path().join("out3"),
        &w3,
        "xray",
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--modality ct or mri"), "{stderr}");
}

#[test]
fn bad_files_are_reported_and_the_others_continue() {
    let t = scratch("bad");
    let inp = t.path().join("in");
    std::fs::create_dir_all(&inp).unwrap();
    let good = repo().join("samples/2d/mr_slice_u8.png");
    std::fs::copy(&good, inp.join("a_good.png")).unwrap();
    std::fs::write(inp.join("b_garbage.png"), b"this is not a png at all").unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(inp.join("c_truncated.png"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(&good, inp.join("d_good.png")).unwrap();
    // 3 rows: a 4x-downsampling encoder cannot halve it twice
    image::GrayImage::from_fn(9, 3, |x, y| image::Luma([(x * 20 + y * 7) as u8]))
        .save(inp.join("e_too_small.png"))
        .unwrap();
    let w = tiny_weights(t.path(), 2);
    let out = t.path().join("out");
    let (code, stdout, stderr) = infer_with_weights(&inp, &out, &w, "xray", &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("5 file(s): 2 written, 3 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "e_too_small.png: the image is 3x9 pixels; a 4x-downsampling model needs at least 4x4"
        ),
        "{stderr}"
    );
    for bad in ["b_garbage.png", "c_truncated.png", "e_too_small.png"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("FAILED") && l.contains(bad)),
            "{bad}: {stderr}"
        );
        assert!(!out.join(bad.replace(".png", ".nii.gz")).exists());
    }
    for ok in ["a_good", "d_good"] {
        assert_eq!(
            nifti_shape(&out.join(format!("{ok}.nii.gz"))),
            vec![EMBED, 16, 16]
        );
    }

    // a volume given to a 2D model, as a single file, fails with the reason
    let (code, _, stderr) = infer_with_weights(
        &repo().join("samples/3d/anatomical_las_i16be.nii"),
        &out,
        &w,
        "mri",
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("a 2D model reads .png images"), "{stderr}");
}

/// `--device cuda` on a machine without a usable GPU is a clear error before anything is
/// written; on a GPU machine the same run must match the CPU's latents.
#[test]
fn cuda_device_errors_clearly_or_matches_the_cpu() {
    let t = scratch("cuda");
    let img = repo().join("samples/2d/mr_slice_u8.png");
    let (cpu_out, gpu_out) = (t.path().join("cpu.nii.gz"), t.path().join("gpu.nii.gz"));
    let args = |out: &Path, device: &str| {
        let mut a = vec![
            "-i".to_string(),
            s(&img).to_string(),
            "-o".to_string(),
            s(out).to_string(),
            "--model".to_string(),
            "medvae_4_1_2d".to_string(),
            "--modality".to_string(),
            "xray".to_string(),
            "--random-weights".to_string(),
        ];
        a.extend(["--device".to_string(), device.to_string()]);
        a
    };
    let call = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)
    };
    let (code, _, stderr) = call(args(&gpu_out, "cuda"));
    if medvae_runtime::cuda::probe().is_err() {
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains("CUDA not available"), "{stderr}");
        assert!(!gpu_out.exists(), "nothing is written");
        println!("skipped: no GPU here; the error path was checked instead");
        return;
    }
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = call(args(&cpu_out, "cpu"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(nifti_shape(&gpu_out), nifti_shape(&cpu_out));
}

/// `--device cpu,cpu`: two models share the files; every output is byte-identical to the
/// one-device run's, and a bad file is still reported while the others are written. So are
/// those of a run whose stages (read, model, write) go one after the other
/// (`MEDVAE_PIPELINE=off`) instead of overlapping.
#[test]
fn several_devices_share_the_files_and_write_the_same_bytes() {
    let t = scratch("devices");
    let w = tiny_weights(t.path(), 2);
    let inp = sample_folder(
        t.path(),
        "2d",
        &["ct_slice_u16.png", "mr_slice_u8.png", "mr_slice_rgb.png"],
    );
    std::fs::write(inp.join("z_garbage.png"), b"not a png").unwrap();
    let outputs: Vec<PathBuf> = [("cpu", "on"), ("cpu,cpu", "on"), ("cpu", "off")]
        .iter()
        .map(|&(devices, pipeline)| {
            let out = t
                .path()
                .join(format!("{}_{pipeline}", devices.replace(',', "_")));
            let (code, stdout, stderr) = medvae_with_env(
                &infer_args(&inp, &out, &w, "xray", &["--decode", "--device", devices]),
                &[("MEDVAE_PIPELINE", pipeline)],
            );
            assert_eq!(code, 1, "{stdout}\n{stderr}");
            assert!(
                stdout.contains("4 file(s): 3 written, 1 failed"),
                "{stdout}"
            );
            assert!(stderr.contains("failed: z_garbage.png"), "{stderr}");
            out
        })
        .collect();
    let mut written = 0;
    for entry in std::fs::read_dir(&outputs[0]).unwrap() {
        let path = entry.unwrap().path();
        for other in &outputs[1..] {
            let twin = other.join(path.file_name().unwrap());
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(&twin).unwrap(),
                "{}",
                twin.display()
            );
        }
        written += 1;
    }
    assert_eq!(written, 6, "3 latents and 3 reconstructions");
}

/// `--skip-existing` leaves files whose outputs are all there (not rewritten), and runs the
/// rest: one with no output, one with the latent but not the reconstruction asked for.
#[test]
fn skip_existing_runs_only_what_is_missing() {
    let t = scratch("skip");
    let w = tiny_weights(t.path(), 2);
    let files = ["ct_slice_u16.png", "mr_slice_u8.png", "mr_slice_rgb.png"];
    let names = files.map(|f| f.trim_end_matches(".png"));
    let inp = sample_folder(t.path(), "2d", &files);
    let out = t.path().join("out");
    let (code, stdout, stderr) = infer_with_weights(&inp, &out, &w, "xray", &["--decode"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let first: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(out.join(format!("{n}.nii.gz"))).unwrap())
        .collect();
    // The first file's outputs stay, but marked so that a rewrite would show.
    let kept = out.join("ct_slice_u16.nii.gz");
    let marked = mark_voxels(&kept);
    std::fs::remove_file(out.join("mr_slice_u8.nii.gz")).unwrap();
    std::fs::remove_file(out.join("mr_slice_rgb_decoded.nii.gz")).unwrap();

    let (code, stdout, stderr) =
        infer_with_weights(&inp, &out, &w, "xray", &["--decode", "--skip-existing"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 file(s): 2 written, 0 failed, 0 skipped, 1 already done"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 3 file(s) already have their outputs"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), marked);
    for (name, bytes) in names.iter().zip(&first).skip(1) {
        assert_eq!(
            &std::fs::read(out.join(format!("{name}.nii.gz"))).unwrap(),
            bytes,
            "{name}: rerun output differs"
        );
        assert!(out.join(format!("{name}_decoded.nii.gz")).is_file());
    }
    // Without --decode the latents suffice: nothing left to do.
    let (code, stdout, _) = infer_with_weights(&inp, &out, &w, "xray", &["--skip-existing"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("0 file(s): 0 written, 0 failed, 0 skipped, 3 already done"),
        "{stdout}"
    );
}

/// `--skip-existing` never keeps an output that other weights or options made: the run stops
/// before writing anything and says which files differ, and how. A run that matches again
/// keeps them all.
#[test]
fn skip_existing_refuses_outputs_of_other_weights_or_options() {
    let t = scratch("skip-foreign");
    let w = tiny_weights(t.path(), 2);
    let files = ["ct_slice_u16.png", "mr_slice_u8.png"];
    let inp = sample_folder(t.path(), "2d", &files);
    let out = t.path().join("out");
    let (code, _, stderr) = infer_with_weights(&inp, &out, &w, "xray", &["--decode"]);
    assert_eq!(code, 0, "{stderr}");
    let latent = out.join("mr_slice_u8.nii.gz");
    let made = descrip(&latent);
    assert!(made.starts_with("medvae-fast latent e="), "{made}");
    assert!(made.ends_with(" fp32"), "{made}");
    assert!(descrip(&out.join("mr_slice_u8_decoded.nii.gz")).starts_with("medvae-fast decoded "));
    let before: Vec<Vec<u8>> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let unchanged = || {
        let now: Vec<Vec<u8>> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert_eq!(now, before, "an output was rewritten");
    };

    // Other weights (another seed: another encoder).
    let other = common::save_model(
        medvae_model::autoencoder::AutoencoderKL::new(
            &common::tiny_config(2),
            &mut medvae_model::layers::Init::random(12),
        )
        .unwrap(),
        &t.path().join("other.safetensors"),
    );
    let (code, _, stderr) = infer_with_weights(&inp, &out, &other, "xray", &["--skip-existing"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("2 existing output(s)")
            && stderr.contains("ct_slice_u16.nii.gz: another encoder")
            && stderr.contains("leave out --skip-existing"),
        "{stderr}"
    );
    unchanged();

    // The same weights asked for z instead of the stage-2 latent.
    let (code, _, stderr) = infer_with_weights(
        &inp,
        &out,
        &w,
        "xray",
        &["--skip-existing", "--latent", "z"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("it holds `latent`, not `z`"), "{stderr}");
    unchanged();

    // A file another program wrote under an output's name.
    let foreign = out.join("ct_slice_u16.nii.gz");
    let saved = std::fs::read(&foreign).unwrap();
    medvae_runtime::data::volume3d::write_nifti(&foreign, &[2, 2], &[0.0; 4], "FSL5.0").unwrap();
    let (code, _, stderr) = infer_with_weights(&inp, &out, &w, "xray", &["--skip-existing"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("not written by medvae-fast (description \"FSL5.0\")"),
        "{stderr}"
    );
    // One without any description (as older medvae-fast versions wrote them).
    medvae_runtime::data::volume3d::write_nifti(&foreign, &[2, 2], &[0.0; 4], "").unwrap();
    let (code, _, stderr) = infer_with_weights(&inp, &out, &w, "xray", &["--skip-existing"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("ct_slice_u16.nii.gz: no description"),
        "{stderr}"
    );
    std::fs::write(&foreign, saved).unwrap();

    // The original weights and options: everything is done.
    let (code, stdout, stderr) =
        infer_with_weights(&inp, &out, &w, "xray", &["--skip-existing", "--decode"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 already done"), "{stdout}");
    unchanged();
}

/// SIGINT during an archive run: the files in progress finish, the summary says how many were
/// done and how to continue, the exit status is 130, and every output on disk is whole;
/// `--skip-existing` then finishes the rest.
#[cfg(unix)]
#[test]
fn a_signal_stops_between_files_and_skip_existing_finishes() {
    let t = scratch("signal");
    let w = tiny_weights(t.path(), 2);
    let inp = t.path().join("in");
    std::fs::create_dir_all(&inp).unwrap();
    const FILES: usize = 400;
    for i in 0..FILES {
        std::fs::copy(
            repo().join("samples/2d/mr_slice_u8.png"),
            inp.join(format!("slice_{i:04}.png")),
        )
        .unwrap();
    }
    let out = t.path().join("out");
    let (code, rest) = common::interrupt_after_first_file(&infer_args(
        &inp,
        &out,
        &w,
        "xray",
        &["--threads", "1"],
    ));
    let summary = rest.last().expect("a summary line");
    assert_eq!(code, Some(130), "{summary}");
    assert!(
        summary.starts_with("infer: stopped by SIGINT after "),
        "{summary}"
    );
    let written = std::fs::read_dir(&out).unwrap().count();
    assert!(written < FILES, "the run finished before the signal");
    assert_eq!(
        rest.iter().filter(|l| l.starts_with("ok ")).count() + 1,
        written
    );
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            path.to_string_lossy().ends_with(".nii.gz"),
            "{}",
            path.display()
        );
        assert_eq!(nifti_shape(&path).len(), 3, "{}", path.display());
    }

    let (code, stdout, stderr) = infer_with_weights(
        &inp,
        &out,
        &w,
        "xray",
        &["--skip-existing", "--threads", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} written, 0 failed, 0 skipped, {written} already done",
            FILES - written
        )),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), FILES);
}
