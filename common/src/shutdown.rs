//! The signal that starts a graceful shutdown: SIGINT (Ctrl-C) or SIGTERM.
//!
//! A daemon's `serve` takes any future as its shutdown signal, so that tests and the
//! in-process demo can stop it without signals; binaries pass [`signal`].

use tracing::info;

/// Completes on the first SIGINT or SIGTERM (on non-Unix targets: Ctrl-C only).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        _ = ctrl_c => info!("received SIGINT, shutting down"),
        _ = terminate => info!("received SIGTERM, shutting down"),
    }
}
