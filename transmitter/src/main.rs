//! The `semclip-transmitter` binary: parses the configuration, initialises logging,
//! binds the listener and runs the daemon until SIGINT or SIGTERM.

use anyhow::Context;
use semclip_transmitter::{serve, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = match semclip_common::config::load() {
        Ok(c) => c,
        Err(semclip_common::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    semclip_common::telemetry::init_tracing(&config.log)
        .map_err(|e| anyhow::anyhow!("initialising logging: {e}"))?;
    semclip_common::config::log_effective("semclip-transmitter", &config);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    serve(config, listener, semclip_common::shutdown::signal()).await?;
    Ok(())
}
