//! PNG decoding into exactly the tensor `torchvision.transforms.ToTensor()` makes of the
//! `PIL.Image.open(path)` image the reference loaders start from (Pillow 13, no `convert`).
//!
//! Pillow's choice of mode, and ToTensor's treatment of it, fix the channels and values:
//!
//! | PNG (colour type, depth) | Pillow mode | ToTensor → our samples |
//! |---|---|---|
//! | grey 1 / 2 / 4 / 8 | `1` / `L` | 1 channel, `v / 255` after scaling to 8 bits (×255, ×85, ×17) |
//! | grey 16 | `I;16` | 1 channel, the **int16** tensor `np.array(pic, np.int16)`: values above 32767 wrap negative, no division ([`Samples::Int16`]) |
//! | grey+alpha 8 | `LA` | 2 channels (alpha kept), `v / 255` |
//! | grey+alpha 16 | `RGBA` | 4 channels `L, L, L, A` of the high bytes, `/ 255` |
//! | RGB 8 / 16 | `RGB` | 3 channels; 16-bit keeps the high byte; `/ 255` |
//! | RGBA 8 / 16 | `RGBA` | 4 channels (alpha kept); 16-bit keeps the high byte; `/ 255` |
//! | palette | `P` | refused: the reference reads palette *indices*, not colours |
//!
//! A `tRNS` chunk leaves Pillow's mode alone (transparency goes to `info`, which ToTensor
//! ignores), whereas the `image` crate expands it into an alpha channel: that channel is dropped
//! here. Gamma, ICC and EXIF data are ignored by both.

use super::{Image2d, Image2dError, Samples};
use image::codecs::png::PngDecoder;
use image::{DynamicImage, ImageDecoder, Limits};
use std::io::Cursor;
use std::path::Path;

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// PNG colour types (IHDR byte 25).
const GREY: u8 = 0;
const RGB: u8 = 2;
const PALETTE: u8 = 3;
const GREY_ALPHA: u8 = 4;
const RGBA: u8 = 6;

/// How one output sample is made from a decoded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// 8-bit sample (low bit depths already scaled to 8 bits): `v / 255`.
    Byte,
    /// 16-bit colour sample that Pillow reduces to its high byte: `(v >> 8) / 255`.
    HighByte,
    /// 16-bit grey that ToTensor reads as int16: the bit pattern as a signed integer.
    SignedInt16,
}

/// What the reference tensor is built from: which decoded channels, converted how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    channels: Vec<usize>,
    conversion: Conversion,
}

/// The reference layout for a PNG colour type and bit depth (see the module table).
fn reference_layout(colour_type: u8, depth: u8, path: &Path) -> Result<Layout, Image2dError> {
    let unsupported = |what: String| Image2dError::Unsupported {
        path: path.to_path_buf(),
        what,
    };
    let byte_or_high = |depth: u8| -> Result<Conversion, Image2dError> {
        match depth {
            8 => Ok(Conversion::Byte),
            16 => Ok(Conversion::HighByte),
            d => Err(unsupported(format!(
                "bit depth {d} with colour type {colour_type}"
            ))),
        }
    };
    Ok(match colour_type {
        GREY => match depth {
            1 | 2 | 4 | 8 => Layout {
                channels: vec![0],
                conversion: Conversion::Byte,
            },
            16 => Layout {
                channels: vec![0],
                conversion: Conversion::SignedInt16,
            },
            d => return Err(unsupported(format!("greyscale bit depth {d}"))),
        },
        RGB => Layout {
            channels: vec![0, 1, 2],
            conversion: byte_or_high(depth)?,
        },
        GREY_ALPHA => match depth {
            8 => Layout {
                channels: vec![0, 1],
                conversion: Conversion::Byte,
            },
            // Pillow opens 16-bit grey+alpha as RGBA: grey replicated, alpha last.
            16 => Layout {
                channels: vec![0, 0, 0, 1],
                conversion: Conversion::HighByte,
            },
            d => return Err(unsupported(format!("grey+alpha bit depth {d}"))),
        },
        RGBA => Layout {
            channels: vec![0, 1, 2, 3],
            conversion: byte_or_high(depth)?,
        },
        PALETTE => {
            return Err(unsupported(
                "palette (indexed-colour) PNG: the reference pipeline reads palette indices, \
                 not colours; convert it to greyscale or RGB first"
                    .into(),
            ))
        }
        t => return Err(unsupported(format!("colour type {t}"))),
    })
}

