//! The two ends of the link as used by the services, the CLI and the benchmarks.
//!
//! [`Transmitter`]: image bytes -> preprocessed pixels -> z (image encoder) -> 2k raw reals
//! (JSCC encoder, told the SNR) -> power-normalised frame (`(1/k) sum |x_i|^2 = 1`).
//!
//! [`Receiver`]: received frame -> coherent equalisation with the known h -> z_hat (JSCC
//! decoder, told the effective SNR) -> class probabilities against text features from
//! caller templates or the learned TAPL prompt.
//!
//! Every call reports per-stage wall-clock times so that services can publish them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::channel::equalise;
use crate::classify::{probabilities, top_k};
use crate::error::{Error, Result};
use crate::models::Models;
use crate::power::normalise_power;
use crate::preprocess::{decode_and_preprocess, ImageLimits, Preprocess};
use crate::text::TextSide;

/// Transmitter-side stage times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EncodeTimings {
    /// Decode, resize, crop and normalise.
    pub preprocess: Duration,
    /// Image encoder run.
    pub image_encode: Duration,
    /// JSCC encoder run and power normalisation.
    pub jscc_encode: Duration,
}

impl EncodeTimings {
    /// Sum of the stages.
    pub fn total(&self) -> Duration {
        self.preprocess + self.image_encode + self.jscc_encode
    }
}

/// One encoded image.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Image embedding z ([D], L2-normalised).
    pub z: Vec<f32>,
    /// Power-normalised frame: 2k interleaved reals, `(1/k) sum |x_i|^2 = 1`.
    pub symbols: Vec<f32>,
    /// Complex channel uses.
    pub k: u32,
    /// SNR in dB the JSCC encoder was told.
    pub snr_db: f32,
    /// Stage times. In a batch call each image carries the batch's times divided by the
    /// batch size.
    pub timings: EncodeTimings,
}

/// Image bytes to power-normalised symbol frames.
#[derive(Debug, Clone)]
pub struct Transmitter {
    /// Shared sessions (image encoder, JSCC).
    models: Arc<Models>,
    /// The bundle's preprocessing.
    preprocess: Preprocess,
    /// Limits on incoming images.
    limits: ImageLimits,
}

impl Transmitter {
    /// A transmitter for `bundle` using the loaded `models`.
    pub fn new(bundle: &Bundle, models: Arc<Models>, limits: ImageLimits) -> Transmitter {
        Transmitter {
            models,
            preprocess: bundle.manifest.image.preprocess.clone(),
            limits,
        }
    }

    /// The shared models.
    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    /// The image limits in force.
    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// Encodes one JPEG/PNG/WebP image into a frame of k channel uses at `snr_db`.
    pub fn encode_image(&self, bytes: &[u8], k: u32, snr_db: f32) -> Result<Encoded> {
        let mut out = self.encode_images(&[bytes], k, snr_db)?;
        out.pop()
            .ok_or_else(|| Error::invalid("no image was encoded"))
    }

    /// Encodes a batch of images with one image-encoder and one JSCC run. Any image
    /// that fails to decode fails the whole batch (the error names its index).
    pub fn encode_images(&self, images: &[&[u8]], k: u32, snr_db: f32) -> Result<Vec<Encoded>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        if !self.models.ks().contains(&k) {
            return Err(Error::invalid(format!(
                "k = {k} has no JSCC model in this bundle (available: {:?})",
                self.models.ks()
            )));
        }
        if !snr_db.is_finite() {
            return Err(Error::invalid(format!("SNR {snr_db} dB is not finite")));
        }
        let n = images.len();

        let t0 = Instant::now();
        let mut pixels = Vec::with_capacity(n * self.preprocess.tensor_len());
        for (i, bytes) in images.iter().enumerate() {
            let p = decode_and_preprocess(bytes, &self.preprocess, &self.limits).map_err(|e| {
                if n == 1 {
                    e
                } else {
                    prefix_error(e, &format!("image {i}"))
                }
            })?;
            pixels.extend_from_slice(&p);
        }
        let t1 = Instant::now();
        let zs = self.models.embed_images(&pixels)?;
        let t2 = Instant::now();
        let flat: Vec<f32> = zs.iter().flatten().copied().collect();
        let mut frames = self.models.jscc_encode_batch(k, &flat, &[snr_db])?;
        for f in &mut frames {
            normalise_power(f)?;
        }
        let t3 = Instant::now();

        let per = |d: Duration| d / n as u32;
        let timings = EncodeTimings {
            preprocess: per(t1 - t0),
            image_encode: per(t2 - t1),
            jscc_encode: per(t3 - t2),
        };
        Ok(zs
            .into_iter()
            .zip(frames)
            .map(|(z, symbols)| Encoded {
                z,
                symbols,
                k,
                snr_db,
                timings,
            })
            .collect())
    }
}

/// Adds which item of a batch failed to an error's message.
fn prefix_error(e: Error, what: &str) -> Error {
    match e {
        Error::ImageDecode(m) => Error::ImageDecode(format!("{what}: {m}")),
        Error::InvalidInput(m) => Error::InvalidInput(format!("{what}: {m}")),
        other => other,
    }
}

