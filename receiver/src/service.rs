//! The `Link` (frames in) and `Receiver` (questions about them) services of the receiver.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use semclip_common::grpc::{over_limit, ConcurrencyLimit};
use semclip_common::metrics::Metrics;
use semclip_core::pipeline::{self, PromptKind, ReceivedAt};
use semclip_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{store_status, to_status};
use crate::store::{Store, StoredMessage};

/// What exists only once the bundle is loaded.
pub(crate) struct Loaded {
    /// JSCC decoders and the text side (TAPL, templates, feature cache).
    pub(crate) pipeline: pipeline::Receiver,
    /// Frames must carry this bundle id ...
    pub(crate) bundle_id: String,
    /// ... and this bundle version.
    pub(crate) bundle_version: String,
    /// The k the bundle has decoders for.
    pub(crate) ks: Vec<u32>,
}

/// Limits on Classify requests, from the configuration.
struct Limits {
    max_labels: usize,
    max_label_chars: usize,
    max_templates: usize,
    max_template_chars: usize,
}

/// State shared by all requests of the receiver.
pub(crate) struct ReceiverState {
    /// Set once the models are loaded (health flips to SERVING at the same time); until
    /// then frames are refused and queries get UNAVAILABLE.
    pub(crate) loaded: OnceLock<Loaded>,
    /// Decoded embeddings, in this process or shared in Redis. Only touched from async
    /// code, never while a model runs.
    store: Store,
    /// Every message stored by this replica, for `WatchMessages` (with a shared store,
    /// messages that reached other replicas are not announced here); a watcher that lags
    /// loses the oldest.
    arrivals: broadcast::Sender<pb::MessageInfo>,
    /// Caps unary calls and open streams; the excess gets RESOURCE_EXHAUSTED.
    limit: ConcurrencyLimit,
    /// Prometheus series.
    metrics: Metrics,
    /// Cancelled when shutdown starts; streams stop taking new work.
    streams: CancellationToken,
    /// Labels ranked for every arriving message (empty: none).
    default_labels: Vec<String>,
    /// How many of them are reported.
    default_top_k: usize,
    /// Classify limits.
    limits: Limits,
}

/// The gRPC face of [`ReceiverState`]; clones share the state.
#[derive(Clone)]
pub(crate) struct Service(pub(crate) Arc<ReceiverState>);

impl std::ops::Deref for Service {
    type Target = ReceiverState;

