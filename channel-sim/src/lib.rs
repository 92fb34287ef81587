//! The channel simulator daemon: a gRPC proxy between transmitter and receiver that applies
//! the channel (AWGN, or Rayleigh block fading) at an SNR an operator sets at run time.
//!
//! It serves `Channel` (the operator's view: set, get and watch the configuration, read
//! counters) and `Link` (the transmitter's frame stream). Every accepted frame goes through
//! the core library's [`ChannelModel`](semclip_core::channel::ChannelModel), gets the applied
//! [`ChannelState`](semclip_proto::v1::ChannelState) filled in, and is forwarded over one
//! long-lived `Link` stream to the receiver; the receiver's acknowledgement is relayed back.
//! Conventions: symbols are interleaved `(re, im)` f32 pairs with unit mean energy, and
//! `snr_db = 10 log10(1 / s2)` for complex noise variance `s2`.

pub mod config;
mod error;
mod service;

pub use config::Config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use semclip_common::grpc;
use semclip_common::link::{FrameLink, LinkOptions};
use semclip_common::metrics::{serve_metrics, Metrics};
use semclip_common::ServeError;
use semclip_core::channel::ChannelModel;
use semclip_proto::v1::channel_server::ChannelServer;
use semclip_proto::v1::link_server::LinkServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use service::{ChannelSim, Service};

/// gRPC services whose health is reported.
const SERVICES: [&str; 2] = ["semclip.v1.Channel", "semclip.v1.Link"];

/// Serves the channel simulator on `listener` until `shutdown` completes: then it stops
/// accepting connections and new frames, waits until the frames in flight are acknowledged
/// (or fail), ends the watch streams, and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let model = ChannelModel::new(config.snr_db, config.fading, config.seed)
        .map_err(|e| ServeError::Config(e.to_string()))?;
    if !(config.min_snr_db..=config.max_snr_db).contains(&config.snr_db) {
        return Err(ServeError::Config(format!(
            "snr_db = {} is outside [min_snr_db, max_snr_db] = [{}, {}]",
            config.snr_db, config.min_snr_db, config.max_snr_db
        )));
    }

    let metrics = Metrics::new("channel-sim");
    // Cancelled when shutdown starts: ends watch streams and stops reading new frames.
    let streams = CancellationToken::new();
    // Cancelled after the server stopped: the receiver link and the metrics endpoint.
    let background = CancellationToken::new();

    serve_metrics(config.metrics_addr, metrics.clone(), background.clone()).await?;
    let link = FrameLink::spawn(
        LinkOptions {
            endpoint: config.receiver.clone(),
            peer: "receiver",
            window: config.window,
            ack_timeout: Duration::from_millis(config.ack_timeout_ms),
            backoff_initial: Duration::from_millis(config.backoff_initial_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
        },
        metrics.clone(),
        background.clone(),
    );

    let max_message = (8 * config.max_frame_k as usize + (1 << 16)).max(4 << 20);
    let sim = Service(Arc::new(ChannelSim::new(
        &config,
        model,
        link.clone(),
        metrics,
        streams.clone(),
    )));

    let (reporter, health) = grpc::health_service(&SERVICES).await;
    let (reflection_v1, reflection_v1alpha) = grpc::reflection_services()?;
    let local = listener.local_addr().map_err(|source| ServeError::Io {
        context: "reading the listener's address".into(),
        source,
    })?;
    grpc::set_all_serving(&reporter, &SERVICES).await;
    info!(
        "channel-sim listening on {local}, SNR {} dB, fading {}, seed {}",
        config.snr_db, config.fading, config.seed
    );

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ChannelServer::new(sim.clone()))
        .add_service(
            LinkServer::new(sim)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            info!("channel-sim shutting down: finishing frames in flight");
            grpc::set_all_not_serving(&reporter, &SERVICES).await;
            streams.cancel();
        })
        .await?;

    background.cancel();
    link.wait_closed().await;
    info!("channel-sim stopped");
    Ok(())
}