/// Receiver-side stage times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeTimings {
    /// Equalisation and JSCC decoder run.
    pub jscc_decode: Duration,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Received embedding z_hat ([D], L2-normalised).
    pub z_hat: Vec<f32>,
    /// SNR in dB the decoder was told: `snr_db + 10 log10 |h|^2`.
    pub effective_snr_db: f32,
    /// Stage times.
    pub timings: DecodeTimings,
}

/// The channel a z_hat came through: what the learned prompt's prior correction depends on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReceivedAt {
    /// Complex channel uses of the frame.
    pub k: u32,
    /// SNR in dB the decoder was told ([`Decoded::effective_snr_db`]).
    pub snr_db: f32,
}

/// Which prompt produced the class features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// TAPL: context vectors plus the meta-net bias of this z_hat.
    Learned,
    /// Caller templates, or the bundle's default template.
    Template,
}

/// Classification stage times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassifyTimings {
    /// Text features (near zero on a template-cache hit).
    pub text_features: Duration,
    /// Cosines and softmax.
    pub classify: Duration,
}

/// The answer to a classification query.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The top labels with their probabilities, most probable first.
    pub top: Vec<(String, f32)>,
    /// Probabilities of every label, in the caller's label order.
    pub probabilities: Vec<f32>,
    /// The prompt used.
    pub prompt: PromptKind,
    /// Strength of the prior correction applied before scoring (0: none; only the learned
    /// prompt is corrected).
    pub prior_strength: f32,
    /// Stage times.
    pub timings: ClassifyTimings,
}

/// Frames to embeddings, and embeddings to zero-shot answers.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Shared sessions (JSCC decoders).
    models: Arc<Models>,
    /// Shared text side (tokenizer, text encoder, TAPL, feature cache).
    text: Arc<TextSide>,
    /// Eq. 5 temperature from the manifest.
    logit_scale: f32,
}

impl Receiver {
    /// A receiver for `bundle` using the loaded models and text side.
    pub fn new(bundle: &Bundle, models: Arc<Models>, text: Arc<TextSide>) -> Receiver {
        Receiver {
            models,
            text,
            logit_scale: bundle.manifest.logit_scale,
        }
    }

    /// The shared models.
    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    /// The shared text side.
    pub fn text(&self) -> &Arc<TextSide> {
        &self.text
    }

    /// Decodes a received frame of k channel uses. `snr_db` is the channel's SNR and `h`
    /// the fading coefficient it reported (`(1, 0)` for AWGN); the frame is equalised
    /// (`y / h`) and the decoder is told the effective SNR.
    pub fn decode(&self, symbols: &[f32], k: u32, snr_db: f32, h: (f32, f32)) -> Result<Decoded> {
        if symbols.len() != 2 * k as usize {
            return Err(Error::invalid(format!(
                "frame has {} values, expected 2k = {}",
                symbols.len(),
                2 * k as usize
            )));
        }
        let t0 = Instant::now();
        let mut y = symbols.to_vec();
        let effective_snr_db = equalise(&mut y, h, snr_db)?;
        let z_hat = self.models.jscc_decode(k, &y, effective_snr_db)?;
        Ok(Decoded {
            z_hat,
            effective_snr_db,
            timings: DecodeTimings {
                jscc_decode: t0.elapsed(),
            },
        })
    }

    /// Classifies z_hat among `labels`. With `templates` empty the learned prompt is used
    /// when the bundle has one, else the bundle's default template. `top_k = 0` returns
    /// every label. `at` is the channel z_hat came through: with the learned prompt, the
    /// bundle's prior correction for that k and SNR is applied before scoring (none when
    /// `at` is `None`).
    pub fn classify(
        &self,
        z_hat: &[f32],
        labels: &[String],
        templates: &[String],
        top_k_count: usize,
        at: Option<ReceivedAt>,
    ) -> Result<Classification> {
        let t0 = Instant::now();
        let learned;
        let cached;
        let (features, prompt): (&[Vec<f32>], PromptKind) =
            if templates.is_empty() && self.text.has_tapl() {
                learned = self.text.learned_features(z_hat, labels)?;
                (&learned, PromptKind::Learned)
            } else {
                cached = self.text.template_features(labels, templates)?;
                (cached.as_slice(), PromptKind::Template)
            };
        let t1 = Instant::now();
        let mut prior_strength = 0.0;
        let corrected;
        let scored = match (prompt, self.text.prior(), at) {
            (PromptKind::Learned, Some(prior), Some(at)) => {
                prior_strength = prior.strength(at.k, at.snr_db);
                corrected = prior.apply(z_hat, prior_strength)?;
                corrected.as_slice()
            }
            _ => z_hat,
        };
        let probs = probabilities(scored, features, self.logit_scale)?;
        let top = top_k(labels, &probs, top_k_count);
        Ok(Classification {
            top,
            probabilities: probs,
            prompt,
            prior_strength,
            timings: ClassifyTimings {
                text_features: t1 - t0,
                classify: t1.elapsed(),
            },
        })
    }
}
