//! The `Transmitter` service: image in, acknowledged frame out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use semclip_common::grpc::{over_limit, ConcurrencyLimit};
use semclip_common::link::FrameLink;
use semclip_common::metrics::Metrics;
use semclip_core::pipeline;
use semclip_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use crate::error::{refusal_status, to_status};

/// What exists only once the bundle is loaded.
pub(crate) struct Loaded {
    /// Preprocessing, image encoder and JSCC encoder.
    pub(crate) pipeline: pipeline::Transmitter,
    /// Written into every frame, so that a receiver with another bundle refuses it.
    pub(crate) bundle_id: String,
    /// Written into every frame beside the id.
    pub(crate) bundle_version: String,
    /// Complex channel uses per image.
    pub(crate) k: u32,
}

/// What the transmitter knows about the channel.
#[derive(Debug, Clone)]
pub(crate) enum ChannelView {
    /// The configuration last pushed by `Channel.WatchChannel`.
    Known(pb::ChannelConfig),
    /// Not connected; why.
    Unknown(String),
}

/// State shared by all requests of the transmitter.
pub(crate) struct TransmitterState {
    /// Set once the models are loaded (health flips to SERVING at the same time); until
    /// then sends get UNAVAILABLE.
    pub(crate) loaded: OnceLock<Loaded>,
    /// The channel's SNR, kept current by the watch task; read before every encoding
    /// because the JSCC encoder is SNR-adaptive.
    pub(crate) channel: watch::Receiver<ChannelView>,
    /// The one long-lived, windowed frame stream to the channel, shared by all requests.
    pub(crate) link: FrameLink,
    /// Caps Send calls and open SendStream streams; the excess gets RESOURCE_EXHAUSTED.
    pub(crate) limit: ConcurrencyLimit,
    /// Prometheus series.
    pub(crate) metrics: Metrics,
    /// Cancelled when shutdown starts; SendStream stops reading new images.
    pub(crate) streams: CancellationToken,
    /// Largest encoded image accepted, in bytes.
    pub(crate) max_image_bytes: u64,
    /// Images encoded concurrently within one SendStream (replies stay in order).
    pub(crate) stream_depth: usize,
    /// Source of message ids for requests without one.
    pub(crate) next_id: AtomicU64,
}

/// The gRPC face of [`TransmitterState`]; clones share the state.
#[derive(Clone)]
pub(crate) struct Service(pub(crate) Arc<TransmitterState>);

impl std::ops::Deref for Service {
    type Target = TransmitterState;

