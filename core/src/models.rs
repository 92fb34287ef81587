//! The image-side ONNX models of a bundle: image encoder and the JSCC pairs.
//!
//! [`Models`] loads every session once and is `Send + Sync`; share it behind an `Arc`.
//! Single-item methods are thin wrappers over the batched ones, which services should
//! prefer for throughput. Tensor conventions are those of docs/bundle.md: embeddings z and
//! z_hat have `embed_dim` values, frames have 2k interleaved reals, SNR is in dB
//! (`10 log10(1/s2)`, unit symbol energy).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::runtime::{resolve_provider, Device, Input, OnnxSession, Provider, RuntimeOptions};

/// The JSCC encoder and decoder for one k.
#[derive(Debug)]
struct JsccPair {
    /// "z" [N,D], "snr_db" [N,1] -> "symbols" [N,2k].
    encoder: OnnxSession,
    /// "symbols" [N,2k], "snr_db" [N,1] -> "z_hat" [N,D].
    decoder: OnnxSession,
}

/// Image encoder and JSCC sessions of one bundle.
#[derive(Debug)]
pub struct Models {
    /// "pixels" [N,3,S,S] -> "embedding" [N,D].
    image: OnnxSession,
    /// One pair per k, ordered by k.
    jscc: BTreeMap<u32, JsccPair>,
    /// D.
    embed_dim: usize,
    /// S, the side of the preprocessed image.
    image_size: usize,
    /// The k used when none is chosen.
    default_k: u32,
    /// The provider all sessions run on.
    provider: Provider,
    /// The options the sessions were made with (reused by [`crate::text::TextSide`]).
    options: RuntimeOptions,
}

impl Models {
    /// Loads the image encoder and every JSCC pair of `bundle` on `device`.
    pub fn load(bundle: &Bundle, device: Device) -> Result<Models> {
        Self::load_with(bundle, &RuntimeOptions::with_device(device))
    }

    /// Loads with explicit runtime options (threads, pool size).
    pub fn load_with(bundle: &Bundle, opts: &RuntimeOptions) -> Result<Models> {
        let m = &bundle.manifest;
        let provider = resolve_provider(opts.device)?;
        let load = |name: &str| OnnxSession::load(&bundle.path(name), name, provider, opts);

        let image = load(&m.image.onnx)?;
        image.expect_io(&["pixels"], "embedding")?;
        let mut jscc = BTreeMap::new();
        for spec in &m.jscc {
            let encoder = load(&spec.encoder)?;
            encoder.expect_io(&["z", "snr_db"], "symbols")?;
            let decoder = load(&spec.decoder)?;
            decoder.expect_io(&["symbols", "snr_db"], "z_hat")?;
            jscc.insert(spec.k, JsccPair { encoder, decoder });
        }
        tracing::info!(
            bundle = %m.id,
            version = %m.version,
            %provider,
            ks = ?jscc.keys().collect::<Vec<_>>(),
            "image and JSCC models loaded"
        );
        Ok(Models {
            image,
            jscc,
            embed_dim: m.embed_dim,
            image_size: m.image.preprocess.crop as usize,
            default_k: m.default_k,
            provider,
            options: opts.clone(),
        })
    }

    /// The k values with a JSCC pair, ascending.
    pub fn ks(&self) -> Vec<u32> {
        self.jscc.keys().copied().collect()
    }

    /// The bundle's default k.
    pub fn default_k(&self) -> u32 {
        self.default_k
    }

    /// Dimension D of z and z_hat.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// Side S of the image encoder's input `[3, S, S]`.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// The execution provider the sessions run on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The runtime options the sessions were created with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Image embedding z ([D], L2-normalised) of one preprocessed image `[3, S, S]`.
    pub fn embed_image(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        Ok(self.embed_images(pixels)?.pop().unwrap_or_default())
    }

    /// Embeddings of a batch: `pixels` holds N preprocessed images `[N, 3, S, S]` back to
    /// back; returns N vectors of D values.
    pub fn embed_images(&self, pixels: &[f32]) -> Result<Vec<Vec<f32>>> {
        let per = 3 * self.image_size * self.image_size;
        let n = batch_len(pixels.len(), per, "pixels")?;
        check_finite(pixels, "pixels")?;
        let (shape, out) = self.image.run_f32(
            &[Input::F32(
                "pixels",
                vec![n, 3, self.image_size, self.image_size],
                pixels,
            )],
            "embedding",
        )?;
        split_rows(&self.image, &shape, out, n, self.embed_dim)
    }

