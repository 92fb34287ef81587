//! The error a daemon's `serve` function returns when it cannot start or keep serving.

use std::path::PathBuf;

/// Why a daemon stopped other than by a requested shutdown.
///
/// Each message says what failed; the cause is the error's `source()`, so print the whole
/// chain (for example anyhow's `{:#}`) to see both.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed (accepting connections, HTTP/2).
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),

    /// The reflection service could not read the protocol's descriptor set.
    #[error("gRPC reflection service could not be built")]
    Reflection(#[from] tonic_reflection::server::Error),

    /// An I/O step failed (binding the metrics endpoint, reading the local address).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The model bundle or ONNX Runtime could not be loaded.
    #[error("loading model bundle {}", bundle.display())]
    Models {
        /// The bundle directory that was configured.
        bundle: PathBuf,
        /// The core library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A storage backend the daemon needs (for example the receiver's Redis) could not be
    /// opened; the message names it and says why.
    #[error("{0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),

    /// The configuration is inconsistent (for example an upstream URL that does not parse).
    #[error("invalid configuration: {0}")]
    Config(String),
}
