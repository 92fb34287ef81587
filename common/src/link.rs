//! The sending end of a `Link.Transmit` stream: one long-lived, acknowledged frame stream to
//! a peer daemon, shared by every request of the daemon that owns it.
//!
//! The transmitter uses it towards the channel simulator, the channel simulator towards the
//! receiver. Design:
//! - callers hand frames to one connection task through a queue and wait for their
//!   acknowledgement on a oneshot channel;
//! - a window (semaphore) bounds the frames sent and not yet acknowledged, so that a slow
//!   peer slows callers down instead of growing a queue without bound. A frame's permit
//!   travels with it and is released only when its acknowledgement arrives or the stream
//!   is lost, not when its caller gives up waiting, so the window bounds what the peer
//!   really holds even after acknowledgement timeouts;
//! - the connection task renumbers frames with its own per-stream sequence and matches
//!   acknowledgements by it, so callers' sequence numbers never collide;
//! - when the stream breaks, every frame in flight fails with UNAVAILABLE naming the peer
//!   and the cause (an acknowledged frame is never lost, an unacknowledged one is never
//!   reported as sent), and the task reconnects with exponential backoff; frames offered
//!   while the peer is down fail at once with the last connection error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use semclip_proto::v1::link_client::LinkClient;
use semclip_proto::v1::{FrameAck, SymbolFrame};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// How a [`FrameLink`] behaves.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The peer's URL, e.g. `http://127.0.0.1:50052`.
    pub endpoint: String,
    /// A short name of the peer for messages (`channel`, `receiver`).
    pub peer: &'static str,
    /// Most frames sent and not yet acknowledged.
    pub window: usize,
    /// Longest wait for one acknowledgement (DEADLINE_EXCEEDED after it).
    pub ack_timeout: Duration,
    /// First reconnection delay.
    pub backoff_initial: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
}

/// One frame waiting to be sent, and where its acknowledgement goes.
struct Pending {
    frame: SymbolFrame,
    reply: oneshot::Sender<Result<FrameAck, Status>>,
    /// The frame's window slot, held until it is acknowledged or lost.
    slot: OwnedSemaphorePermit,
}

/// A frame sent and not yet acknowledged: where its acknowledgement goes, and its slot.
type InFlight = (
    oneshot::Sender<Result<FrameAck, Status>>,
    OwnedSemaphorePermit,
);

/// Handle on the link; cheap to clone, all clones share one connection.
#[derive(Clone)]
pub struct FrameLink {
    /// Frames for the connection task. Bounded by the window: a caller holds a window
    /// permit before it enqueues, so the queue never holds more than `window` frames.
    queue: mpsc::Sender<Pending>,
    /// Permits for frames in flight (queued, sent, not yet acknowledged).
    window: Arc<Semaphore>,
    /// Whether the stream to the peer is up now; for health and errors.
    connected: watch::Receiver<bool>,
    /// Copied from the options for messages and timeouts.
    options: Arc<LinkOptions>,
    /// Cancelled when the connection task has ended.
    stopped: CancellationToken,
}

impl FrameLink {
    /// Starts the connection task. It runs until `shutdown` is cancelled; frames still
    /// queued then fail with UNAVAILABLE.
    pub fn spawn(options: LinkOptions, metrics: Metrics, shutdown: CancellationToken) -> Self {
        let window = options.window.max(1);
        let (queue, rx) = mpsc::channel(window);
        let (connected_tx, connected) = watch::channel(false);
        let options = Arc::new(options);
        let stopped = CancellationToken::new();
        let task = connection_task(options.clone(), rx, connected_tx, metrics, shutdown);
        let done = stopped.clone();
        tokio::spawn(async move {
            task.await;
            done.cancel();
        });
        Self {
            queue,
            window: Arc::new(Semaphore::new(window)),
            connected,
            options,
            stopped,
        }
    }

