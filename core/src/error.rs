//! The one error type of the crate.
//!
//! Every variant names what was wrong and where (the bundle file and manifest field, the
//! image limit that was exceeded, the ONNX model that failed), so that services can pass
//! the message on to callers unchanged. Nothing in this crate panics on user input.

use std::path::PathBuf;

/// Errors of bundle loading, preprocessing, inference and the channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle directory or its manifest is missing, malformed or inconsistent.
    #[error("bundle {}: {message}", path.display())]
    Bundle {
        /// The file (manifest or part) that is wrong.
        path: PathBuf,
        /// What is wrong, naming the manifest field where there is one.
        message: String,
    },

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },

    /// The image bytes could not be decoded (unknown format, corrupt data).
    #[error("image decode failed: {0}")]
    ImageDecode(String),

    /// The image exceeds one of the configured limits; `limit` names it.
    #[error("image too large: {what} is {actual}, limit {limit_name} = {limit}")]
    ImageTooLarge {
        /// The measured quantity ("encoded size in bytes", "pixels (W x H)").
        what: &'static str,
        /// Its value for this image.
        actual: u64,
        /// The name of the limit (the setting it comes from: `max_image_bytes`, `max_image_pixels`).
        limit_name: &'static str,
        /// The limit's value.
        limit: u64,
    },

    /// A caller-supplied value is out of range or of the wrong shape.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The ONNX Runtime library could not be found or loaded.
    #[error("ONNX Runtime unavailable: {0}")]
    Runtime(String),

    /// The requested execution provider cannot be used.
    #[error("execution provider: {0}")]
    Provider(String),

    /// Loading or running an ONNX model failed.
    #[error("ONNX model {model}: {message}")]
    Onnx {
        /// The model file name within the bundle.
        model: String,
        /// What ONNX Runtime reported, or what in its output was unexpected.
        message: String,
    },

    /// The tokenizer could not be loaded or could not encode a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Bundle`] for `path` with `message`.
    pub(crate) fn bundle(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Bundle {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::InvalidInput`] with `message`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// An [`Error::Onnx`] for the model `model`.
    pub(crate) fn onnx(model: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Onnx {
            model: model.into(),
            message: message.to_string(),
        }
    }
}
