//! Configuration of the receiver daemon: flags, `SEMCLIP_RECEIVER_*` environment variables
//! and an optional file (see `semclip_common::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use semclip_common::config::{MetricsAddr, ModelOptions};
use semclip_common::telemetry::LogOptions;
use serde::{Deserialize, Serialize};

/// Which backend keeps the decoded embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process, bounded by count and age; lost on restart, private to the replica.
    #[default]
    Memory,
    /// In Redis (`redis_url`), with the same bounds; shared by the replicas that use it.
    Redis,
}

/// Everything the receiver daemon can be told.
#[derive(Debug, Clone, clap::Parser, Serialize, Deserialize)]
#[command(
    name = "semclip-receiver",
    version,
    about = "SemCLIP receiver: decodes symbol \
    frames into embeddings and answers zero-shot questions about them"
)]
pub struct Config {
    /// Configuration file (TOML, YAML or JSON) with any of these settings by field name;
    /// flags and environment variables take precedence over it.
    #[arg(long, env = "SEMCLIP_RECEIVER_CONFIG")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,

    /// Address the gRPC server listens on (used by the binary; `serve` takes a bound
    /// listener).
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    pub listen: SocketAddr,

    /// Prometheus endpoint (`HOST:PORT`, port 0 for any free port, or `off`).
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_METRICS_ADDR",
        default_value = "127.0.0.1:9103"
    )]
    pub metrics_addr: MetricsAddr,

    /// Most decoded embeddings kept; the oldest is evicted first.
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_STORE_MAX_MESSAGES",
        default_value_t = 10_000
    )]
    pub store_max_messages: usize,

    /// Longest time a decoded embedding is kept, in seconds.
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_STORE_MAX_AGE_S",
        default_value_t = 3_600
    )]
    pub store_max_age_s: u64,

    /// Where decoded embeddings are kept: `memory` (this process only) or `redis` (shared
    /// by every receiver that points at the same Redis, so that any replica answers for
    /// any message).
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_STORE",
        value_enum,
        default_value_t = StoreKind::Memory
    )]
    pub store: StoreKind,

    /// Redis server of the `redis` store, `redis://[:PASSWORD@]HOST:PORT/DB` (the password
    /// is redacted wherever the URL is logged or reported).
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis_url: String,

    /// Prefix of every Redis key the `redis` store writes; receivers that share a store use
    /// the same prefix, different links on one Redis use different ones.
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_REDIS_KEY_PREFIX",
        default_value = "semclip:"
    )]
    pub redis_key_prefix: String,

    /// Longest wait for Redis to accept a connection or answer one command, in
    /// milliseconds; past it the request gets UNAVAILABLE.
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_REDIS_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub redis_timeout_ms: u64,

    /// Labels ranked for every arriving message in `WatchMessages` and `ListMessages`
    /// (comma-separated; empty: no top labels).
    #[arg(long, env = "SEMCLIP_RECEIVER_DEFAULT_LABELS", value_delimiter = ',')]
    #[serde(default)]
    pub default_labels: Vec<String>,

    /// Number of top labels reported per message from the default label set.
    #[arg(long, env = "SEMCLIP_RECEIVER_DEFAULT_TOP_K", default_value_t = 3)]
    pub default_top_k: usize,

    /// Most labels in one Classify request.
    #[arg(long, env = "SEMCLIP_RECEIVER_MAX_LABELS", default_value_t = 1_000)]
    pub max_labels: usize,

    /// Longest label, in characters.
    #[arg(long, env = "SEMCLIP_RECEIVER_MAX_LABEL_CHARS", default_value_t = 200)]
    pub max_label_chars: usize,

    /// Most prompt templates in one Classify request.
    #[arg(long, env = "SEMCLIP_RECEIVER_MAX_TEMPLATES", default_value_t = 64)]
    pub max_templates: usize,

    /// Longest prompt template, in characters.
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_MAX_TEMPLATE_CHARS",
        default_value_t = 300
    )]
    pub max_template_chars: usize,

    /// Most requests (unary calls and open streams) handled at once; excess ones get
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "SEMCLIP_RECEIVER_MAX_CONCURRENT_REQUESTS",
        default_value_t = 64
    )]
    pub max_concurrent_requests: usize,

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
        <Self as clap::Parser>::parse_from(["semclip-receiver"])
    }

    /// This configuration as it may be logged: the Redis password replaced by `***`.
    pub fn redacted(&self) -> Self {
        Self {
            redis_url: crate::store::redact_url(&self.redis_url),
            ..self.clone()
        }
    }
}
