//! Image preprocessing: encoded bytes -> the image encoder's input tensor.
//!
//! Steps, as in open_clip / torchvision (the Python side uses PIL):
//! 1. guess the format from the bytes (JPEG, PNG or WebP only) and read the dimensions
//!    from the header; the byte and pixel limits are checked here, before decoding;
//! 2. decode and convert to RGB8;
//! 3. resize so that the shortest edge is `resize` pixels (the long edge becomes
//!    `round(long * resize / short)`, halves to even, at least 1), with a triangle filter
//!    for "bilinear" and Catmull-Rom for "bicubic", both widened when downsampling
//!    (antialiased, like PIL); an image already of that size is not resampled;
//! 4. centre-crop `crop` x `crop` at offsets `floor((size - crop) / 2)`;
//! 5. scale to [0, 1], subtract `mean`, divide by `std` per channel, lay out as CHW.
//!
//! The output is a `Vec<f32>` of length `3 * crop * crop`.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Interpolation of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Triangle (linear) filter, antialiased when downsampling.
    Bilinear,
    /// Catmull-Rom cubic filter, antialiased when downsampling.
    Bicubic,
}

/// `image.preprocess` section of a bundle manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// The shortest edge is resized to this many pixels.
    pub resize: u32,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Side of the centre crop; the encoder's input is `[3, crop, crop]`.
    pub crop: u32,
    /// Per-channel mean (RGB) subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB) divided by after the mean.
    pub std: [f32; 3],
}

impl Preprocess {
    /// Number of floats in one preprocessed image: `3 * crop * crop`.
    pub fn tensor_len(&self) -> usize {
        3 * (self.crop as usize) * (self.crop as usize)
    }

    /// Checks the values; the error starts with the field name.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.resize == 0 || self.crop == 0 {
            return Err(format!(
                "resize ({}) and crop ({}) must be positive",
                self.resize, self.crop
            ));
        }
        if self.crop > self.resize {
            return Err(format!(
                "crop ({}) must not exceed resize ({})",
                self.crop, self.resize
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("std: must be positive, got {:?}", self.std));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("mean: must be finite, got {:?}", self.mean));
        }
        Ok(())
    }
}

/// Limits on untrusted images, checked before the pixels are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLimits {
    /// Largest accepted encoded size in bytes.
    pub max_bytes: u64,
    /// Largest accepted width x height.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 16 MiB and 40 megapixels.
    fn default() -> Self {
        ImageLimits {
            max_bytes: 16 << 20,
            max_pixels: 40_000_000,
        }
    }
}

/// Decodes JPEG/PNG/WebP `bytes` and preprocesses them into a `[3, crop, crop]` tensor.
pub fn decode_and_preprocess(
    bytes: &[u8],
    p: &Preprocess,
    limits: &ImageLimits,
) -> Result<Vec<f32>> {
    let rgb = decode_rgb(bytes, limits)?;
    preprocess_rgb(&rgb, p)
}

/// Decodes JPEG/PNG/WebP `bytes` into RGB8, enforcing `limits` before the full decode.
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::ImageTooLarge {
            what: "encoded size in bytes",
            actual: bytes.len() as u64,
            limit_name: "max_image_bytes",
            limit: limits.max_bytes,
        });
    }
    if bytes.is_empty() {
        return Err(Error::ImageDecode("empty image".into()));
    }

    let format = image::guess_format(bytes).map_err(|_| {
        Error::ImageDecode("unrecognised image format (JPEG, PNG or WebP accepted)".into())
    })?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP
    ) {
        return Err(Error::ImageDecode(format!(
            "format {format:?} is not accepted (JPEG, PNG or WebP)"
        )));
    }

    // Header only: dimensions before any pixel is decoded.
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| Error::ImageDecode(e.to_string()))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Error::ImageTooLarge {
            what: "pixels (width x height)",
            actual: pixels,
            limit_name: "max_image_pixels",
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(Error::ImageDecode(format!(
            "image has no pixels ({w} x {h})"
        )));
    }

    // The decoder's own allocation limit backs the header check up (a header can lie).
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(w);
    decoder_limits.max_image_height = Some(h);
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(decoder_limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => Error::ImageDecode(format!(
            "decoding needs more memory than max_image_pixels ({}) allows: {l}",
            limits.max_pixels
        )),
        other => Error::ImageDecode(other.to_string()),
    })?;
    Ok(img.to_rgb8())
}