/// `(colour type, bit depth)` from the IHDR chunk, which the PNG format requires to come first.
fn read_header(bytes: &[u8], path: &Path) -> Result<(u8, u8), Image2dError> {
    let not_png = |reason| Image2dError::NotPng {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < SIGNATURE.len() || &bytes[..8] != SIGNATURE {
        return Err(not_png("no PNG signature"));
    }
    // signature (8) | length (4) | "IHDR" (4) | width (4) | height (4) | depth | colour type
    if bytes.len() < 33 || &bytes[12..16] != b"IHDR" {
        return Err(not_png("missing or truncated IHDR chunk"));
    }
    Ok((bytes[25], bytes[24]))
}

/// Decoded samples of either width, with the decoder's channel count.
enum Decoded<'a> {
    U8(&'a [u8], usize),
    U16(&'a [u16], usize),
}

fn decoded_samples(img: &DynamicImage) -> Option<Decoded<'_>> {
    use DynamicImage::*;
    Some(match img {
        ImageLuma8(b) => Decoded::U8(b.as_raw(), 1),
        ImageLumaA8(b) => Decoded::U8(b.as_raw(), 2),
        ImageRgb8(b) => Decoded::U8(b.as_raw(), 3),
        ImageRgba8(b) => Decoded::U8(b.as_raw(), 4),
        ImageLuma16(b) => Decoded::U16(b.as_raw(), 1),
        ImageLumaA16(b) => Decoded::U16(b.as_raw(), 2),
        ImageRgb16(b) => Decoded::U16(b.as_raw(), 3),
        ImageRgba16(b) => Decoded::U16(b.as_raw(), 4),
        _ => return None,
    })
}

/// Decode PNG bytes (`path` only names the source in errors).
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<Image2d, Image2dError> {
    let (colour_type, depth) = read_header(bytes, path)?;
    let layout = reference_layout(colour_type, depth, path)?;
    let decode_err = |source| Image2dError::Decode {
        path: path.to_path_buf(),
        source,
    };
    // Default limits cap allocations (512 MiB), so a decompression bomb is an error. The limits
    // only cover the decoder's own buffers: the output buffer `from_decoder` allocates must be
    // reserved against them here, or a header claiming a huge image aborts the process in the
    // allocator (found by runtime/tests/decode_fuzz.rs).
    let mut limits = Limits::default();
    let decoder =
        PngDecoder::with_limits(Cursor::new(bytes), limits.clone()).map_err(decode_err)?;
    limits.reserve(decoder.total_bytes()).map_err(decode_err)?;
    let img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let unexpected = || Image2dError::Unsupported {
        path: path.to_path_buf(),
        what: format!(
            "decoder returned {:?} for colour type {colour_type}, bit depth {depth}",
            img.color()
        ),
    };
    let decoded = decoded_samples(&img).ok_or_else(unexpected)?;
    let stride = match decoded {
        Decoded::U8(_, s) | Decoded::U16(_, s) => s,
    };
    let max_channel = layout.channels.iter().copied().max().unwrap_or(0);
    let width_matches = matches!(
        (&decoded, layout.conversion),
        (Decoded::U8(..), Conversion::Byte)
            | (
                Decoded::U16(..),
                Conversion::HighByte | Conversion::SignedInt16
            )
    );
    if !width_matches || max_channel >= stride {
        return Err(unexpected());
    }

    let channels = layout.channels.len();
    let mut data = Vec::with_capacity(width * height * channels);
    match decoded {
        Decoded::U8(raw, _) => {
            for pixel in raw.chunks_exact(stride) {
                data.extend(layout.channels.iter().map(|&k| pixel[k] as f32 / 255.0));
            }
        }
        Decoded::U16(raw, _) => {
            for pixel in raw.chunks_exact(stride) {
                data.extend(layout.channels.iter().map(|&k| match layout.conversion {
                    Conversion::SignedInt16 => pixel[k] as i16 as f32,
                    _ => (pixel[k] >> 8) as f32 / 255.0,
                }));
            }
        }
    }
    let samples = match layout.conversion {
        Conversion::SignedInt16 => Samples::Int16,
        _ => Samples::Float,
    };
    Ok(Image2d {
        height,
        width,
        channels,
        data,
        samples,
    })
}

/// Read and decode a PNG file: the reference's `PIL.Image.open` → `ToTensor`, channels-last.
pub fn load_png(path: &Path) -> Result<Image2d, Image2dError> {
    let bytes = std::fs::read(path).map_err(|source| Image2dError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode_png(&bytes, path)
}
