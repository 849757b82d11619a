//! The file plan of `infer` and `decode`: which files a folder gives (directly, or
//! recursively with the output folder, hidden folders and link loops left out), where each
//! output goes, and the refusal to write over a file the run reads.

use medvae_model::infer::{
    decoded_path, list, plan, settings, Fingerprints, InputKind, OutputKind, Provenance, Select,
};
use medvae_runtime::data::volume3d::write_nifti;
use std::path::{Path, PathBuf};

/// A temporary folder of one test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-plan-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

/// Create `files` (paths relative to `root`, folders made as needed) with a byte each.
fn touch(root: &Path, files: &[&str]) {
    for f in files {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
}

#[test]
fn the_plan_takes_the_models_files_and_names_outputs_after_them() {
    let s = scratch("plan");
    let inp = s.path().join("in");
    std::fs::create_dir_all(inp.join("sub")).unwrap();
    for f in [
        "b.png",
        "a.PNG",
        "v.nii.gz",
        "w.nii",
        "w.nii.gz",
        "notes.txt",
    ] {
        std::fs::write(inp.join(f), b"x").unwrap();
    }
    std::fs::write(inp.join("sub").join("deep.png"), b"x").unwrap();
    let out = s.path().join("out");

    let p = plan(&inp, &out, Select::scans(InputKind::Png, false), true).unwrap();
    let names: Vec<_> = p.jobs.iter().map(|j| j.latent.clone()).collect();
    assert_eq!(names, vec![out.join("a.nii.gz"), out.join("b.nii.gz")]);
    assert_eq!(
        p.jobs[0].decoded.as_deref(),
        Some(out.join("a_decoded.nii.gz").as_path())
    );
    assert_eq!(p.skipped.len(), 3);

    let p = plan(&inp, &out, Select::scans(InputKind::Nifti, false), false).unwrap();
    assert_eq!(p.jobs.len(), 3);
    assert!(p.jobs.iter().all(|j| j.decoded.is_none()));
    // w.nii and w.nii.gz would both write w.nii.gz: the second is refused
    let conflicts: Vec<_> = p.jobs.iter().filter(|j| j.conflict.is_some()).collect();
    assert_eq!(conflicts.len(), 1);

    // one file to a named output file, or into a folder
    let one = inp.join("b.png");
    let p = plan(
        &one,
        &s.path().join("x.nii"),
        Select::scans(InputKind::Png, false),
        true,
    )
    .unwrap();
    assert_eq!(p.jobs[0].latent, s.path().join("x.nii"));
    assert_eq!(p.jobs[0].decoded, Some(s.path().join("x_decoded.nii")));
    let p = plan(&one, &out, Select::scans(InputKind::Png, false), false).unwrap();
    assert_eq!(p.jobs[0].latent, out.join("b.nii.gz"));

    // nothing to do, or nothing there, is an error
    let empty = s.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(plan(&empty, &out, Select::scans(InputKind::Png, false), false).is_err());
    let missing = s.path().join("missing");
    assert!(plan(&missing, &out, Select::scans(InputKind::Png, false), false).is_err());
    assert_eq!(
        decoded_path(Path::new("/o/a.b.nii.gz")),
        PathBuf::from("/o/a.b_decoded.nii.gz")
    );
}

#[test]
fn a_recursive_plan_mirrors_the_subfolders_and_leaves_out_hidden_ones_and_the_output() {
    let s = scratch("recursive");
    let inp = s.path().join("in");
    touch(
        &inp,
        &[
            "top.png",
            "sub-01/anat/t1.png",
            "sub-01/anat/t1.nii.gz",
            "sub-02/t1.png",
            ".git/objects/x.png",
            "sub-02/._t1.png",
            "out/old.png",
        ],
    );
    // The output folder inside the input: its files are never read back as inputs.
    let out = inp.join("out");
    let p = plan(&inp, &out, Select::scans(InputKind::Png, true), true).unwrap();
    let got: Vec<(PathBuf, PathBuf)> = p
        .jobs
        .iter()
        .map(|j| (j.input.clone(), j.latent.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                inp.join("sub-01/anat/t1.png"),
                out.join("sub-01/anat/t1.nii.gz")
            ),
            (inp.join("sub-02/t1.png"), out.join("sub-02/t1.nii.gz")),
            (inp.join("top.png"), out.join("top.nii.gz")),
        ]
    );
    assert_eq!(
        p.jobs[0].decoded.as_deref(),
        Some(out.join("sub-01/anat/t1_decoded.nii.gz").as_path())
    );
    assert_eq!(p.skipped, vec![inp.join("sub-01/anat/t1.nii.gz")]);
    assert!(p.jobs.iter().all(|j| j.conflict.is_none()));

    // Without --recursive only the top level is read.
    let flat = plan(&inp, &out, Select::scans(InputKind::Png, false), false).unwrap();
    assert_eq!(flat.jobs.len(), 1);

    // The folders are made by the plan, before any file is written.
    p.create_folders().unwrap();
    assert!(out.join("sub-01/anat").is_dir() && out.join("sub-02").is_dir());

    // eval's listing: the same files (it writes no folder, so `out/` is read too).
    let found = list(&inp, Select::scans(InputKind::Png, true), None).unwrap();
    assert_eq!(found.take.len(), 4);
    assert!(found.take.contains(&inp.join("out/old.png")));

    // Only the subfolders hold images: an error names them without --recursive.
    let deep = s.path().join("deep");
    touch(&deep, &["a/b.png"]);
    let err = plan(&deep, &out, Select::scans(InputKind::Png, false), false).unwrap_err();
    assert!(err.to_string().contains("holds no .png"), "{err}");
    assert_eq!(
        plan(&deep, &out, Select::scans(InputKind::Png, true), false)
            .unwrap()
            .jobs
            .len(),
        1
    );
}

