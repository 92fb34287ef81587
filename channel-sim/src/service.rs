//! The `Channel` and `Link` services of the channel simulator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use semclip_common::grpc::{over_limit, ConcurrencyLimit};
use semclip_common::link::FrameLink;
use semclip_common::metrics::Metrics;
use semclip_core::channel::{ChannelModel, Fading};
use semclip_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::config::Config;
use crate::error::to_status;

/// The channel model and the epoch of its configuration, changed together.
struct ChannelInner {
    /// Noise and fading generator at the current SNR.
    model: ChannelModel,
    /// Increases by one on every configuration change.
    epoch: u64,
}

/// Counters reported by `GetCounters`.
#[derive(Default)]
struct Counters {
    /// Frames accepted and passed through the channel.
    frames: AtomicU64,
    /// Complex channel uses of those frames.
    symbols: AtomicU64,
    /// Frames refused (malformed, over the size limit).
    frames_rejected: AtomicU64,
    /// Frames forwarded to the receiver and not yet acknowledged.
    in_flight: AtomicU64,
}

/// State shared by all requests of the channel simulator.
pub(crate) struct ChannelSim {
    /// The channel. A plain mutex: applying it to a frame takes microseconds, and the order
    /// in which frames take the lock fixes the noise they get (a seeded run with one frame
    /// stream is reproducible).
    inner: Mutex<ChannelInner>,
    /// The current configuration, published to every `WatchChannel` stream; watchers that
    /// fall behind skip to the latest value.
    published: watch::Sender<pb::ChannelConfig>,
    /// Counters for `GetCounters`.
    counters: Counters,
    /// The one long-lived, windowed stream to the receiver, shared by all frame streams.
    link: FrameLink,
    /// Caps unary calls and open streams; the excess gets RESOURCE_EXHAUSTED.
    limit: ConcurrencyLimit,
    /// Prometheus series.
    metrics: Metrics,
    /// Cancelled when shutdown starts; streams stop taking new work.
    streams: CancellationToken,
    /// Frame size limit (k), quoted in refusals.
    max_frame_k: u32,
    /// The SNR range an operator may set.
    snr_range: (f32, f32),
    /// Acknowledgement channel capacity per frame stream.
    window: usize,
}

impl ChannelSim {
    pub(crate) fn new(
        config: &Config,
        model: ChannelModel,
        link: FrameLink,
        metrics: Metrics,
        streams: CancellationToken,
    ) -> Self {
        let published = watch::Sender::new(config_message(&model, 0));
        Self {
            inner: Mutex::new(ChannelInner { model, epoch: 0 }),
            published,
            counters: Counters::default(),
            link,
            limit: ConcurrencyLimit::new(config.max_concurrent_requests),
            metrics,
            streams,
            max_frame_k: config.max_frame_k,
            snr_range: (config.min_snr_db, config.max_snr_db),
            window: config.window.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChannelInner> {
        // A panic while holding the lock cannot leave the model half-updated (every update
        // is validated first), so a poisoned lock is safe to reuse.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `SetChannel`; validates everything before changing anything.
    fn apply_settings(&self, req: pb::SetChannelRequest) -> Result<pb::ChannelConfig, Status> {
        let fading = match pb::Fading::try_from(req.fading) {
            Ok(pb::Fading::Unspecified) => None,
            Ok(pb::Fading::Awgn) => Some(Fading::Awgn),
            Ok(pb::Fading::RayleighBlock) => Some(Fading::RayleighBlock),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown fading value {}",
                    req.fading
                )))
            }
        };
        if let Some(snr) = req.snr_db {
            let (lo, hi) = self.snr_range;
            if !snr.is_finite() || snr < lo || snr > hi {
                return Err(Status::invalid_argument(format!(
                    "snr_db = {snr} is outside the limits min_snr_db = {lo}, max_snr_db = {hi}"
                )));
            }
        }

        let mut inner = self.lock();
        let (old_snr, old_fading) = (inner.model.snr_db(), inner.model.fading());
        if let Some(snr) = req.snr_db {
            inner.model.set_snr_db(snr).map_err(to_status)?;
        }
        if let Some(f) = fading {
            inner.model.set_fading(f);
        }
        if let Some(seed) = req.seed {
            inner.model.reseed(seed);
        }

