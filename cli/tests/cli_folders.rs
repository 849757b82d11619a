//! Folder trees through the real binary: `infer -r`, `decode -r` and `eval -r` over
//! subfolders (outputs mirror them, the output folder inside the input is never read back),
//! the refusal to write a latent over the scan it came from (`-o` equal to `-i`), which
//! leaves the scan's bytes as they were, and latents among scans left out of `infer`/`eval`.

mod common;

use common::{medvae, repo, s, scratch, tiny_weights};
use std::path::Path;

/// Copy the bundled sample `samples/KIND/NAME` to `to` (folders made as needed).
fn place(kind: &str, name: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(repo().join("samples").join(kind).join(name), to).unwrap();
}

#[test]
fn recursive_runs_mirror_the_subfolders() {
    let dir = scratch("recursive");
    let weights = tiny_weights(dir.path(), 2);
    let inp = dir.path().join("archive");
    place("2d", "ct_slice_u16.png", &inp.join("p1/s1/slice.png"));
    place("2d", "mr_slice_u8.png", &inp.join("p2/slice.png"));
    place("2d", "mr_slice_u8.png", &inp.join(".cache/slice.png"));
    // Volumes a 2D model does not read: named, the first ten, then counted.
    std::fs::create_dir_all(inp.join("p2/vols")).unwrap();
    for k in 0..12 {
        std::fs::write(inp.join(format!("p2/vols/v{k:02}.nii.gz")), b"not read").unwrap();
    }
    // Outputs inside the archive: a second run must not take them (or their folders) as input.
    let out = inp.join("latents");
    let infer = |extra: &[&str]| {
        let args = [
            &[
                "infer",
                "-r",
                "-i",
                s(&inp),
                "-o",
                s(&out),
                "--weights",
                s(&weights),
                "--modality",
                "xray",
                "--latent",
                "z",
            ],
            extra,
        ]
        .concat();
        medvae(&args)
    };
    // --dry-run lists the plan and writes nothing.
    let (code, stdout, stderr) = infer(&["--dry-run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let slice = |p: &str| inp.join(p).display().to_string();
    let latent = |p: &str| out.join(p).display().to_string();
    assert!(
        stdout.contains(&format!(
            "would write {} -> {}",
            slice("p1/s1/slice.png"),
            latent("p1/s1/slice.nii.gz")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 file(s) to run, 0 already done, 12 skipped"),
        "{stdout}"
    );
    assert!(!out.exists(), "--dry-run created {}", out.display());

    let (code, stdout, stderr) = infer(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 file(s): 2 written"), "{stdout}");
    assert!(stdout.contains("0 failed, 12 skipped"), "{stdout}");
    assert!(
        stderr.contains("v09.nii.gz (a 2D model does not read it)"),
        "{stderr}"
    );
    assert!(!stderr.contains("v10.nii.gz"), "{stderr}");
    assert!(
        stderr.contains("... and 2 more file(s) of the other kind"),
        "{stderr}"
    );
    for latent in ["p1/s1/slice.nii.gz", "p2/slice.nii.gz"] {
        assert!(out.join(latent).is_file(), "{latent} missing:\n{stdout}");
    }
    assert!(!out.join(".cache").exists());
    let (code, stdout, stderr) = infer(&["--skip-existing"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("0 file(s)") && stdout.contains("2 already done"),
        "{stdout}"
    );

    let recon = dir.path().join("recon");
    let (code, stdout, stderr) = medvae(&[
        "decode",
        "-r",
        "-i",
        s(&out),
        "-o",
        s(&recon),
        "--weights",
        s(&weights),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        recon.join("p1/s1/slice_decoded.nii.gz").is_file(),
        "{stdout}"
    );
    assert!(recon.join("p2/slice_decoded.nii.gz").is_file(), "{stdout}");

    let (code, stdout, stderr) = medvae(&[
        "eval",
        "-r",
        "-i",
        s(&inp.join("p1")),
        "--weights",
        s(&weights),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 of 1 sample(s) evaluated"), "{stdout}");
    // Without -r the top level holds no image: an error that names the folder.
    let (code, _, stderr) = medvae(&["eval", "-i", s(&inp), "--weights", s(&weights)]);
    assert_ne!(code, 0);
    assert!(stderr.contains("holds no .png"), "{stderr}");
}

#[test]
fn a_latent_is_never_written_over_its_scan() {
    let dir = scratch("inplace");
    let weights = tiny_weights(dir.path(), 3);
    let scans = dir.path().join("scans");
    let scan = scans.join("ct.nii.gz");
    place("3d", "ct_small_vol_lps_i16.nii.gz", &scan);
    let before = std::fs::read(&scan).unwrap();
    let infer = |input: &Path, output: &Path| {
        medvae(&[
            "infer",
            "-i",
            s(input),
            "-o",
            s(output),
            "--weights",
            s(&weights),
            "--modality",
            "ct",
        ])
    };
    // The folder into itself, the scan into its folder, the scan named as its output.
    for (input, output) in [(&scans, &scans), (&scan, &scans), (&scan, &scan)] {
        let (code, stdout, stderr) = infer(input, output);
        assert_eq!(code, 2, "{stdout}\n{stderr}");
        assert!(stderr.contains("would replace input files"), "{stderr}");
        assert!(stderr.contains("ct.nii.gz"), "{stderr}");
    }
    assert_eq!(
        std::fs::read(&scan).unwrap(),
        before,
        "the scan was changed"
    );

    // decode: a latent named as its own reconstruction.
    let z = dir.path().join("z.nii.gz");
    let (code, stdout, stderr) = infer(&scan, &z);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let latent = std::fs::read(&z).unwrap();
    let (code, _, stderr) = medvae(&["decode", "-i", s(&z), "-o", s(&z), "--weights", s(&weights)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("would replace input files"), "{stderr}");
    assert_eq!(std::fs::read(&z).unwrap(), latent, "the latent was changed");

    // A latent among the scans is not taken for one by infer or eval.
    std::fs::copy(&z, scans.join("ct_z.nii.gz")).unwrap();
    let (code, stdout, stderr) = infer(&scans, &dir.path().join("latents"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 file(s): 1 written"), "{stdout}");
    assert!(
        stderr.contains("ct_z.nii.gz (written by medvae-fast: it holds `z`, not a scan)"),
        "{stderr}"
    );
    let (code, stdout, stderr) = medvae(&[
        "eval",
        "-i",
        s(&scans),
        "--modality",
        "ct",
        "--weights",
        s(&weights),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 of 1 sample(s) evaluated"), "{stdout}");
    // Named on its own, it is refused with the reason.
    let (code, _, stderr) = infer(&scans.join("ct_z.nii.gz"), &dir.path().join("zz"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a scan"), "{stderr}");
}