#[cfg(unix)]
#[test]
fn a_link_back_up_the_tree_is_listed_once() {
    let s = scratch("loop");
    let inp = s.path().join("in");
    touch(&inp, &["a/x.png"]);
    std::os::unix::fs::symlink("..", inp.join("a").join("up")).unwrap();
    std::os::unix::fs::symlink(inp.join("a"), inp.join("b")).unwrap();
    let p = plan(
        &inp,
        &s.path().join("out"),
        Select::scans(InputKind::Png, true),
        false,
    )
    .unwrap();
    assert_eq!(p.jobs.len(), 1, "{:?}", p.jobs);
}

#[test]
fn outputs_that_would_replace_the_inputs_are_refused() {
    let s = scratch("inplace");
    let dir = s.path().join("scans");
    touch(&dir, &["a.nii.gz", "b.nii", "c.png"]);

    // A 3D run into its own folder: a.nii.gz's latent is a.nii.gz.
    let p = plan(&dir, &dir, Select::scans(InputKind::Nifti, false), false).unwrap();
    let err = p.check_inputs_kept().unwrap_err().to_string();
    assert!(err.contains("1 output(s) would replace"), "{err}");
    assert!(err.contains("a.nii.gz"), "{err}");
    // The same folder reached by another spelling.
    let other = dir.join("..").join("scans");
    let p = plan(&dir, &other, Select::scans(InputKind::Nifti, false), false).unwrap();
    assert!(p.check_inputs_kept().is_err());
    // One file named as its own output.
    let one = dir.join("a.nii.gz");
    let p = plan(&one, &one, Select::scans(InputKind::Nifti, false), false).unwrap();
    assert!(p.check_inputs_kept().is_err());

    // A 2D run into its folder: c.nii.gz beside c.png replaces nothing...
    let p = plan(&dir, &dir, Select::scans(InputKind::Png, false), true).unwrap();
    p.check_inputs_kept().unwrap();
    // ...but a volume of the same name, listed as skipped, is not written over either.
    touch(&dir, &["c.nii.gz"]);
    let p = plan(&dir, &dir, Select::scans(InputKind::Png, false), false).unwrap();
    let err = p.check_inputs_kept().unwrap_err().to_string();
    assert!(err.contains("c.nii.gz"), "{err}");

    // decode's outputs are <name>_decoded: into the latents' own folder is fine.
    let mut p = plan(&dir, &dir, Select::latents(false), false).unwrap();
    for job in &mut p.jobs {
        job.latent = decoded_path(&job.latent);
    }
    p.check_inputs_kept().unwrap();

    // A link named like an output is replaced, not followed: its target, an input, is safe.
    #[cfg(unix)]
    {
        let linked = s.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(dir.join("a.nii.gz"), linked.join("a.nii.gz")).unwrap();
        let p = plan(
            &dir.join("a.nii.gz"),
            &linked,
            Select::scans(InputKind::Nifti, false),
            false,
        )
        .unwrap();
        p.check_inputs_kept().unwrap();
        // ...but an input that is itself a link (git-annex, DataLad) is an entry to keep.
        let p = plan(
            &linked,
            &linked,
            Select::scans(InputKind::Nifti, false),
            false,
        )
        .unwrap();
        assert!(p.check_inputs_kept().is_err());
    }

    // Another folder is always fine.
    let p = plan(
        &dir,
        &s.path().join("out"),
        Select::scans(InputKind::Nifti, false),
        true,
    )
    .unwrap();
    p.check_inputs_kept().unwrap();
}

