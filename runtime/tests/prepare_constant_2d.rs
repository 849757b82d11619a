//! The constant-image rule: the library loader `load_2d` keeps the reference behaviour (a
//! constant channel becomes −1), while `prepare`'s per-file decode refuses an image whose
//! pixels are all equal, naming the file; a constant channel beside varying ones is accepted.

use medvae_runtime::data::dataset::{decode_sample, DataKind, DatasetSpec, SampleError};
use medvae_runtime::data::image2d::{load_2d, Preprocess2d};
use std::path::Path;

/// A temporary folder of one test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-const2d-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

fn spec(dir: &Path) -> DatasetSpec {
    DatasetSpec::new(dir.join("unused.csv"), dir, DataKind::Png2d)
}

#[test]
fn constant_images_are_refused_by_prepare_but_not_by_the_loader() {
    let dir = scratch("flat");
    let grey = dir.path().join("grey.png");
    image::GrayImage::from_pixel(20, 10, image::Luma([90]))
        .save(&grey)
        .expect("write");
    // every channel constant, channels differ: still one colour, a constant image
    let rgb = dir.path().join("rgb.png");
    image::RgbImage::from_pixel(7, 9, image::Rgb([10, 200, 30]))
        .save(&rgb)
        .expect("write");
    let grey16 = dir.path().join("grey16.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(8, 8, image::Luma([4000u16]))
        .save(&grey16)
        .expect("write");

    for (path, pixel) in [
        (&grey, vec![90.0 / 255.0]),
        (&rgb, vec![10.0 / 255.0, 200.0 / 255.0, 30.0 / 255.0]),
        (&grey16, vec![4000.0]),
    ] {
        let err = decode_sample(path, &spec(dir.path())).expect_err("constant image accepted");
        match &err {
            SampleError::ConstantImage {
                path: p,
                pixel: got,
            } => {
                assert_eq!(p, path);
                assert_eq!(got, &pixel);
            }
            other => panic!("{}: wrong error {other}", path.display()),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains("constant image"),
            "{msg}"
        );
        // the library loader: MONAI's guard, every value −1
        let img = load_2d(path, &Preprocess2d::finetune(true)).expect("loader accepts it");
        assert!(img.data.iter().all(|&v| v == -1.0));
    }
}

#[test]
fn a_constant_channel_beside_varying_ones_is_accepted() {
    let dir = scratch("alpha");
    let path = dir.path().join("rgba.png");
    // varying grey ramp in RGB, fully opaque alpha
    let img = image::RgbaImage::from_fn(16, 4, |x, _| {
        let v = (x * 16) as u8;
        image::Rgba([v, v, v, 255])
    });
    img.save(&path).expect("write");
    let mut s = spec(dir.path());
    s.resize_to = None;
    s.merge_channels = false;
    let sample = decode_sample(&path, &s).expect("opaque RGBA accepted");
    assert_eq!(sample.shape, [4, 16, 4]);
    // alpha (channel 3) is −1; the ramp spans [-1, 1]
    assert!(sample.data.chunks_exact(4).all(|p| p[3] == -1.0));
    assert_eq!(sample.data[0], -1.0);
    assert_eq!(sample.data[15 * 4], 1.0);
}
