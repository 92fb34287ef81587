//! Configuration of the transmitter daemon: flags, `SEMCLIP_TRANSMITTER_*` environment
//! variables and an optional file (see `semclip_common::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use semclip_common::config::{MetricsAddr, ModelOptions};
use semclip_common::telemetry::LogOptions;
use serde::{Deserialize, Serialize};

/// Everything the transmitter daemon can be told.
#[derive(Debug, Clone, clap::Parser, Serialize, Deserialize)]
#[command(
    name = "semclip-transmitter",
    version,
    about = "SemCLIP transmitter: images in, \
    JSCC symbol frames out to the channel"
)]
pub struct Config {
    /// Configuration file (TOML, YAML or JSON) with any of these settings by field name;
    /// flags and environment variables take precedence over it.
    #[arg(long, env = "SEMCLIP_TRANSMITTER_CONFIG")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,

    /// Address the gRPC server listens on (used by the binary; `serve` takes a bound
    /// listener).
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Prometheus endpoint (`HOST:PORT`, port 0 for any free port, or `off`).
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_METRICS_ADDR",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_addr: MetricsAddr,

    /// URL of the channel simulator (serves `Channel` and `Link`).
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_CHANNEL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub channel: String,

    /// Complex channel uses per image; must be one of the bundle's k (default: the bundle's
    /// `default_k`).
    #[arg(long, env = "SEMCLIP_TRANSMITTER_K")]
    #[serde(default)]
    pub k: Option<u32>,

    /// Most frames sent to the channel and not yet acknowledged; further sends wait for a
    /// free slot (flow control over the one long-lived link stream).
    #[arg(long, env = "SEMCLIP_TRANSMITTER_WINDOW", default_value_t = 32)]
    pub window: usize,

    /// Most requests (Send calls plus open SendStream streams) worked on at once; excess
    /// ones get RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_MAX_CONCURRENT_REQUESTS",
        default_value_t = 64
    )]
    pub max_concurrent_requests: usize,

    /// Largest encoded image accepted, in bytes.
    #[arg(long, env = "SEMCLIP_TRANSMITTER_MAX_IMAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_image_bytes: u64,

    /// Largest decoded image accepted, in pixels (width * height).
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_MAX_IMAGE_PIXELS",
        default_value_t = 40_000_000
    )]
    pub max_image_pixels: u64,

    /// Longest wait for a frame's acknowledgement, in milliseconds; the send then fails
    /// with DEADLINE_EXCEEDED.
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_ACK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub ack_timeout_ms: u64,

    /// First delay before reconnecting to the channel, in milliseconds (doubles per
    /// failure).
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_BACKOFF_INITIAL_MS",
        default_value_t = 100
    )]
    pub backoff_initial_ms: u64,

    /// Longest delay between reconnection attempts, in milliseconds.
    #[arg(
        long,
        env = "SEMCLIP_TRANSMITTER_BACKOFF_MAX_MS",
        default_value_t = 5_000
    )]
    pub backoff_max_ms: u64,

    /// Model bundle and execution device.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelOptions,

    /// Log format and filter.
    #[command(flatten)]
    #[serde(flatten)]
    pub log: LogOptions,
}

impl Config {
    /// The defaults plus whatever `SEMCLIP_*` environment variables say, without reading
    /// the process's command line; a starting point for tests and the in-process demo.
    pub fn from_env() -> Self {
        <Self as clap::Parser>::parse_from(["semclip-transmitter"])
    }
}
