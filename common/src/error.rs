//! The error a daemon's `serve` function returns when it cannot start or keep serving.

use std::path::PathBuf;

/// Why a daemon stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed (accepting connections, HTTP/2).
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The reflection service could not read the protocol's descriptor set.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),

    /// An I/O step failed (binding the metrics endpoint, reading the local address).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The model bundle or ONNX Runtime could not be loaded.
    #[error("loading model bundle {}: {source}", bundle.display())]
    Models {
        /// The bundle directory that was configured.
        bundle: PathBuf,
        /// The core library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The configuration is inconsistent (for example an upstream URL that does not parse).
    #[error("invalid configuration: {0}")]
    Config(String),
}