/// Write a small NIfTI file whose description says medvae-fast made it and holds `kind`.
fn our_output(path: &Path, kind: OutputKind) {
    let made_by = Provenance::new(
        kind,
        Fingerprints {
            encoder: 0x1234,
            weights: 0x5678,
        },
        &settings(3, "mri", 160, 0.25, "fp32"),
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_nifti(path, &[4, 4, 4], &[0.5; 64], &made_by.descrip()).unwrap();
}

#[test]
fn medvae_fasts_own_outputs_are_not_scans() {
    let s = scratch("ours");
    let dir = s.path().join("scans");
    // A real scan beside an earlier run's latent and reconstruction.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/3d/ct_small_vol_lps_i16.nii.gz"),
        dir.join("ct.nii.gz"),
    )
    .unwrap();
    our_output(&dir.join("old/ct.nii.gz"), OutputKind::Z);
    our_output(&dir.join("old/ct_decoded.nii.gz"), OutputKind::Decoded);

    // infer and eval: only the scan; the outputs are listed as left out.
    let found = list(&dir, Select::scans(InputKind::Nifti, true), None).unwrap();
    assert_eq!(found.take, vec![dir.join("ct.nii.gz")]);
    assert_eq!(
        found.ours,
        vec![
            (dir.join("old/ct.nii.gz"), OutputKind::Z),
            (dir.join("old/ct_decoded.nii.gz"), OutputKind::Decoded),
        ]
    );
    // decode: the latents are what it reads.
    let found = list(&dir.join("old"), Select::latents(false), None).unwrap();
    assert_eq!(found.take.len(), 2);
    // A folder of outputs only is no input for infer, and says why.
    let err = list(
        &dir.join("old"),
        Select::scans(InputKind::Nifti, false),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("2 file(s) there are medvae-fast outputs"),
        "{err}"
    );
    // A single output named as an infer input is refused, naming it.
    let err = list(
        &dir.join("old/ct.nii.gz"),
        Select::scans(InputKind::Nifti, false),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ct.nii.gz") && err.contains("not a scan"),
        "{err}"
    );

    // A 2D run into its own folder a second time: its earlier latent beside the image is its
    // own output, which it may replace (a file of another program there it may not).
    let flat = s.path().join("xray");
    touch(&flat, &["a.png"]);
    our_output(&flat.join("a.nii.gz"), OutputKind::Latent);
    let p = plan(&flat, &flat, Select::scans(InputKind::Png, false), false).unwrap();
    assert!(p.skipped.is_empty());
    p.check_inputs_kept().unwrap();
}
