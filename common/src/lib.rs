//! Plumbing shared by the three SemCLIP daemons (transmitter, channel-sim, receiver).
//!
//! Each daemon is a library with a `serve(config, listener, shutdown)` entry point and a thin
//! binary. What they have in common lives here, one module per concept: configuration from
//! flags, environment and an optional file ([`config`]); log output ([`telemetry`]);
//! Prometheus metrics and their HTTP endpoint ([`metrics`]); the shutdown signal
//! ([`shutdown`]); gRPC health, reflection and admission control ([`grpc`]); reconnection
//! delays ([`backoff`]); the acknowledged frame stream to a peer daemon ([`link`]); and the error a `serve` function returns ([`ServeError`]).

pub mod backoff;
pub mod config;
pub mod grpc;
pub mod link;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

mod error;

pub use error::ServeError;

/// Where the ONNX models run; the core library's choice, re-exported for configurations.
pub use semclip_core::runtime::Device;
