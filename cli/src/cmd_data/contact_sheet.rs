//! A contact sheet: samples drawn as a grid of 8-bit tiles, [-1, 1] mapped to 0..255.
//! A 2D sample `[H, W, C]` is one tile (grey for C = 1 or 2, RGB from the first three channels
//! otherwise); a 3D sample `[D0, D1, D2, 1]` in RAS array order is three tiles, the middle
//! slice across each axis: axial (anterior up), coronal and sagittal (superior up).
//! Tiles keep their aspect ratio inside a square cell.

use anyhow::{bail, Result};
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

/// One sample to draw: channels-last shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetSample {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Gap between cells, and the background colour.
const GAP: u32 = 4;
const BACKGROUND: Rgb<u8> = Rgb([40, 40, 48]);

/// [-1, 1] → 0..255 (clamped; NaN is black).
fn to_u8(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// A `[H, W, C]` image as RGB.
fn image_tile(h: usize, w: usize, c: usize, values: &[f32]) -> Result<RgbImage> {
    if c == 0 || values.len() != h * w * c {
        bail!("{} values for a {h}x{w}x{c} image", values.len());
    }
    let (w32, h32) = (u32::try_from(w)?, u32::try_from(h)?);
    Ok(RgbImage::from_fn(w32, h32, |x, y| {
        let p = &values[(y as usize * w + x as usize) * c..][..c];
        if c >= 3 {
            Rgb([to_u8(p[0]), to_u8(p[1]), to_u8(p[2])])
        } else {
            let g = to_u8(p.iter().sum::<f32>() / c as f32);
            Rgb([g, g, g])
        }
    }))
}

/// Grey slice of a `[d0, d1, d2]` volume: `fixed` is the axis held at its middle; the two other
/// axes `(u, v)` become columns (u) and rows (v, flipped so that larger indices are up).
fn volume_slice(dims: [usize; 3], values: &[f32], fixed: usize) -> Result<RgbImage> {
    let (u_axis, v_axis) = match fixed {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let (nu, nv) = (dims[u_axis], dims[v_axis]);
    let mid = dims[fixed] / 2;
    let (w32, h32) = (u32::try_from(nu)?, u32::try_from(nv)?);
    Ok(RgbImage::from_fn(w32, h32, |x, y| {
        let mut idx = [0usize; 3];
        idx[fixed] = mid;
        idx[u_axis] = x as usize;
        idx[v_axis] = nv - 1 - y as usize;
        let g = to_u8(values[(idx[0] * dims[1] + idx[1]) * dims[2] + idx[2]]);
        Rgb([g, g, g])
    }))
}

/// The tiles of one sample (1 for 2D, 3 for 3D).
fn sample_tiles(s: &SheetSample) -> Result<Vec<RgbImage>> {
    match *s.shape.as_slice() {
        [h, w, c] if h > 0 && w > 0 => Ok(vec![image_tile(h, w, c, &s.values)?]),
        [d0, d1, d2, 1] if d0 > 0 && d1 > 0 && d2 > 0 => {
            if s.values.len() != d0 * d1 * d2 {
                bail!("{} values for a {d0}x{d1}x{d2} volume", s.values.len());
            }
            // axial (hold S), coronal (hold A), sagittal (hold R)
            [2, 1, 0]
                .iter()
                .map(|&fixed| volume_slice([d0, d1, d2], &s.values, fixed))
                .collect()
        }
        _ => bail!(
            "cannot draw a sample of shape {:?} (expected [H, W, C] or [D, H, W, 1])",
            s.shape
        ),
    }
}

/// Scale `img` to fit a `tile × tile` square (aspect kept) and centre it there.
fn fit(img: &RgbImage, tile: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = f64::from(tile) / f64::from(w.max(h));
    let nw = ((f64::from(w) * scale).round() as u32).clamp(1, tile);
    let nh = ((f64::from(h) * scale).round() as u32).clamp(1, tile);
    let filter = if scale < 1.0 {
        FilterType::Triangle
    } else {
        FilterType::Nearest
    };
    let scaled = imageops::resize(img, nw, nh, filter);
    let mut cell = RgbImage::from_pixel(tile, tile, BACKGROUND);
    imageops::replace(
        &mut cell,
        &scaled,
        i64::from((tile - nw) / 2),
        i64::from((tile - nh) / 2),
    );
    cell
}

/// Draw `samples` as a grid of `tile`-pixel cells, about square overall.
pub fn render(samples: &[SheetSample], tile: u32) -> Result<RgbImage> {
    if samples.is_empty() || tile == 0 {
        bail!("nothing to draw");
    }
    let groups: Vec<Vec<RgbImage>> = samples.iter().map(sample_tiles).collect::<Result<_>>()?;
    let per_group = groups.iter().map(Vec::len).max().unwrap_or(1);
    // Groups per row: about sqrt(total tiles) tiles wide.
    let total_tiles = (groups.len() * per_group) as f64;
    let cols = ((total_tiles.sqrt() / per_group as f64).ceil() as usize).max(1);
    let rows = groups.len().div_ceil(cols);
    let cell = tile + GAP;
    let width = u32::try_from(cols * per_group)? * cell + GAP;
    let height = u32::try_from(rows)? * cell + GAP;
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    for (g, tiles) in groups.iter().enumerate() {
        let (row, col) = ((g / cols) as u32, (g % cols) as u32);
        for (t, img) in tiles.iter().enumerate() {
            let x = GAP + (col * per_group as u32 + t as u32) * cell;
            let y = GAP + row * cell;
            imageops::replace(&mut sheet, &fit(img, tile), i64::from(x), i64::from(y));
        }
    }
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_mapping_ends_and_nan() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(0.0), 128); // 127.5 rounds away from zero
        assert_eq!(to_u8(3.0), 255);
        assert_eq!(to_u8(f32::NAN), 0);
    }

    #[test]
    fn volume_slices_hold_the_middle_index() {
        // A 3x4x5 volume whose value encodes its own index: check the axial slice (c = 2)
        // puts (a, b) at column a, row (3 - b).
        let dims = [3, 4, 5];
        let n = 60;
        let values: Vec<f32> = (0..n)
            .map(|i| -1.0 + 2.0 * i as f32 / (n - 1) as f32)
            .collect();
        let axial = volume_slice(dims, &values, 2).unwrap();
        assert_eq!(axial.dimensions(), (3, 4));
        let expect = |a: usize, b: usize| to_u8(values[(a * 4 + b) * 5 + 2]);
        assert_eq!(axial.get_pixel(1, 0)[0], expect(1, 3));
        assert_eq!(axial.get_pixel(2, 3)[0], expect(2, 0));
        let sagittal = volume_slice(dims, &values, 0).unwrap();
        assert_eq!(sagittal.dimensions(), (4, 5));
        assert_eq!(sagittal.get_pixel(3, 0)[0], to_u8(values[(4 + 3) * 5 + 4]));
    }

    #[test]
    fn grid_size_and_bad_shapes() {
        let s2 = SheetSample {
            shape: vec![2, 3, 1],
            values: vec![0.0; 6],
        };
        let sheet = render(&vec![s2.clone(); 5], 16).unwrap();
        // 5 tiles: 3 columns, 2 rows
        assert_eq!(sheet.dimensions(), (3 * 20 + 4, 2 * 20 + 4));
        let s3 = SheetSample {
            shape: vec![2, 2, 2, 1],
            values: vec![0.5; 8],
        };
        let sheet = render(&[s3], 16).unwrap();
        assert_eq!(sheet.dimensions(), (3 * 20 + 4, 20 + 4));
        let bad = SheetSample {
            shape: vec![4],
            values: vec![0.0; 4],
        };
        assert!(render(&[bad], 16).is_err());
        let short = SheetSample {
            shape: vec![2, 2, 1],
            values: vec![0.0; 3],
        };
        assert!(render(&[short], 16).is_err());
    }
}
