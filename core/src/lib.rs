//! Core of the SemCLIP link: model bundles, ONNX inference, preprocessing, power
//! normalisation, the channel, text features and zero-shot classification.
//!
//! Conventions used throughout (docs/bundle.md, DESIGN §3):
//! - symbols are complex baseband values carried as interleaved `(re, im)` f32 pairs; a
//!   frame of k complex channel uses holds 2k floats;
//! - per-image power constraint `(1/k) * sum |x_i|^2 = 1` after [`power::normalise_power`];
//! - SNR in dB is `10 * log10(1 / s2)` for unit symbol energy and complex noise variance
//!   `s2` (`s2 / 2` per real part);
//! - `z` is the transmitted image embedding, `z_hat` the received one, both L2-normalised
//!   with `embed_dim` values.
//!
//! Typical use: [`bundle::Bundle::load`], [`runtime::init_ort`], then
//! [`models::Models::load`] and [`text::TextSide::load`] once, shared behind `Arc`s by
//! [`pipeline::Transmitter`] and [`pipeline::Receiver`].

pub mod bundle;
pub mod channel;
pub mod classify;
pub mod error;
pub mod models;
pub mod pipeline;
pub mod power;
pub mod preprocess;
pub mod prior;
pub mod runtime;
pub mod text;

#[cfg(test)]
pub(crate) mod testing;

pub use bundle::Bundle;
pub use channel::{ChannelModel, ChannelState, Fading};
pub use error::{Error, Result};
pub use models::Models;
pub use pipeline::{Receiver, Transmitter};
pub use preprocess::{ImageLimits, Preprocess};
pub use runtime::{init_ort, Device, Provider, RuntimeOptions};
pub use text::{TextLimits, TextSide};