    /// Waits, at most `limit`, until the connection task has ended after shutdown: the
    /// frames in flight acknowledged or failed and the stream to the peer closed. Returns
    /// whether it ended. A daemon calls it before it returns, so that stopping the peer
    /// next does not look like a lost link.
    pub async fn closed(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.stopped.cancelled())
            .await
            .is_ok()
    }

    /// [`closed`](Self::closed) within the acknowledgement timeout (the longest a frame
    /// in flight can still wait for its peer), with a warning when the task is still
    /// running then.
    pub async fn wait_closed(&self) {
        let limit = self.options.ack_timeout;
        if !self.closed(limit).await {
            warn!(
                "the link to the {} at {} did not close within {} ms (ack timeout)",
                self.options.peer,
                self.options.endpoint,
                limit.as_millis()
            );
        }
    }

    /// Whether the stream to the peer is up now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Sends `frame` (its `sequence` is replaced) and waits for the peer's acknowledgement.
    /// Waits for a window slot first; the ack timeout covers that wait too. Errors:
    /// UNAVAILABLE when the peer is down or the stream broke before the acknowledgement,
    /// DEADLINE_EXCEEDED after the ack timeout (the frame may still reach the peer; its
    /// slot stays taken until the peer acknowledges it or the stream is lost). A refusal
    /// by the peer is an `Ok` acknowledgement with `accepted = false`.
    pub async fn send(&self, frame: SymbolFrame) -> Result<FrameAck, Status> {
        let shut_down = || Status::unavailable(format!("{} link is shut down", self.options.peer));
        let exchange = async {
            let slot = Arc::clone(&self.window)
                .acquire_owned()
                .await
                .map_err(|_| shut_down())?;
            let (reply, ack) = oneshot::channel();
            self.queue
                .send(Pending { frame, reply, slot })
                .await
                .map_err(|_| shut_down())?;
            ack.await.map_err(|_| shut_down())?
        };
        match tokio::time::timeout(self.options.ack_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no acknowledgement from the {} at {} within {} ms (ack_timeout_ms)",
                self.options.peer,
                self.options.endpoint,
                self.options.ack_timeout.as_millis()
            ))),
        }
    }
}

/// Connects, streams, reconnects; see the module docs.
async fn connection_task(
    options: Arc<LinkOptions>,
    mut queue: mpsc::Receiver<Pending>,
    connected: watch::Sender<bool>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
    let in_flight_gauge = metrics
        .queue_depth
        .with_label_values(&[&format!("{}_link_in_flight", options.peer)]);

    loop {
        let cause = match open_stream(&options).await {
            Ok((tx, acks)) => {
                info!("link to the {} at {} is up", options.peer, options.endpoint);
                backoff.reset();
                connected.send_replace(true);
                let cause = run_stream(
                    &options,
                    &mut queue,
                    tx,
                    acks,
                    &metrics,
                    &in_flight_gauge,
                    &shutdown,
                )
                .await;
                connected.send_replace(false);
                in_flight_gauge.set(0);
                match cause {
                    None => break,
                    Some(cause) => {
                        warn!(
                            "link to the {} at {} lost: {cause}",
                            options.peer, options.endpoint
                        );
                        cause
                    }
                }
            }
            Err(cause) => cause,
        };

        // Wait before reconnecting; meanwhile refuse new frames with the cause.
        let delay = backoff.next_delay();
        debug!(
            "reconnecting to the {} in {} ms",
            options.peer,
            delay.as_millis()
        );
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shutdown.cancelled() => {
                    fail_queued(&mut queue, &options);
                    return;
                }
                pending = queue.recv() => match pending {
                    Some(p) => {
                        metrics.frames.with_label_values(&["link_unavailable"]).inc();
                        let _ = p.reply.send(Err(Status::unavailable(format!(
                            "{} at {} is unreachable: {cause}",
                            options.peer, options.endpoint
                        ))));
                    }
                    None => return,
                },
            }
        }
    }
    fail_queued(&mut queue, &options);
}

/// Fails every frame still queued at shutdown.
fn fail_queued(queue: &mut mpsc::Receiver<Pending>, options: &LinkOptions) {
    queue.close();
    while let Ok(p) = queue.try_recv() {
        let _ = p.reply.send(Err(Status::unavailable(format!(
            "{} link is shutting down",
            options.peer
        ))));
    }
}

type Acks = tonic::Streaming<FrameAck>;