/// Resize, centre crop, scale and normalise an RGB8 image into a `[3, crop, crop]` tensor.
///
/// Errors only when `p` itself is invalid (crop larger than resize, zero sizes).
pub fn preprocess_rgb(img: &RgbImage, p: &Preprocess) -> Result<Vec<f32>> {
    p.check()
        .map_err(|m| Error::invalid(format!("preprocess.{m}")))?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::ImageDecode(format!(
            "image has no pixels ({w} x {h})"
        )));
    }
    let (nw, nh) = resized_dims(w, h, p.resize);
    let filter = match p.interpolation {
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    };
    let resized;
    let src = if (nw, nh) == (w, h) {
        img
    } else {
        resized = image::imageops::resize(img, nw, nh, filter);
        &resized
    };

    let crop = p.crop;
    let left = crop_offset(nw, crop);
    let top = crop_offset(nh, crop);
    let plane = (crop as usize) * (crop as usize);
    let mut out = vec![0f32; 3 * plane];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * p.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| p.mean[c] / p.std[c]);
    for y in 0..crop {
        for x in 0..crop {
            let px = src.get_pixel(left + x, top + y).0;
            let i = (y as usize) * (crop as usize) + x as usize;
            for c in 0..3 {
                out[c * plane + i] = f32::from(px[c]) * scale[c] - shift[c];
            }
        }
    }
    Ok(out)
}

