//! Log output: human-readable text or one JSON object per line, filtered like `RUST_LOG`.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags shared by every daemon.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct LogOptions {
    /// Log line format.
    #[arg(long, env = "SEMCLIP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,semclip_receiver=debug`
    /// (lifecycle events are at info, one line per request at debug).
    #[arg(long, env = "SEMCLIP_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Installs the global subscriber. Fails when the filter does not parse or a subscriber is
/// already installed (for example by a test harness or an embedding program).
pub fn init_tracing(options: &LogOptions) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(&options.log_filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match options.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}