        let (new_snr, new_fading) = (inner.model.snr_db(), inner.model.fading());
        let changed = new_snr != old_snr || new_fading != old_fading || req.seed.is_some();
        if changed {
            inner.epoch += 1;
            if new_snr != old_snr {
                info!("SNR changed from {old_snr} dB to {new_snr} dB");
            }
            if new_fading != old_fading {
                info!("fading changed from {old_fading} to {new_fading}");
            }
            if let Some(seed) = req.seed {
                info!("channel generator reseeded with {seed}");
            }
            self.published
                .send_replace(config_message(&inner.model, inner.epoch));
        }
        Ok(config_message(&inner.model, inner.epoch))
    }

    /// Checks one frame and passes it through the channel; a refusal comes back as the
    /// acknowledgement to send.
    fn apply(&self, mut frame: pb::SymbolFrame) -> Result<pb::SymbolFrame, pb::FrameAck> {
        let refuse = |status: Status| pb::FrameAck {
            sequence: frame.sequence,
            message_id: frame.message_id.clone(),
            accepted: false,
            error: status.message().to_owned(),
            code: status.code() as i32,
        };
        if frame.k == 0 || frame.k > self.max_frame_k {
            return Err(refuse(over_limit(
                "frame k",
                frame.k,
                "max_frame_k",
                self.max_frame_k,
            )));
        }
        if frame.symbols.len() != 2 * frame.k as usize {
            return Err(refuse(Status::invalid_argument(format!(
                "frame has {} values, expected 2k = {}",
                frame.symbols.len(),
                2 * frame.k as usize
            ))));
        }

        let started = Instant::now();
        let applied = self.lock().model.apply(&mut frame.symbols);
        let state = applied.map_err(|e| refuse(to_status(e)))?;
        self.metrics.observe_stage("channel", started.elapsed());

        frame.channel = Some(pb::ChannelState {
            snr_db: state.snr_db,
            fading: proto_fading(state.fading) as i32,
            h_re: state.h.0,
            h_im: state.h.1,
        });
        Ok(frame)
    }

    /// Forwards one channel-applied frame to the receiver and turns the outcome into the
    /// acknowledgement for the transmitter (with the transmitter's sequence number).
    async fn forward(&self, frame: pb::SymbolFrame) -> pb::FrameAck {
        let (sequence, message_id) = (frame.sequence, frame.message_id.clone());
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self.link.send(frame).await;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(ack) => {
                let event = if ack.accepted {
                    "acknowledged"
                } else {
                    "refused_by_receiver"
                };
                self.metrics.frames.with_label_values(&[event]).inc();
                pb::FrameAck {
                    sequence,
                    message_id,
                    ..ack
                }
            }
            Err(status) => {
                self.metrics
                    .frames
                    .with_label_values(&["forward_failed"])
                    .inc();
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
}

fn proto_fading(f: Fading) -> pb::Fading {
    match f {
        Fading::Awgn => pb::Fading::Awgn,
        Fading::RayleighBlock => pb::Fading::RayleighBlock,
    }
}

fn config_message(model: &ChannelModel, epoch: u64) -> pb::ChannelConfig {
    pb::ChannelConfig {
        snr_db: model.snr_db(),
        fading: proto_fading(model.fading()) as i32,
        seed: model.seed(),
        epoch,
    }
}

/// The gRPC face of [`ChannelSim`]; clones share the state.
#[derive(Clone)]
pub(crate) struct Service(pub(crate) Arc<ChannelSim>);

impl std::ops::Deref for Service {
    type Target = ChannelSim;

    fn deref(&self) -> &ChannelSim {
        &self.0
    }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl pb::channel_server::Channel for Service {
    async fn set_channel(
        &self,
        request: Request<pb::SetChannelRequest>,
    ) -> Result<Response<pb::ChannelConfig>, Status> {
        let started = Instant::now();
        let result = self
            .limit
            .try_acquire()
            .and_then(|_permit| self.apply_settings(request.into_inner()));
        self.metrics
            .observe_request("SetChannel", started.elapsed(), &result);
        debug!(ok = result.is_ok(), "SetChannel");
        result.map(Response::new)
    }

    async fn get_channel(
        &self,
        _request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::ChannelConfig>, Status> {
        let started = Instant::now();
        let result = self.limit.try_acquire().map(|_permit| {
            let inner = self.lock();
            config_message(&inner.model, inner.epoch)
        });
        self.metrics
            .observe_request("GetChannel", started.elapsed(), &result);
        debug!("GetChannel");
        result.map(Response::new)
    }

    type WatchChannelStream = Stream<pb::ChannelConfig>;

    async fn watch_channel(
        &self,
        _request: Request<pb::WatchChannelRequest>,
    ) -> Result<Response<Self::WatchChannelStream>, Status> {
        let permit = self.limit.try_acquire();
        self.metrics
            .observe_request("WatchChannel", Default::default(), &permit);
        let permit = permit?;
        debug!("WatchChannel opened");

        let mut configs = self.published.subscribe();
        let stop = self.streams.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            // The permit is held as long as the stream is open.
            let _permit = permit;
            let current = *configs.borrow_and_update();
            if tx.send(Ok(current)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tx.closed() => break,
                    changed = configs.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let config = *configs.borrow_and_update();
                        if tx.send(Ok(config)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            debug!("WatchChannel closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_counters(
        &self,
        _request: Request<pb::GetCountersRequest>,
    ) -> Result<Response<pb::ChannelCounters>, Status> {
        let started = Instant::now();
        let result = self.limit.try_acquire().map(|_permit| pb::ChannelCounters {
            frames: self.counters.frames.load(Ordering::Relaxed),
            symbols: self.counters.symbols.load(Ordering::Relaxed),
            frames_rejected: self.counters.frames_rejected.load(Ordering::Relaxed),
            in_flight: self.counters.in_flight.load(Ordering::Relaxed),
        });
        self.metrics
            .observe_request("GetCounters", started.elapsed(), &result);
        result.map(Response::new)
    }
}

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
        let (acks, rx) = mpsc::channel(2 * self.window);
        let sim = Arc::clone(&self.0);
        let window = self.window.max(1);
        tokio::spawn(async move {
            let _permit = permit;
            // One task per frame forwarded, so that up to the window's worth of frames are
            // on their way to the receiver at once. At the window, no further frame is read
            // until one finishes: a sender that ignores its own window is held back by
            // HTTP/2 flow control instead of growing the task set.
            let mut forwarding = JoinSet::new();
            loop {
                tokio::select! {
                    _ = sim.streams.cancelled() => break,
                    Some(_) = forwarding.join_next(), if !forwarding.is_empty() => {}
                    next = frames.message(), if forwarding.len() < window => match next {
                        Ok(Some(frame)) => {
                            debug!(message_id = %frame.message_id, k = frame.k, "frame");
                            match sim.apply(frame) {
                                Ok(frame) => {
                                    sim.counters.frames.fetch_add(1, Ordering::Relaxed);
                                    sim.counters.symbols.fetch_add(u64::from(frame.k), Ordering::Relaxed);
                                    sim.metrics.frames.with_label_values(&["accepted"]).inc();
                                    sim.metrics.symbols.inc_by(u64::from(frame.k));
                                    let (sim, acks) = (sim.clone(), acks.clone());
                                    forwarding.spawn(async move {
                                        let ack = sim.forward(frame).await;
                                        let _ = acks.send(Ok(ack)).await;
                                    });
                                }
                                Err(refusal) => {
                                    sim.counters.frames_rejected.fetch_add(1, Ordering::Relaxed);
                                    sim.metrics.frames.with_label_values(&["rejected"]).inc();
                                    debug!(error = %refusal.error, "frame refused");
                                    if acks.send(Ok(refusal)).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!("frame stream ended: {status}");
                            break;
                        }
                    },
                }
            }
            // Finish the frames in flight before the acknowledgement stream ends.
            while forwarding.join_next().await.is_some() {}
            info!("frame stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