    fn deref(&self) -> &ReceiverState {
        &self.0
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn info_message(m: &StoredMessage) -> pb::MessageInfo {
    pb::MessageInfo {
        message_id: m.message_id.clone(),
        k: m.k,
        snr_db: m.snr_db,
        received_unix_ms: m.received_unix_ms,
        top_labels: m
            .top_labels
            .iter()
            .map(|(label, p)| pb::LabelScore {
                label: label.clone(),
                probability: *p,
            })
            .collect(),
    }
}

/// Checks the labels and templates of a Classify request against the limits.
fn check_query(limits: &Limits, labels: &[String], templates: &[String]) -> Result<(), Status> {
    if labels.is_empty() {
        return Err(Status::invalid_argument("labels is empty"));
    }
    if labels.len() > limits.max_labels {
        return Err(over_limit(
            "number of labels",
            labels.len(),
            "max_labels",
            limits.max_labels,
        ));
    }
    for label in labels {
        let chars = label.chars().count();
        if label.trim().is_empty() {
            return Err(Status::invalid_argument("a label is empty"));
        }
        if chars > limits.max_label_chars {
            return Err(over_limit(
                "a label's length in characters",
                chars,
                "max_label_chars",
                limits.max_label_chars,
            ));
        }
    }
    if templates.len() > limits.max_templates {
        return Err(over_limit(
            "number of templates",
            templates.len(),
            "max_templates",
            limits.max_templates,
        ));
    }
    for template in templates {
        let chars = template.chars().count();
        if chars > limits.max_template_chars {
            return Err(over_limit(
                "a template's length in characters",
                chars,
                "max_template_chars",
                limits.max_template_chars,
            ));
        }
        if template.matches("{}").count() != 1 {
            return Err(Status::invalid_argument(format!(
                "template {template:?} must contain exactly one \"{{}}\" for the label"
            )));
        }
    }
    Ok(())
}

impl ReceiverState {
    pub(crate) fn new(
        config: &Config,
        store: Store,
        metrics: Metrics,
        streams: CancellationToken,
    ) -> Self {
        Self {
            loaded: OnceLock::new(),
            store,
            arrivals: broadcast::channel(256).0,
            limit: ConcurrencyLimit::new(config.max_concurrent_requests),
            metrics,
            streams,
            default_labels: config
                .default_labels
                .iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            default_top_k: config.default_top_k,
            limits: Limits {
                max_labels: config.max_labels,
                max_label_chars: config.max_label_chars,
                max_templates: config.max_templates,
                max_template_chars: config.max_template_chars,
            },
        }
    }

    fn loaded(&self) -> Result<&Loaded, Status> {
        self.loaded
            .get()
            .ok_or_else(|| Status::unavailable("the model bundle is still loading"))
    }

    /// Checks that a frame can be decoded here; returns its k, SNR and h.
    fn check_frame(&self, frame: &pb::SymbolFrame) -> Result<(f32, (f32, f32)), Status> {
        let loaded = self.loaded()?;
        if frame.bundle_id != loaded.bundle_id || frame.bundle_version != loaded.bundle_version {
            return Err(Status::failed_precondition(format!(
                "frame made by bundle {:?} version {:?}, this receiver serves {:?} version {:?}",
                frame.bundle_id, frame.bundle_version, loaded.bundle_id, loaded.bundle_version
            )));
        }
        if !loaded.ks.contains(&frame.k) {
            return Err(Status::invalid_argument(format!(
                "k = {} has no JSCC decoder in this bundle (available: {:?})",
                frame.k, loaded.ks
            )));
        }
        if frame.symbols.len() != 2 * frame.k as usize {
            return Err(Status::invalid_argument(format!(
                "frame has {} values, expected 2k = {}",
                frame.symbols.len(),
                2 * frame.k as usize
            )));
        }
        if frame.message_id.is_empty() {
            return Err(Status::invalid_argument("frame has an empty message_id"));
        }
        let channel = frame.channel.as_ref().ok_or_else(|| {
            Status::invalid_argument("frame carries no channel state (it did not pass a channel)")
        })?;
        Ok((channel.snr_db, (channel.h_re, channel.h_im)))
    }

    /// Decodes, ranks the default labels, stores and announces one frame. Runs the models
    /// on the blocking pool.
    async fn receive(self: Arc<Self>, frame: pb::SymbolFrame) -> pb::FrameAck {
        let (sequence, message_id) = (frame.sequence, frame.message_id.clone());
        let started = Instant::now();
        let result = match self.check_frame(&frame) {
            Ok((snr_db, h)) => {
                let state = self.clone();
                let decoded = tokio::task::spawn_blocking(move || state.decode(frame, snr_db, h))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Status::internal(format!("decoding task failed: {e}")))
                    });
                match decoded {
                    Ok(message) => self.store_message(message).await,
                    Err(status) => Err(status),
                }
            }
            Err(status) => Err(status),
        };
        self.metrics
            .observe_request("Link.frame", started.elapsed(), &result);
        match result {
            Ok(()) => {
                self.metrics.frames.with_label_values(&["accepted"]).inc();
                debug!(%message_id, "frame decoded");
                pb::FrameAck {
                    sequence,
                    message_id,
                    accepted: true,
                    error: String::new(),
                    code: Code::Ok as i32,
                }
            }
            Err(status) => {
                self.metrics.frames.with_label_values(&["rejected"]).inc();
                debug!(%message_id, "frame refused: {}", status.message());
                pb::FrameAck {
                    sequence,
                    message_id,
                    accepted: false,
                    error: status.message().to_owned(),
                    code: status.code() as i32,
                }
            }
        }
    }

    /// Decodes a checked frame into z_hat and ranks the default labels (model runs: call
    /// on the blocking pool).
    fn decode(
        &self,
        frame: pb::SymbolFrame,
        snr_db: f32,
        h: (f32, f32),
    ) -> Result<StoredMessage, Status> {
        let loaded = self.loaded()?;
        let decoded = loaded
            .pipeline
            .decode(&frame.symbols, frame.k, snr_db, h)
            .map_err(to_status)?;
        self.metrics
            .observe_stage("jscc_decode", decoded.timings.jscc_decode);

        let top_labels = if self.default_labels.is_empty() {
            Vec::new()
        } else {
            let c = loaded
                .pipeline
                .classify(
                    &decoded.z_hat,
                    &self.default_labels,
                    &[],
                    self.default_top_k,
                    Some(ReceivedAt {
                        k: frame.k,
                        snr_db: decoded.effective_snr_db,
                    }),
                )
                .map_err(to_status)?;
            self.metrics
                .observe_stage("text_features", c.timings.text_features);
            self.metrics.observe_stage("classify", c.timings.classify);
            c.top
        };

        self.metrics.symbols.inc_by(u64::from(frame.k));
        Ok(StoredMessage {
            message_id: frame.message_id,
            k: frame.k,
            snr_db,
            effective_snr_db: decoded.effective_snr_db,
            z_hat: decoded.z_hat,
            received_unix_ms: unix_ms(),
            top_labels,
            bundle_id: loaded.bundle_id.clone(),
            bundle_version: loaded.bundle_version.clone(),
        })
    }

    /// Stores a decoded message and announces it to this replica's watchers.
    async fn store_message(&self, message: StoredMessage) -> Result<(), Status> {
        let (stored, len) = self.store.insert(message).await.map_err(store_status)?;
        self.metrics
            .queue_depth
            .with_label_values(&["store"])
            .set(len as i64);
        let _ = self.arrivals.send(info_message(&stored));
        Ok(())
    }

    /// Looks up the message a Classify request names; refuses one decoded by another
    /// bundle (a replica sharing the store but serving a different bundle).
    async fn find(&self, message_id: &str) -> Result<Arc<StoredMessage>, Status> {
        let loaded = self.loaded()?;
        let message = self
            .store
            .get(message_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no message {message_id:?} is stored (unknown, evicted or expired)"
                ))
            })?;
        if message.bundle_id != loaded.bundle_id || message.bundle_version != loaded.bundle_version
        {
            return Err(Status::failed_precondition(format!(
                "message {message_id:?} was decoded with bundle {:?} version {:?}, this \
                 receiver serves {:?} version {:?}; ask a receiver with that bundle",
                message.bundle_id, message.bundle_version, loaded.bundle_id, loaded.bundle_version
            )));
        }
        Ok(message)
    }

    /// Ranks the request's labels for a stored message (model runs: call on the blocking
    /// pool).
    fn classify(
        &self,
        req: pb::ClassifyRequest,
        message: &StoredMessage,
    ) -> Result<pb::ClassifyReply, Status> {
        let loaded = self.loaded()?;
        let c = loaded
            .pipeline
            .classify(
                &message.z_hat,
                &req.labels,
                &req.templates,
                req.top_k as usize,
                Some(ReceivedAt {
                    k: message.k,
                    snr_db: message.effective_snr_db,
                }),
            )
            .map_err(to_status)?;
        self.metrics
            .observe_stage("text_features", c.timings.text_features);
        self.metrics.observe_stage("classify", c.timings.classify);
        Ok(pb::ClassifyReply {
            message_id: message.message_id.clone(),
            labels: c
                .top
                .into_iter()
                .map(|(label, probability)| pb::LabelScore { label, probability })
                .collect(),
            snr_db: message.snr_db,
            prompt: match c.prompt {
                PromptKind::Learned => pb::PromptKind::Learned,
                PromptKind::Template => pb::PromptKind::Template,
            } as i32,
            prior_strength: c.prior_strength,
        })
    }
}

