//! The `semclip-receiver` binary: parses the configuration, initialises logging, binds the
//! listener and runs the daemon until SIGINT or SIGTERM, then exits 0 after a graceful
//! shutdown (1 on any error, with the error and its causes on standard error).

use std::process::ExitCode;

use anyhow::Context;
use semclip_receiver::{serve, Config};

#[tokio::main]
async fn main() -> ExitCode {
    // Listen for signals before anything else, so that none is lost during start-up.
    let shutdown = semclip_common::shutdown::signal();
    let config: Config = match semclip_common::config::load() {
        Ok(c) => c,
        Err(semclip_common::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    semclip_common::telemetry::init_tracing(&config.log)
        .map_err(|e| anyhow::anyhow!("initialising logging: {e}"))?;
    semclip_common::config::log_effective("semclip-receiver", &config.redacted());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    serve(config, listener, shutdown).await?;
    Ok(())
}
