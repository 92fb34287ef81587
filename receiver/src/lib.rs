//! The receiver daemon: decodes symbol frames into received embeddings z_hat, keeps them in
//! a bounded store, and answers zero-shot questions about them.
//!
//! It serves `Link` (the channel simulator's frame stream; each frame is checked against the
//! bundle, equalised with the fading coefficient h the channel reports, and JSCC-decoded at
//! the SNR the channel applied) and `Receiver` (Classify with caller labels and templates or
//! the learned TAPL prompt, ListMessages, WatchMessages). Models load in the background
//! after the listener is up; health reports SERVING only once they are loaded.
//!
//! The embeddings live in memory (the default) or in Redis (`store = redis`), which lets
//! several replicas behind one address answer for any message; see [`store`].

pub mod config;
mod error;
mod service;
pub mod store;

pub use config::Config;

use std::future::Future;
use std::sync::Arc;

use semclip_common::config::ModelOptions;
use semclip_common::grpc;
use semclip_common::metrics::{serve_metrics, Metrics};
use semclip_common::ServeError;
use semclip_core::bundle::Bundle;
use semclip_core::models::Models;
use semclip_core::runtime::RuntimeOptions;
use semclip_core::text::{TextLimits, TextSide};
use semclip_proto::v1::link_server::LinkServer;
use semclip_proto::v1::receiver_server::ReceiverServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use service::{Loaded, ReceiverState, Service};
use store::Store;

/// gRPC services whose health is reported.
const SERVICES: [&str; 2] = ["semclip.v1.Receiver", "semclip.v1.Link"];

/// Largest gRPC message accepted (frames of large k).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Serves the receiver on `listener` until `shutdown` completes (or the bundle fails to
/// load, which is returned as the error): then it stops accepting connections and frames,
/// acknowledges the frames being decoded, ends the watch streams, and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Metrics::new("receiver");
    // Cancelled when shutdown starts (signal, or a failed model load).
    let stop = CancellationToken::new();
    // Cancelled when shutdown starts: ends watch streams, stops reading frames.
    let streams = CancellationToken::new();
    // Cancelled after the server stopped: the metrics endpoint.
    let background = CancellationToken::new();

    // Before anything listens: an unreachable Redis stops the daemon at start.
    let store = Store::open(&config)
        .await
        .map_err(|e| ServeError::Store(Box::new(e)))?;
    info!("message store {}", store.describe());

    serve_metrics(config.metrics_addr, metrics.clone(), background.clone()).await?;
    let state = Arc::new(ReceiverState::new(&config, store, metrics, streams.clone()));

    let (reporter, health) = grpc::health_service(&SERVICES).await;
    let (reflection_v1, reflection_v1alpha) = grpc::reflection_services()?;
    let local = listener.local_addr().map_err(|source| ServeError::Io {
        context: "reading the listener's address".into(),
        source,
    })?;
    info!("receiver listening on {local}; loading the model bundle");

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
    let server = {
        let (stop, reporter) = (stop.clone(), reporter.clone());
        let service = Service(state.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(health)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(ReceiverServer::new(service.clone()))
                .add_service(
                    LinkServer::new(service)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    stop.cancelled().await;
                    info!("receiver shutting down: finishing frames in progress");
                    grpc::set_all_not_serving(&reporter, &SERVICES).await;
                    streams.cancel();
                }),
        )
    };

    let options = config.model.clone();
    let text_limits = TextLimits {
        max_labels: config.max_labels,
        max_label_chars: config.max_label_chars,
        max_templates: config.max_templates,
        max_template_chars: config.max_template_chars,
        ..TextLimits::default()
    };
    let loaded = tokio::task::spawn_blocking(move || load(&options, text_limits)).await;
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
    if let Some(e) = load_error {
        return Err(e);
    }
    served?;
    info!("receiver stopped");
    Ok(())
}

/// Loads ONNX Runtime, the bundle, the JSCC decoders and the text side.
fn load(options: &ModelOptions, text_limits: TextLimits) -> Result<Loaded, ServeError> {
    let models_error = |source: semclip_core::error::Error| ServeError::Models {
        bundle: options.bundle.clone(),
        source: Box::new(source),
    };
    semclip_core::runtime::init_ort(options.ort_dylib.as_deref()).map_err(models_error)?;
    let bundle = Bundle::load(&options.bundle).map_err(models_error)?;
    let runtime = RuntimeOptions::with_device(options.device);
    let models = Arc::new(Models::load_with(&bundle, &runtime).map_err(models_error)?);
    let text = Arc::new(TextSide::load_with(&bundle, &runtime, text_limits).map_err(models_error)?);
    info!(
        "model bundle {} {} loaded from {} with provider {} (k: {:?}, TAPL: {})",
        bundle.manifest.id,
        bundle.manifest.version,
        bundle.dir.display(),
        models.provider(),
        models.ks(),
        text.has_tapl()
    );
    Ok(Loaded {
        ks: models.ks(),
        bundle_id: bundle.manifest.id.clone(),
        bundle_version: bundle.manifest.version.clone(),
        pipeline: semclip_core::pipeline::Receiver::new(&bundle, models, text),
    })
}