/// Connects and opens the `Link.Transmit` stream.
async fn open_stream(options: &LinkOptions) -> Result<(mpsc::Sender<SymbolFrame>, Acks), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(options.endpoint.clone())
        .map_err(|e| format!("invalid URL: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
    let (tx, rx) = mpsc::channel(options.window.max(1));
    let response = LinkClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
        .transmit(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    Ok((tx, response.into_inner()))
}

/// Streams frames until the stream breaks (returns the cause) or shutdown (returns `None`
/// after the frames in flight were acknowledged or failed).
async fn run_stream(
    options: &LinkOptions,
    queue: &mut mpsc::Receiver<Pending>,
    tx: mpsc::Sender<SymbolFrame>,
    mut acks: Acks,
    metrics: &Metrics,
    in_flight_gauge: &prometheus::IntGauge,
    shutdown: &CancellationToken,
) -> Option<String> {
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut next_sequence: u64 = 0;
    let mut tx = Some(tx);

    let cause = loop {
        tokio::select! {
            pending = queue.recv(), if tx.is_some() => {
                let Some(Pending { mut frame, reply, slot }) = pending else {
                    break None;
                };
                frame.sequence = next_sequence;
                next_sequence += 1;
                let sender = tx.as_ref().expect("guarded by the select condition");
                if sender.send(frame).await.is_err() {
                    let _ = reply.send(Err(Status::unavailable(format!(
                        "link to the {} closed while sending", options.peer
                    ))));
                    break Some("the outgoing stream closed".to_owned());
                }
                in_flight.insert(next_sequence - 1, (reply, slot));
                in_flight_gauge.set(in_flight.len() as i64);
            }
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    match in_flight.remove(&ack.sequence) {
                        Some((reply, _slot)) => { let _ = reply.send(Ok(ack)); }
                        None => debug!(sequence = ack.sequence, "acknowledgement for no frame in flight"),
                    }
                    in_flight_gauge.set(in_flight.len() as i64);
                    if tx.is_none() && in_flight.is_empty() {
                        break None;
                    }
                }
                Ok(None) => break Some(format!("the {} closed the stream", options.peer)),
                Err(status) => break Some(format!("{}: {}", status.code(), status.message())),
            },
            _ = shutdown.cancelled(), if tx.is_some() => {
                // Stop sending; keep reading until the frames in flight are acknowledged.
                tx = None;
                queue.close();
                if in_flight.is_empty() {
                    break None;
                }
            }
        }
    };

    for (_, (reply, _slot)) in in_flight.drain() {
        metrics.frames.with_label_values(&["link_lost"]).inc();
        let message = match &cause {
            Some(c) => format!(
                "link to the {} at {} lost before the acknowledgement: {c}",
                options.peer, options.endpoint
            ),
            None => format!("{} link is shutting down", options.peer),
        };
        let _ = reply.send(Err(Status::unavailable(message)));
    }
    if cause.is_none() {
        fail_queued(queue, options);
    }
    cause
}

/// The error and its sources, joined, for messages that name the real cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use semclip_proto::v1::link_server::{Link, LinkServer};
    use tokio_stream::{Stream, StreamExt};
    use tonic::{Request, Response, Streaming};

    use super::*;

    /// A peer that acknowledges every frame and reports when a sender's stream has ended.
    struct AckingPeer {
        ended: mpsc::UnboundedSender<()>,
    }

    type AckStream = Pin<Box<dyn Stream<Item = Result<FrameAck, Status>> + Send>>;

    #[tonic::async_trait]
    impl Link for AckingPeer {
        type TransmitStream = AckStream;

        async fn transmit(
            &self,
            request: Request<Streaming<SymbolFrame>>,
        ) -> Result<Response<AckStream>, Status> {
            let mut frames = request.into_inner();
            let ended = self.ended.clone();
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(async move {
                while let Some(Ok(frame)) = frames.next().await {
                    let ack = FrameAck {
                        sequence: frame.sequence,
                        message_id: frame.message_id,
                        accepted: true,
                        ..FrameAck::default()
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
                let _ = ended.send(());
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    fn options(endpoint: String) -> LinkOptions {
        LinkOptions {
            endpoint,
            peer: "receiver",
            window: 4,
            ack_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn closed_returns_after_the_stream_to_the_peer_has_ended() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (ended_tx, mut ended) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LinkServer::new(AckingPeer { ended: ended_tx }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let shutdown = CancellationToken::new();
        let link = FrameLink::spawn(
            options(format!("http://{address}")),
            Metrics::new("test"),
            shutdown.clone(),
        );
        let frame = SymbolFrame {
            message_id: "m1".into(),
            ..SymbolFrame::default()
        };
        let ack = link.send(frame).await.expect("the peer acknowledges");
        assert!(ack.accepted);
        assert_eq!(ack.message_id, "m1");
        assert!(
            !link.closed(Duration::from_millis(100)).await,
            "the connection task ended before shutdown"
        );

        shutdown.cancel();
        assert!(
            link.closed(Duration::from_secs(5)).await,
            "the connection task did not end after shutdown"
        );
        // By then the sender has closed its side of the stream: the peer saw it end.
        let seen = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await;
        assert_eq!(seen, Ok(Some(())), "the peer never saw the stream end");
        let refused = link
            .send(SymbolFrame::default())
            .await
            .expect_err("a frame after shutdown is refused");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn closed_returns_after_shutdown_while_the_peer_is_unreachable() {
        // Bind and drop: nothing listens on the port, so every connection is refused.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let shutdown = CancellationToken::new();
        let link = FrameLink::spawn(
            options(format!("http://{address}")),
            Metrics::new("test"),
            shutdown.clone(),
        );
        assert!(!link.closed(Duration::from_millis(100)).await);
        shutdown.cancel();
        assert!(link.closed(Duration::from_secs(5)).await);
    }
}
