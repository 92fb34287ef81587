//! Image preprocessing: encoded bytes -> the image encoder's input tensor.
//!
//! Steps, as in open_clip / torchvision (the Python side uses PIL):
//! 1. guess the format from the bytes (JPEG, PNG or WebP only) and read the dimensions
//!    from the header; the byte and pixel limits are checked here, before decoding;
//! 2. decode and convert to RGB8;
//! 3. resize so that the shortest edge is `resize` pixels (the long edge becomes
//!    `floor(resize * long / short)`), with a triangle filter for "bilinear" and
//!    Catmull-Rom for "bicubic", both widened when downsampling (antialiased, like PIL);
//! 4. centre-crop `crop` x `crop` (offset `round((size - crop) / 2)`, halves to even);
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
    Ok(preprocess_rgb(&rgb, p))
}

/// Decodes JPEG/PNG/WebP `bytes` into RGB8, enforcing `limits` before the full decode.
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::ImageTooLarge {
            what: "encoded size in bytes",
            actual: bytes.len() as u64,
            limit_name: "max_bytes",
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
            limit_name: "max_pixels",
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
            "decoding needs more memory than max_pixels ({}) allows: {l}",
            limits.max_pixels
        )),
        other => Error::ImageDecode(other.to_string()),
    })?;
    Ok(img.to_rgb8())
}

/// Resize, centre crop, scale and normalise an RGB8 image into a `[3, crop, crop]` tensor.
pub fn preprocess_rgb(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    let (w, h) = img.dimensions();
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
    out
}

/// Size after resizing the shortest edge to `size` (long edge truncated, as torchvision).
fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((u64::from(size) * u64::from(long)) / u64::from(short.max(1))) as u32;
    let new_long = new_long.max(size);
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Offset of a centre crop: round((size - crop) / 2) with halves rounded to even.
fn crop_offset(size: u32, crop: u32) -> u32 {
    let diff = size.saturating_sub(crop);
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}