    fn deref(&self) -> &TransmitterState {
        &self.0
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl TransmitterState {
    fn message_id(&self, given: String) -> String {
        if !given.is_empty() {
            return given;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("m{now}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Encodes one image at the channel's current SNR, sends its frame and waits for the
    /// receiver's acknowledgement.
    async fn send_one(self: Arc<Self>, req: pb::SendRequest) -> Result<pb::SendReply, Status> {
        let started = Instant::now();
        let loaded = self
            .loaded
            .get()
            .ok_or_else(|| Status::unavailable("the model bundle is still loading"))?;
        if req.image.is_empty() {
            return Err(Status::invalid_argument("image is empty"));
        }
        if req.image.len() as u64 > self.max_image_bytes {
            return Err(over_limit(
                "image size in bytes",
                req.image.len(),
                "max_image_bytes",
                self.max_image_bytes,
            ));
        }
        let message_id = self.message_id(req.message_id);
        let snr_db = match &*self.channel.borrow() {
            ChannelView::Known(c) => c.snr_db,
            ChannelView::Unknown(cause) => {
                return Err(Status::unavailable(format!(
                    "the channel's SNR is unknown (the JSCC encoder needs it): {cause}"
                )))
            }
        };

        let k = loaded.k;
        let state = self.clone();
        let image = req.image;
        let encoded = tokio::task::spawn_blocking(move || {
            let loaded = state.loaded.get().expect("checked above");
            loaded.pipeline.encode_image(&image, k, snr_db)
        })
        .await
        .map_err(|e| Status::internal(format!("encoding task failed: {e}")))?
        .map_err(to_status)?;
        let t = encoded.timings;
        self.metrics.observe_stage("preprocess", t.preprocess);
        self.metrics.observe_stage("image_encode", t.image_encode);
        self.metrics.observe_stage("jscc_encode", t.jscc_encode);

        let frame = pb::SymbolFrame {
            sequence: 0,
            message_id: message_id.clone(),
            k,
            snr_db,
            symbols: encoded.symbols,
            bundle_id: loaded.bundle_id.clone(),
            bundle_version: loaded.bundle_version.clone(),
            channel: None,
        };
        let link_started = Instant::now();
        self.metrics.frames.with_label_values(&["sent"]).inc();
        let ack = self.link.send(frame).await?;
        let link_time = link_started.elapsed();
        self.metrics.observe_stage("link", link_time);
        if !ack.accepted {
            self.metrics.frames.with_label_values(&["refused"]).inc();
            return Err(refusal_status(ack.code, &ack.error, &message_id));
        }
        self.metrics
            .frames
            .with_label_values(&["acknowledged"])
            .inc();
        self.metrics.symbols.inc_by(u64::from(k));

        Ok(pb::SendReply {
            message_id,
            k,
            snr_db,
            timings: Some(pb::StageTimings {
                preprocess_ms: ms(t.preprocess),
                image_encode_ms: ms(t.image_encode),
                jscc_encode_ms: ms(t.jscc_encode),
                link_ms: ms(link_time),
                total_ms: ms(started.elapsed()),
            }),
            error_code: Code::Ok as i32,
            error: String::new(),
        })
    }
}

#[tonic::async_trait]
impl pb::transmitter_server::Transmitter for Service {
    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendReply>, Status> {
        let started = Instant::now();
        let result = match self.limit.try_acquire() {
            Ok(_permit) => self.0.clone().send_one(request.into_inner()).await,
            Err(status) => Err(status),
        };
        self.metrics
            .observe_request("Send", started.elapsed(), &result);
        match &result {
            Ok(r) => debug!(message_id = %r.message_id, snr_db = r.snr_db, "Send"),
            Err(s) => debug!("Send failed: {}: {}", s.code(), s.message()),
        }
        result.map(Response::new)
    }

    type SendStreamStream = ReceiverStream<Result<pb::SendReply, Status>>;

    async fn send_stream(
        &self,
        request: Request<Streaming<pb::SendRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let permit = self.limit.try_acquire();
        self.metrics
            .observe_request("SendStream", Default::default(), &permit);
        let permit = permit?;
        debug!("SendStream opened");

        let mut requests = request.into_inner();
        let (replies, rx) = mpsc::channel(self.stream_depth);
        // Items in progress, in request order; the bound is how many are encoded and in
        // flight at once for this stream.
        let (order_tx, mut order_rx) = mpsc::channel::<(
            String,
            tokio::task::JoinHandle<Result<pb::SendReply, Status>>,
        )>(self.stream_depth);
        let state = self.0.clone();

        // Writer: awaits items in request order, turns failures into error replies.
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            while let Some((message_id, item)) = order_rx.recv().await {
                let started = Instant::now();
                let result = item
                    .await
                    .unwrap_or_else(|e| Err(Status::internal(format!("send task failed: {e}"))));
                metrics.observe_request("SendStream.item", started.elapsed(), &result);
                let reply = match result {
                    Ok(reply) => reply,
                    Err(status) => pb::SendReply {
                        message_id,
                        error_code: status.code() as i32,
                        error: status.message().to_owned(),
                        ..Default::default()
                    },
                };
                if replies.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
            debug!("SendStream closed");
        });

        // Reader: starts one task per image, until the client closes or shutdown starts.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = state.streams.cancelled() => break,
                    next = requests.message() => match next {
                        Ok(Some(mut req)) => {
                            req.message_id = state.message_id(std::mem::take(&mut req.message_id));
                            let id = req.message_id.clone();
                            let item = tokio::spawn(state.clone().send_one(req));
                            if order_tx.send((id, item)).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!("SendStream request stream ended: {status}");
                            break;
                        }
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
