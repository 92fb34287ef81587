//! Runs the transmitter, the channel simulator and the receiver in one process on
//! 127.0.0.1:0 with the test fixture bundle, and drives them over gRPC: sends, SNR changes,
//! classification, limits, per-item stream errors, a receiver outage and shutdown.
//!
//! Needs the fixture bundle (`SEMCLIP_TEST_FIXTURE`, default `target/semclip-fixture`) and
//! ONNX Runtime (`ORT_DYLIB_PATH`, default the project's `.venv`); fails with a message
//! saying how to create them when they are missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use semclip_common::config::MetricsAddr;
use semclip_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

type Served = JoinHandle<Result<(), semclip_common::ServeError>>;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_bundle() -> PathBuf {
    let root = std::env::var_os("SEMCLIP_TEST_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/semclip-fixture"));
    let bundle = root.join("bundle");
    assert!(
        bundle.join("manifest.json").is_file(),
        "test fixture missing at {}: run scripts/setup-python.sh, then \
         .venv/bin/python -m semclip_models.fixture --out target/semclip-fixture \
         (or set SEMCLIP_TEST_FIXTURE)",
        bundle.display()
    );
    bundle
}

fn ort_dylib() -> PathBuf {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join(
                ".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
            )
        });
    assert!(
        path.is_file(),
        "ONNX Runtime library missing at {}: run scripts/setup-python.sh or set ORT_DYLIB_PATH",
        path.display()
    );
    path
}

fn png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 36, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(6).wrapping_add(seed),
            (y as u8).wrapping_mul(7),
            seed.wrapping_mul(3),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Daemon {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: Served,
}

impl Daemon {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(30), self.served)
            .await
            .expect("daemon stops within 30 s")
            .expect("serve task does not panic");
        result.expect("serve returns Ok after a graceful shutdown");
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn start_receiver(listener: TcpListener, addr: SocketAddr) -> Daemon {
    let mut config = semclip_receiver::Config::from_env();
    config.metrics_addr = MetricsAddr::OFF;
    config.model.bundle = fixture_bundle();
    config.model.ort_dylib = Some(ort_dylib());
    config.model.device = semclip_common::Device::Cpu;
    config.default_labels = vec!["cat".into(), "dog".into(), "ship".into()];
    config.default_top_k = 2;
    config.max_labels = 5;
    let (stop, rx) = oneshot::channel();
    let served = tokio::spawn(semclip_receiver::serve(config, listener, async {
        let _ = rx.await;
    }));
    Daemon { addr, stop, served }
}

async fn start_channel(receiver: String) -> Daemon {
    let (listener, addr) = bind().await;
    let mut config = semclip_channel_sim::Config::from_env();
    config.metrics_addr = MetricsAddr(Some("127.0.0.1:0".parse().unwrap()));
    config.receiver = receiver;
    config.snr_db = 10.0;
    config.backoff_initial_ms = 20;
    config.backoff_max_ms = 200;
    let (stop, rx) = oneshot::channel();
    let served = tokio::spawn(semclip_channel_sim::serve(config, listener, async {
        let _ = rx.await;
    }));
    Daemon { addr, stop, served }
}

async fn start_transmitter(channel: String) -> Daemon {
    let (listener, addr) = bind().await;
    let mut config = semclip_transmitter::Config::from_env();
    config.metrics_addr = MetricsAddr::OFF;
    config.channel = channel;
    config.model.bundle = fixture_bundle();
    config.model.ort_dylib = Some(ort_dylib());
    config.model.device = semclip_common::Device::Cpu;
    config.max_image_bytes = 100_000;
    config.backoff_initial_ms = 20;
    config.backoff_max_ms = 200;
    let (stop, rx) = oneshot::channel();
    let served = tokio::spawn(semclip_transmitter::serve(config, listener, async {
        let _ = rx.await;
    }));
    Daemon { addr, stop, served }
}

