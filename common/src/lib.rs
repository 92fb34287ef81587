//! Plumbing shared by the three SemCLIP daemons (transmitter, channel-sim, receiver).
//!
//! Each daemon is a library with a `serve(config, listener, shutdown)` entry point and a thin
//! binary. What they have in common lives here, one module per concept: configuration from
//! flags, environment and an optional file ([`config`]); log output ([`telemetry`]);
//! Prometheus metrics and their HTTP endpoint ([`metrics`]); the shutdown signal
//! ([`shutdown`]); gRPC health, reflection and admission control ([`grpc`]); reconnection
//! delays ([`backoff`]); and the error a `serve` function returns ([`ServeError`]).

pub mod backoff;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

mod error;

pub use error::ServeError;

/// Where the ONNX models run.
// TODO: replace with a re-export of `semclip_core::runtime::Device` once the core library
// exports it, so that the concept has one type.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when its execution provider can be registered, else the CPU.
    Auto,
    /// The CPU execution provider.
    Cpu,
    /// The CUDA execution provider; failing to register it is an error.
    Cuda,
}
