//! Configuration of the channel simulator: flags, `SEMCLIP_CHANNEL_*` environment variables
//! and an optional file (see `semclip_common::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use semclip_common::config::MetricsAddr;
use semclip_common::telemetry::LogOptions;
use semclip_core::channel::Fading;
use serde::{Deserialize, Serialize};

/// Everything the channel simulator can be told.
#[derive(Debug, Clone, clap::Parser, Serialize, Deserialize)]
#[command(
    name = "semclip-channel-sim",
    version,
    about = "SemCLIP channel simulator: applies \
    AWGN or Rayleigh block fading between transmitter and receiver"
)]
pub struct Config {
    /// Configuration file (TOML, YAML or JSON) with any of these settings by field name;
    /// flags and environment variables take precedence over it.
    #[arg(long, env = "SEMCLIP_CHANNEL_CONFIG")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,

    /// Address the gRPC server listens on (used by the binary; `serve` takes a bound
    /// listener).
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: SocketAddr,

    /// Prometheus endpoint (`HOST:PORT`, port 0 for any free port, or `off`).
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_METRICS_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_addr: MetricsAddr,

    /// URL of the receiver (serves `Link`).
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_RECEIVER",
        default_value = "http://127.0.0.1:50053"
    )]
    pub receiver: String,

    /// Initial SNR in dB: 10 log10(1 / s2) for unit symbol energy and complex noise
    /// variance s2.
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_SNR_DB",
        default_value_t = 10.0,
        allow_hyphen_values = true
    )]
    pub snr_db: f32,

    /// Initial fading model (operators change it at run time with `Channel.SetChannel`).
    #[arg(long, env = "SEMCLIP_CHANNEL_FADING", value_enum, default_value_t = Fading::Awgn)]
    pub fading: Fading,

    /// Initial seed of the noise and fading generator.
    #[arg(long, env = "SEMCLIP_CHANNEL_SEED", default_value_t = 0)]
    pub seed: u64,

    /// Lowest and highest SNR an operator may set, in dB (outside: INVALID_ARGUMENT).
    #[arg(long, env = "SEMCLIP_CHANNEL_MIN_SNR_DB", default_value_t = -40.0, allow_hyphen_values = true)]
    pub min_snr_db: f32,

    /// Highest SNR an operator may set, in dB.
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_MAX_SNR_DB",
        default_value_t = 60.0,
        allow_hyphen_values = true
    )]
    pub max_snr_db: f32,

    /// Largest frame accepted, in complex channel uses k (the frame carries 2k floats).
    #[arg(long, env = "SEMCLIP_CHANNEL_MAX_FRAME_K", default_value_t = 65_536)]
    pub max_frame_k: u32,

    /// Most frames forwarded to the receiver and not yet acknowledged; further frames wait.
    #[arg(long, env = "SEMCLIP_CHANNEL_WINDOW", default_value_t = 64)]
    pub window: usize,

    /// Longest wait for the receiver's acknowledgement of a frame, in milliseconds.
    #[arg(long, env = "SEMCLIP_CHANNEL_ACK_TIMEOUT_MS", default_value_t = 10_000)]
    pub ack_timeout_ms: u64,

    /// Most gRPC requests (unary calls and open streams) handled at once; excess ones get
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_MAX_CONCURRENT_REQUESTS",
        default_value_t = 64
    )]
    pub max_concurrent_requests: usize,

    /// First delay before reconnecting to the receiver, in milliseconds (doubles per
    /// failure).
    #[arg(
        long,
        env = "SEMCLIP_CHANNEL_BACKOFF_INITIAL_MS",
        default_value_t = 100
    )]
    pub backoff_initial_ms: u64,

    /// Longest delay between reconnection attempts, in milliseconds.
    #[arg(long, env = "SEMCLIP_CHANNEL_BACKOFF_MAX_MS", default_value_t = 5_000)]
    pub backoff_max_ms: u64,

    /// Log format and filter.
    #[command(flatten)]
    #[serde(flatten)]
    pub log: LogOptions,
}

impl Config {
    /// The defaults plus whatever `SEMCLIP_*` environment variables say, without reading
    /// the process's command line; a starting point for tests and the in-process demo.
    pub fn from_env() -> Self {
        <Self as clap::Parser>::parse_from(["semclip-channel-sim"])
    }
}