/// Polls the standard health service until the server reports SERVING.
async fn wait_serving(url: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    for _ in 0..600 {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            let mut client = HealthClient::new(channel);
            if let Ok(r) = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never reported SERVING");
}

/// Sends until the transmitter has caught up with the channel's SNR (the watch stream is
/// asynchronous); returns the reply sent at `snr_db`.
async fn send_at(
    tx: &mut pb::transmitter_client::TransmitterClient<tonic::transport::Channel>,
    snr_db: f32,
    id: &str,
) -> pb::SendReply {
    for attempt in 0..100 {
        let reply = tx
            .send(pb::SendRequest {
                image: png(attempt as u8),
                message_id: id.into(),
            })
            .await;
        if let Ok(r) = reply {
            let r = r.into_inner();
            if r.snr_db == snr_db {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transmitter never sent at {snr_db} dB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_cross_the_link_and_are_classified() {
    let (rx_listener, rx_addr) = bind().await;
    let receiver = start_receiver(rx_listener, rx_addr).await;
    let channel = start_channel(receiver.url()).await;
    let transmitter = start_transmitter(channel.url()).await;
    wait_serving(&receiver.url()).await;
    wait_serving(&channel.url()).await;
    wait_serving(&transmitter.url()).await;

    let mut tx = pb::transmitter_client::TransmitterClient::connect(transmitter.url())
        .await
        .unwrap();
    let mut ch = pb::channel_client::ChannelClient::connect(channel.url())
        .await
        .unwrap();
    let mut rx = pb::receiver_client::ReceiverClient::connect(receiver.url())
        .await
        .unwrap();

    // One image at the initial 10 dB.
    let sent = send_at(&mut tx, 10.0, "first").await;
    assert_eq!(sent.k, 8, "the fixture's default k");
    assert_eq!(sent.error_code, 0);
    let t = sent.timings.unwrap();
    assert!(t.total_ms >= t.link_ms && t.link_ms > 0.0, "{t:?}");

    // Classified with the learned prompt (the fixture has TAPL), probabilities sum to one.
    let reply = rx
        .classify(pb::ClassifyRequest {
            message_id: "first".into(),
            labels: vec!["cat".into(), "dog".into(), "truck".into()],
            templates: vec![],
            top_k: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.labels.len(), 3);
    assert_eq!(reply.snr_db, 10.0);
    assert_eq!(reply.prompt, pb::PromptKind::Learned as i32);
    let total: f32 = reply.labels.iter().map(|l| l.probability).sum();
    assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    assert!(reply
        .labels
        .windows(2)
        .all(|w| w[0].probability >= w[1].probability));

    // Templates switch to the template prompt; top_k truncates.
    let reply = rx
        .classify(pb::ClassifyRequest {
            message_id: "first".into(),
            labels: vec!["cat".into(), "dog".into(), "truck".into()],
            templates: vec!["a photo of a {}.".into(), "a blurry photo of a {}.".into()],
            top_k: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.labels.len(), 1);
    assert_eq!(reply.prompt, pb::PromptKind::Template as i32);

    // The operator changes the SNR; the channel bumps the epoch and the transmitter follows.
    let config = ch
        .set_channel(pb::SetChannelRequest {
            snr_db: Some(-5.0),
            fading: pb::Fading::RayleighBlock as i32,
            seed: Some(7),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(config.epoch, 1);
    assert_eq!(config.snr_db, -5.0);
    let sent = send_at(&mut tx, -5.0, "second").await;
    assert_eq!(sent.snr_db, -5.0);
    let listed = rx
        .list_messages(pb::ListMessagesRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .messages;
    let second = listed.iter().find(|m| m.message_id == "second").unwrap();
    assert_eq!(second.snr_db, -5.0);
    assert_eq!(
        second.top_labels.len(),
        2,
        "default labels, default_top_k = 2"
    );
    let err = ch
        .set_channel(pb::SetChannelRequest {
            snr_db: Some(f32::NAN),
            fading: 0,
            seed: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let counters = ch
        .get_counters(pb::GetCountersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        counters.frames >= 2 && counters.symbols >= 16,
        "{counters:?}"
    );

    // Errors: unknown message, too many labels, a bad template, a bad image, a large one.
    let err = rx
        .classify(pb::ClassifyRequest {
            message_id: "nope".into(),
            labels: vec!["cat".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = rx
        .classify(pb::ClassifyRequest {
            message_id: "first".into(),
            labels: (0..6).map(|i| format!("l{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_labels = 5"),
        "{}",
        err.message()
    );
    let err = tx
        .send(pb::SendRequest {
            image: b"not an image".to_vec(),
            message_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = tx
        .send(pb::SendRequest {
            image: vec![0; 200_000],
            message_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_image_bytes = 100000"),
        "{}",
        err.message()
    );

    // SendStream: replies in order; the bad item is reported without ending the stream.
    let items = vec![
        pb::SendRequest {
            image: png(1),
            message_id: "s0".into(),
        },
        pb::SendRequest {
            image: b"garbage".to_vec(),
            message_id: "s1".into(),
        },
        pb::SendRequest {
            image: png(2),
            message_id: "s2".into(),
        },
    ];
    let mut replies = tx
        .send_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = replies.message().await.unwrap() {
        got.push((r.message_id, r.error_code));
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], ("s0".to_string(), 0));
    assert_eq!(got[1].0, "s1");
    assert_eq!(got[1].1, Code::InvalidArgument as i32);
    assert_eq!(got[2], ("s2".to_string(), 0));

    // Receiver outage: sends fail with UNAVAILABLE naming the receiver, never silently.
    receiver.shutdown().await;
    let err = tx
        .send(pb::SendRequest {
            image: png(3),
            message_id: "lost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("receiver"), "{}", err.message());

    // The receiver comes back on the same address; the channel reconnects by itself.
    let listener = TcpListener::bind(rx_addr).await.unwrap();
    let receiver = start_receiver(listener, rx_addr).await;
    wait_serving(&receiver.url()).await;
    send_at(&mut tx, -5.0, "after-outage").await;

    transmitter.shutdown().await;
    channel.shutdown().await;
    receiver.shutdown().await;
}