/// Size after resizing the shortest edge to `size`: the long edge becomes
/// `round(long * size / short)` (halves to even, as Python's `round`), at least 1.
fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let short = u64::from(short.max(1));
    let num = u64::from(long) * u64::from(size);
    let (q, r) = (num / short, num % short);
    let new_long = match (2 * r).cmp(&short) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q % 2),
        std::cmp::Ordering::Less => q,
    };
    let new_long = u32::try_from(new_long.max(1)).unwrap_or(u32::MAX);
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Offset of a centre crop: `floor((size - crop) / 2)`.
fn crop_offset(size: u32, crop: u32) -> u32 {
    size.saturating_sub(crop) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    fn spec(resize: u32, crop: u32) -> Preprocess {
        Preprocess {
            resize,
            interpolation: Interpolation::Bilinear,
            crop,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
        }
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 200])
        })
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    #[test]
    fn resized_dims_round_like_python() {
        assert_eq!(resized_dims(32, 32, 32), (32, 32));
        assert_eq!(resized_dims(50, 40, 32), (40, 32));
        assert_eq!(resized_dims(40, 50, 32), (32, 40));
        assert_eq!(resized_dims(33, 64, 32), (32, 62));
        // 6 * 3 / 4 = 4.5 -> 4 and 10 * 3 / 4 = 7.5 -> 8 (halves to even, as Python)
        assert_eq!(resized_dims(6, 4, 3), (4, 3));
        assert_eq!(resized_dims(4, 10, 3), (3, 8));
        assert_eq!(resized_dims(640, 480, 224), (299, 224));
        assert_eq!(crop_offset(40, 32), 4);
        assert_eq!(crop_offset(41, 32), 4);
        assert_eq!(crop_offset(32, 32), 0);
    }

    #[test]
    fn identity_size_is_exact_normalisation() {
        let img = gradient(8, 8);
        let t = preprocess_rgb(&img, &spec(8, 8)).unwrap();
        assert_eq!(t.len(), 3 * 64);
        let p = img.get_pixel(3, 5).0;
        let i = 5 * 8 + 3;
        assert!((t[i] - (f32::from(p[0]) / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        assert!((t[64 + i] - (f32::from(p[1]) / 255.0 - 0.25) / 0.25).abs() < 1e-6);
        assert!((t[128 + i] - f32::from(p[2]) / 255.0).abs() < 1e-6);
    }

    #[test]
    fn centre_crop_takes_the_middle() {
        // 12 x 8 image, resize 8 keeps it, crop 4: left (12-4)/2 = 4, top (8-4)/2 = 2.
        let img = gradient(12, 8);
        let t = preprocess_rgb(&img, &spec(8, 4)).unwrap();
        let p = img.get_pixel(4, 2).0;
        assert!((t[0] - (f32::from(p[0]) / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    }

    #[test]
    fn formats_decode() {
        let img = gradient(20, 10);
        let p = spec(8, 8);
        let lim = ImageLimits::default();
        let from_png = decode_and_preprocess(&png(&img), &p, &lim).unwrap();

        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .write_image(img.as_raw(), 20, 10, image::ExtendedColorType::Rgb8)
            .unwrap();
        let from_jpeg = decode_and_preprocess(&jpeg, &p, &lim).unwrap();

        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(img.as_raw(), 20, 10, image::ExtendedColorType::Rgb8)
            .unwrap();
        let from_webp = decode_and_preprocess(&webp, &p, &lim).unwrap();

        assert_eq!(from_png, from_webp);
        let max = from_png
            .iter()
            .zip(&from_jpeg)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 0.2, "JPEG differs by {max}");
    }

    #[test]
    fn grey_and_alpha_become_rgb() {
        let grey = image::GrayImage::from_fn(6, 6, |x, _| image::Luma([(x * 40) as u8]));
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(grey.as_raw(), 6, 6, image::ExtendedColorType::L8)
            .unwrap();
        let t = decode_and_preprocess(&bytes, &spec(6, 6), &ImageLimits::default()).unwrap();
        assert_eq!(t.len(), 3 * 36);
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let bytes = png(&gradient(64, 64));
        let p = spec(8, 8);

        let small_bytes = ImageLimits {
            max_bytes: 100,
            max_pixels: 1 << 20,
        };
        match decode_and_preprocess(&bytes, &p, &small_bytes) {
            Err(Error::ImageTooLarge {
                limit_name: "max_image_bytes",
                ..
            }) => {}
            other => panic!("expected max_bytes error, got {other:?}"),
        }

        // Header intact, pixel data cut off: the pixel limit must fire before decoding.
        let truncated = &bytes[..60];
        let few_pixels = ImageLimits {
            max_bytes: 1 << 20,
            max_pixels: 1000,
        };
        match decode_and_preprocess(truncated, &p, &few_pixels) {
            Err(Error::ImageTooLarge {
                limit_name: "max_image_pixels",
                actual: 4096,
                ..
            }) => {}
            other => panic!("expected max_pixels error, got {other:?}"),
        }
        let msg = decode_and_preprocess(truncated, &p, &few_pixels)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("max_image_pixels"), "{msg}");

        // With room for the pixels the truncated file is a decode error, not a panic.
        match decode_and_preprocess(truncated, &p, &ImageLimits::default()) {
            Err(Error::ImageDecode(_)) => {}
            other => panic!("expected decode error, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let lim = ImageLimits::default();
        let p = spec(8, 8);
        assert!(matches!(
            decode_and_preprocess(&[], &p, &lim),
            Err(Error::ImageDecode(_))
        ));
        assert!(matches!(
            decode_and_preprocess(b"not an image at all", &p, &lim),
            Err(Error::ImageDecode(_))
        ));
        // A GIF signature is recognised but not accepted.
        assert!(matches!(
            decode_and_preprocess(b"GIF89a\x01\x00\x01\x00", &p, &lim),
            Err(Error::ImageDecode(_))
        ));
    }

    #[test]
    fn invalid_spec_is_an_error() {
        assert!(preprocess_rgb(&gradient(8, 8), &spec(4, 8)).is_err());
    }
}
