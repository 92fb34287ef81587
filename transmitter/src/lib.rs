//! The transmitter daemon: takes images from clients, turns each into a power-normalised
//! frame of k complex channel uses, and sends it to the channel simulator.
//!
//! Per image: decode and preprocess, image encoder (z), SNR-adaptive JSCC encoder at the SNR
//! the channel last announced through `Channel.WatchChannel`, power normalisation
//! (`(1/k) * sum |x_i|^2 = 1`, symbols interleaved `(re, im)`), then one frame over the
//! single long-lived `Link.Transmit` stream with a bounded window of frames in flight. A
//! `Send` returns only after the receiver's acknowledgement came back through the channel;
//! when the channel or the receiver is down it fails with UNAVAILABLE naming the cause.
//! Models load in the background after the listener is up; health reports SERVING only
//! once they are loaded.

pub mod config;
mod error;
mod service;
mod watch;

pub use config::Config;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use semclip_common::backoff::Backoff;
use semclip_common::config::ModelOptions;
use semclip_common::grpc::{self, ConcurrencyLimit};
use semclip_common::link::{FrameLink, LinkOptions};
use semclip_common::metrics::{serve_metrics, Metrics};
use semclip_common::ServeError;
use semclip_core::bundle::Bundle;
use semclip_core::models::Models;
use semclip_core::preprocess::ImageLimits;
use semclip_core::runtime::RuntimeOptions;
use semclip_proto::v1::transmitter_server::TransmitterServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use service::{ChannelView, Loaded, Service, TransmitterState};

/// gRPC services whose health is reported.
const SERVICES: [&str; 1] = ["semclip.v1.Transmitter"];

/// Largest gRPC message accepted: twice the image byte limit plus room for the other
/// fields, so that an image over `max_image_bytes` is read and refused with
/// INVALID_ARGUMENT naming that limit. Only a request beyond this is cut off by gRPC
/// itself (OUT_OF_RANGE), before it is buffered.
fn max_message_bytes(config: &Config) -> usize {
    (config.max_image_bytes as usize)
        .saturating_mul(2)
        .saturating_add(1 << 16)
        .max(4 << 20)
}

/// Serves the transmitter on `listener` until `shutdown` completes (or the bundle fails to
/// load, which is returned as the error): then it stops accepting connections and images,
/// finishes the sends in progress (they wait for their acknowledgements), closes the link
/// to the channel, and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    tonic::transport::Endpoint::from_shared(config.channel.clone())
        .map_err(|e| ServeError::Config(format!("channel = {:?}: {e}", config.channel)))?;

    let metrics = Metrics::new("transmitter");
    // Cancelled when shutdown starts (signal, or a failed model load).
    let stop = CancellationToken::new();
    // Cancelled when shutdown starts: SendStream stops reading new images.
    let streams = CancellationToken::new();
    // Cancelled after the server stopped: link, channel watch, metrics endpoint.
    let background = CancellationToken::new();

    serve_metrics(config.metrics_addr, metrics.clone(), background.clone()).await?;
    let backoff = Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    );
    let link = FrameLink::spawn(
        LinkOptions {
            endpoint: config.channel.clone(),
            peer: "channel",
            window: config.window,
            ack_timeout: Duration::from_millis(config.ack_timeout_ms),
            backoff_initial: Duration::from_millis(config.backoff_initial_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
        },
        metrics.clone(),
        background.clone(),
    );
    let (view_tx, view_rx) = tokio::sync::watch::channel(ChannelView::Unknown(format!(
        "not yet connected to the channel at {}",
        config.channel
    )));
    tokio::spawn(watch::watch_channel(
        config.channel.clone(),
        view_tx,
        backoff,
        background.clone(),
    ));

    let state = Arc::new(TransmitterState {
        loaded: OnceLock::new(),
        channel: view_rx,
        link,
        limit: ConcurrencyLimit::new(config.max_concurrent_requests),
        metrics,
        streams: streams.clone(),
        max_image_bytes: config.max_image_bytes,
        stream_depth: config.window.clamp(1, 64),
        next_id: AtomicU64::new(0),
    });

    let (reporter, health) = grpc::health_service(&SERVICES).await;
    let (reflection_v1, reflection_v1alpha) = grpc::reflection_services()?;
    let local = listener.local_addr().map_err(|source| ServeError::Io {
        context: "reading the listener's address".into(),
        source,
    })?;
    info!(
        "transmitter listening on {local}, channel at {}; loading the model bundle",
        config.channel
    );

    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop.cancelled() => {}
            }
            stop.cancel();
        });
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let max_message = max_message_bytes(&config);
    let server = {
        let (stop, reporter) = (stop.clone(), reporter.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(health)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(
                    TransmitterServer::new(Service(state.clone()))
                        .max_decoding_message_size(max_message),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    stop.cancelled().await;
                    info!("transmitter shutting down: finishing sends in progress");
                    grpc::set_all_not_serving(&reporter, &SERVICES).await;
                    streams.cancel();
                }),
        )
    };

    let options = config.model.clone();
    let limits = ImageLimits {
        max_bytes: config.max_image_bytes,
        max_pixels: config.max_image_pixels,
    };
    let k = config.k;
    let loaded = tokio::task::spawn_blocking(move || load(&options, limits, k)).await;
    let load_error = match loaded {
        Ok(Ok(loaded)) => {
            let _ = state.loaded.set(loaded);
            grpc::set_all_serving(&reporter, &SERVICES).await;
            None
        }
        Ok(Err(e)) => Some(e),
        Err(e) => Some(ServeError::Config(format!(
            "model loading task failed: {e}"
        ))),
    };
    if load_error.is_some() {
        stop.cancel();
    }

    let served = server
        .await
        .map_err(|e| ServeError::Config(format!("server task failed: {e}")))?;
    background.cancel();
    state.link.wait_closed().await;
    if let Some(e) = load_error {
        return Err(e);
    }
    served?;
    info!("transmitter stopped");
    Ok(())
}

/// Loads ONNX Runtime, the bundle, the image encoder and the JSCC encoders; checks `k`.
fn load(options: &ModelOptions, limits: ImageLimits, k: Option<u32>) -> Result<Loaded, ServeError> {
    let models_error = |source: semclip_core::error::Error| ServeError::Models {
        bundle: options.bundle.clone(),
        source: Box::new(source),
    };
    semclip_core::runtime::init_ort(options.ort_dylib.as_deref()).map_err(models_error)?;
    let bundle = Bundle::load(&options.bundle).map_err(models_error)?;
    let runtime = RuntimeOptions::with_device(options.device);
    let models = Arc::new(Models::load_with(&bundle, &runtime).map_err(models_error)?);
    let k = k.unwrap_or_else(|| models.default_k());
    if !models.ks().contains(&k) {
        return Err(ServeError::Config(format!(
            "k = {k} has no JSCC model in bundle {} (available: {:?})",
            bundle.manifest.id,
            models.ks()
        )));
    }
    info!(
        "model bundle {} {} loaded from {} with provider {} (k = {k})",
        bundle.manifest.id,
        bundle.manifest.version,
        bundle.dir.display(),
        models.provider()
    );
    Ok(Loaded {
        bundle_id: bundle.manifest.id.clone(),
        bundle_version: bundle.manifest.version.clone(),
        k,
        pipeline: semclip_core::pipeline::Transmitter::new(&bundle, models, limits),
    })
}
