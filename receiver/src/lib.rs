//! Placeholder body while the daemon is written; the configuration and the `serve`
//! signature are final.

pub mod config;

pub use config::Config;

use std::future::Future;

use semclip_common::ServeError;
use tokio::net::TcpListener;

/// Serves the daemon on `listener` until `shutdown` completes, then finishes in-flight
/// work and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let _ = (config, listener, shutdown);
    Err(ServeError::Config("not implemented yet".into()))
}
