//! The signal that starts a graceful shutdown: SIGINT (Ctrl-C) or SIGTERM.
//!
//! A daemon's `serve` takes any future as its shutdown signal, so that tests and the
//! in-process demo can stop it without signals; binaries pass [`signal`].

use std::future::Future;

use tracing::info;

/// Registers the SIGINT and SIGTERM handlers at once (so that a signal arriving while the
/// daemon is still starting is not lost) and returns a future that completes on the first
/// of them. Must be called within a Tokio runtime. On non-Unix targets: Ctrl-C only.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (mut interrupt, mut terminate) = match (interrupt, terminate) {
                (Ok(i), Ok(t)) => (i, t),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!("cannot listen for SIGINT/SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
            tokio::select! {
                _ = interrupt.recv() => info!("received SIGINT, shutting down"),
                _ = terminate.recv() => info!("received SIGTERM, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => info!("received Ctrl-C, shutting down"),
            Err(e) => {
                tracing::error!("cannot listen for Ctrl-C: {e}");
                std::future::pending::<()>().await;
            }
        }
    }
}