    /// Raw JSCC encoder output (2k reals, not power-normalised) for embedding `z` at
    /// `snr_db`.
    pub fn jscc_encode(&self, k: u32, z: &[f32], snr_db: f32) -> Result<Vec<f32>> {
        Ok(self
            .jscc_encode_batch(k, z, &[snr_db])?
            .pop()
            .unwrap_or_default())
    }

    /// Batched JSCC encoding: `z` is `[N, D]` back to back, `snr_db` has N values (or one,
    /// used for every row); returns N frames of 2k raw reals.
    pub fn jscc_encode_batch(&self, k: u32, z: &[f32], snr_db: &[f32]) -> Result<Vec<Vec<f32>>> {
        let pair = self.pair(k)?;
        let n = batch_len(z.len(), self.embed_dim, "z")?;
        check_finite(z, "z")?;
        let snr = snr_column(snr_db, n)?;
        let (shape, out) = pair.encoder.run_f32(
            &[
                Input::F32("z", vec![n, self.embed_dim], z),
                Input::F32("snr_db", vec![n, 1], &snr),
            ],
            "symbols",
        )?;
        split_rows(&pair.encoder, &shape, out, n, 2 * k as usize)
    }

    /// Decodes one received frame (2k reals, already equalised) at `snr_db` into z_hat
    /// ([D], L2-normalised).
    pub fn jscc_decode(&self, k: u32, received: &[f32], snr_db: f32) -> Result<Vec<f32>> {
        Ok(self
            .jscc_decode_batch(k, received, &[snr_db])?
            .pop()
            .unwrap_or_default())
    }

    /// Batched decoding: `received` is `[N, 2k]` back to back, `snr_db` N values (or one).
    pub fn jscc_decode_batch(
        &self,
        k: u32,
        received: &[f32],
        snr_db: &[f32],
    ) -> Result<Vec<Vec<f32>>> {
        let pair = self.pair(k)?;
        let width = 2 * k as usize;
        let n = batch_len(received.len(), width, "received symbols")?;
        check_finite(received, "received symbols")?;
        let snr = snr_column(snr_db, n)?;
        let (shape, out) = pair.decoder.run_f32(
            &[
                Input::F32("symbols", vec![n, width], received),
                Input::F32("snr_db", vec![n, 1], &snr),
            ],
            "z_hat",
        )?;
        split_rows(&pair.decoder, &shape, out, n, self.embed_dim)
    }

    fn pair(&self, k: u32) -> Result<&JsccPair> {
        self.jscc.get(&k).ok_or_else(|| {
            Error::invalid(format!(
                "k = {k} has no JSCC model in this bundle (available: {:?})",
                self.ks()
            ))
        })
    }
}

// The services share one `Models` between tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Models>();
    assert_send_sync::<Arc<Models>>();
};

/// N for a flat batch of `len` values of `per` values each; errors when empty or ragged.
pub(crate) fn batch_len(len: usize, per: usize, what: &str) -> Result<usize> {
    if per == 0 || len == 0 || len % per != 0 {
        return Err(Error::invalid(format!(
            "{what}: {len} values is not a positive multiple of {per}"
        )));
    }
    Ok(len / per)
}

pub(crate) fn check_finite(values: &[f32], what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::invalid(format!(
            "{what}: value {i} is not finite ({})",
            values[i]
        ))),
        None => Ok(()),
    }
}

/// SNR column `[N, 1]`: one value per row, or one value for all rows.
fn snr_column(snr_db: &[f32], n: usize) -> Result<Vec<f32>> {
    check_finite(snr_db, "snr_db")?;
    match snr_db.len() {
        1 => Ok(vec![snr_db[0]; n]),
        len if len == n => Ok(snr_db.to_vec()),
        len => Err(Error::invalid(format!(
            "snr_db: {len} values for a batch of {n}"
        ))),
    }
}

/// Splits an output `[N, width]` into rows, checking the shape the model returned.
pub(crate) fn split_rows(
    session: &OnnxSession,
    shape: &[usize],
    out: Vec<f32>,
    n: usize,
    width: usize,
) -> Result<Vec<Vec<f32>>> {
    if shape != [n, width] {
        return Err(Error::onnx(
            session.name(),
            format!("output shape {shape:?}, expected [{n}, {width}]"),
        ));
    }
    Ok(out.chunks_exact(width).map(<[f32]>::to_vec).collect())
}