impl Service {
    /// Classify: checks the query, fetches the message from the store, then ranks the
    /// labels on the blocking pool; `permit` is held throughout.
    async fn classify_request(
        &self,
        req: pb::ClassifyRequest,
        permit: OwnedSemaphorePermit,
    ) -> Result<pb::ClassifyReply, Status> {
        self.loaded()?;
        check_query(&self.limits, &req.labels, &req.templates)?;
        let message = self.find(&req.message_id).await?;
        let state = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            state.classify(req, &message)
        })
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("classify task failed: {e}"))))
    }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl pb::receiver_server::Receiver for Service {
    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyReply>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let (id, labels) = (req.message_id.clone(), req.labels.len());
        let result = match self.limit.try_acquire() {
            Ok(permit) => self.classify_request(req, permit).await,
            Err(status) => Err(status),
        };
        self.metrics
            .observe_request("Classify", started.elapsed(), &result);
        debug!(message_id = %id, labels, ok = result.is_ok(), "Classify");
        result.map(Response::new)
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesReply>, Status> {
        let started = Instant::now();
        let limit = request.into_inner().limit as usize;
        let result = match self.limit.try_acquire() {
            Ok(_permit) => self
                .store
                .list(limit)
                .await
                .map(|messages| pb::ListMessagesReply {
                    messages: messages.iter().map(|m| info_message(m)).collect(),
                })
                .map_err(store_status),
            Err(status) => Err(status),
        };
        self.metrics
            .observe_request("ListMessages", started.elapsed(), &result);
        debug!(limit, "ListMessages");
        result.map(Response::new)
    }

    type WatchMessagesStream = Stream<pb::MessageInfo>;

    async fn watch_messages(
        &self,
        _request: Request<pb::WatchMessagesRequest>,
    ) -> Result<Response<Self::WatchMessagesStream>, Status> {
        let permit = self.limit.try_acquire();
        self.metrics
            .observe_request("WatchMessages", Default::default(), &permit);
        let permit = permit?;
        debug!("WatchMessages opened");

        let mut arrivals = self.arrivals.subscribe();
        let stop = self.streams.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tx.closed() => break,
                    next = arrivals.recv() => match next {
                        Ok(info) => {
                            if tx.send(Ok(info)).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            warn!("a WatchMessages client fell behind; {n} messages skipped");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
            debug!("WatchMessages closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Most frames of one `Link.Transmit` stream decoded at once (as large as the channel's
/// default window, so a channel with the default settings never meets this bound).
const FRAMES_IN_PROGRESS: usize = 64;

#[tonic::async_trait]
impl pb::link_server::Link for Service {
    type TransmitStream = Stream<pb::FrameAck>;

    async fn transmit(
        &self,
        request: Request<Streaming<pb::SymbolFrame>>,
    ) -> Result<Response<Self::TransmitStream>, Status> {
        let permit = self.limit.try_acquire();
        self.metrics
            .observe_request("Transmit", Default::default(), &permit);
        let permit = permit?;
        info!("frame stream from {:?} opened", request.remote_addr());

        let mut frames = request.into_inner();
        let (acks, rx) = mpsc::channel(64);
        let state = self.0.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // One task per frame, at most FRAMES_IN_PROGRESS per stream: beyond that no
            // frame is read until one finishes, so a sender that ignores its window is held
            // back by HTTP/2 flow control instead of growing the task set.
            let mut decoding = JoinSet::new();
            loop {
                tokio::select! {
                    _ = state.streams.cancelled() => break,
                    Some(_) = decoding.join_next(), if !decoding.is_empty() => {}
                    next = frames.message(), if decoding.len() < FRAMES_IN_PROGRESS => match next {
                        Ok(Some(frame)) => {
                            let (state, acks) = (state.clone(), acks.clone());
                            decoding.spawn(async move {
                                let ack = state.receive(frame).await;
                                let _ = acks.send(Ok(ack)).await;
                            });
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!("frame stream ended: {status}");
                            break;
                        }
                    },
                }
            }
            // Acknowledge the frames in progress before the stream ends.
            while decoding.join_next().await.is_some() {}
            info!("frame stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_labels: 2,
            max_label_chars: 5,
            max_templates: 1,
            max_template_chars: 20,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn query_limits_name_the_limit() {
        let l = limits();
        assert!(check_query(&l, &s(&["cat", "dog"]), &s(&["a {}."])).is_ok());

        let e = check_query(&l, &s(&["a", "b", "c"]), &[]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("max_labels = 2"), "{}", e.message());

        let e = check_query(&l, &s(&["elephant"]), &[]).unwrap_err();
        assert!(
            e.message().contains("max_label_chars = 5"),
            "{}",
            e.message()
        );

        let e = check_query(&l, &s(&["cat"]), &s(&["{}", "{}"])).unwrap_err();
        assert!(e.message().contains("max_templates = 1"), "{}", e.message());

        let e = check_query(&l, &s(&["cat"]), &s(&["a very long template {}"])).unwrap_err();
        assert!(
            e.message().contains("max_template_chars = 20"),
            "{}",
            e.message()
        );

        let e = check_query(&l, &s(&["cat"]), &s(&["no slot"])).unwrap_err();
        assert!(e.message().contains("exactly one"), "{}", e.message());

        let e = check_query(&l, &[], &[]).unwrap_err();
        assert!(e.message().contains("labels is empty"));
    }
}
