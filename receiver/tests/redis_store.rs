//! The Redis message store against a real `redis-server`: two receivers sharing one Redis
//! answer for each other's messages, the count and age bounds hold in Redis, a message
//! decoded with another bundle is refused, and a Redis outage gives UNAVAILABLE (at start:
//! the receiver refuses to start) without stopping the daemon.
//!
//! Each test starts its own `redis-server` on a free loopback port, without persistence
//! (`--save '' --appendonly no`), and kills it when the test ends, failed or not. Frames
//! go straight to the receivers' `Link.Transmit` with the channel state filled in, as the
//! channel simulator sends them.
//!
//! Needs `redis-server` on PATH (`scripts/install-redis.sh`), the fixture bundle
//! (`SEMCLIP_TEST_FIXTURE`, default `target/semclip-fixture`) and ONNX Runtime
//! (`ORT_DYLIB_PATH`, default the project's `.venv`); fails with a message saying how to
//! get whichever is missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use semclip_common::config::MetricsAddr;
use semclip_proto::v1 as pb;
use semclip_receiver::config::StoreKind;
use semclip_receiver::store::{RedisStore, StoredMessage};
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
        .filter(|v| !v.is_empty())
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

/// The `redis-server` binary on PATH; panics with the install command when there is none.
fn redis_server_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .expect(
            "redis-server not found on PATH: these tests need a real Redis; run \
             scripts/install-redis.sh (as root) to install it",
        )
}

/// A private `redis-server` on a free loopback port; killed when dropped.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    /// Starts (or restarts) the server on this port and waits until it answers PING.
    fn spawn(&mut self) {
        let child = Command::new(redis_server_binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.pings() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    fn pings(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Kills the server (an outage).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Receiver {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: Served,
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> pb::receiver_client::ReceiverClient<tonic::transport::Channel> {
        pb::receiver_client::ReceiverClient::connect(self.url())
            .await
            .unwrap()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(30), self.served)
            .await
            .expect("receiver stops within 30 s")
            .expect("serve task does not panic");
        result.expect("serve returns Ok after a graceful shutdown");
    }
}

fn redis_config(
    redis: &RedisServer,
    max_messages: usize,
    max_age_s: u64,
) -> semclip_receiver::Config {
    let mut config = semclip_receiver::Config::from_env();
    config.metrics_addr = MetricsAddr::OFF;
    config.model.bundle = fixture_bundle();
    config.model.ort_dylib = Some(ort_dylib());
    config.model.device = semclip_common::Device::Cpu;
    config.default_labels = vec!["cat".into(), "dog".into(), "ship".into()];
    config.default_top_k = 2;
    config.store = StoreKind::Redis;
    config.redis_url = redis.url();
    config.redis_key_prefix = "test:".into();
    config.redis_timeout_ms = 1_000;
    config.store_max_messages = max_messages;
    config.store_max_age_s = max_age_s;
    config
}

async fn start_receiver(config: semclip_receiver::Config) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel();
    let served = tokio::spawn(semclip_receiver::serve(config, listener, async {
        let _ = rx.await;
    }));
    let receiver = Receiver { addr, stop, served };
    wait_serving(&receiver.url()).await;
    receiver
}

/// Polls the standard health service until the server reports SERVING.
async fn wait_serving(url: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    for _ in 0..1200 {
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

/// Bundle id, version and a k it has a decoder for, from the fixture's manifest.
fn bundle_identity() -> (String, String, u32) {
    let text = std::fs::read_to_string(fixture_bundle().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let k = manifest["jscc"][0]["k"].as_u64().expect("a JSCC k") as u32;
    (
        manifest["id"].as_str().unwrap().to_owned(),
        manifest["version"].as_str().unwrap().to_owned(),
        k,
    )
}

/// A frame as the channel forwards it: 2k symbols (unit average energy), AWGN at 10 dB.
fn frame(sequence: u64, message_id: &str) -> pb::SymbolFrame {
    let (bundle_id, bundle_version, k) = bundle_identity();
    let symbols = (0..2 * k)
        .map(|i| {
            let x = (i as f32 * 0.7 + sequence as f32 * 1.3).sin();
            x * std::f32::consts::SQRT_2
        })
        .collect();
    pb::SymbolFrame {
        sequence,
        message_id: message_id.into(),
        k,
        snr_db: 10.0,
        symbols,
        bundle_id,
        bundle_version,
        channel: Some(pb::ChannelState {
            snr_db: 10.0,
            fading: pb::Fading::Awgn as i32,
            h_re: 1.0,
            h_im: 0.0,
        }),
    }
}

/// Sends `ids` as frames over one `Link.Transmit` stream, in order; returns the acks.
async fn transmit(receiver: &Receiver, ids: &[&str]) -> Vec<pb::FrameAck> {
    let mut link = pb::link_client::LinkClient::connect(receiver.url())
        .await
        .unwrap();
    let mut acks = Vec::new();
    // One stream per frame keeps the arrival order (frames of one stream decode in
    // parallel).
    for (i, id) in ids.iter().enumerate() {
        let frames = tokio_stream::iter(vec![frame(i as u64, id)]);
        let mut stream = link.transmit(frames).await.unwrap().into_inner();
        while let Some(ack) = stream.message().await.unwrap() {
            acks.push(ack);
        }
    }
    acks
}

fn classify_request(id: &str) -> pb::ClassifyRequest {
    pb::ClassifyRequest {
        message_id: id.into(),
        labels: vec!["cat".into(), "dog".into(), "truck".into()],
        templates: vec![],
        top_k: 0,
    }
}

async fn listed_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .client()
        .await
        .list_messages(pb::ListMessagesRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .messages
        .into_iter()
        .map(|m| m.message_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_received_by_one_replica_is_classified_by_the_other() {
    let redis = RedisServer::start();
    let a = start_receiver(redis_config(&redis, 3, 3_600)).await;
    let b = start_receiver(redis_config(&redis, 3, 3_600)).await;

    // Delivered through A, classified through B.
    let acks = transmit(&a, &["shared"]).await;
    assert_eq!(acks.len(), 1);
    assert!(acks[0].accepted, "{:?}", acks[0]);
    let reply = b
        .client()
        .await
        .classify(classify_request("shared"))
        .await
        .expect("B answers for a message A received")
        .into_inner();
    assert_eq!(reply.message_id, "shared");
    assert_eq!(reply.labels.len(), 3);
    assert_eq!(reply.snr_db, 10.0);
    let total: f32 = reply.labels.iter().map(|l| l.probability).sum();
    assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");

    // A classifies it the same way: the embedding crossed Redis exactly.
    let again = a
        .client()
        .await
        .classify(classify_request("shared"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.labels, reply.labels);

    // B lists it, with A's top labels of the default set.
    let listed = b
        .client()
        .await
        .list_messages(pb::ListMessagesRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].top_labels.len(), 2);

    // Count bound: three more through B evict the oldest ("shared") for both replicas,
    // record included.
    let acks = transmit(&b, &["m1", "m2", "m3"]).await;
    assert!(acks.iter().all(|a| a.accepted), "{acks:?}");
    assert_eq!(listed_ids(&a).await, ["m3", "m2", "m1"]);
    let err = a
        .client()
        .await
        .classify(classify_request("shared"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg("test:msg:shared")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "the evicted message's record is deleted");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg("test:msg:m3")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl_ms > 3_500_000 && ttl_ms <= 3_600_000,
        "records carry the max age as TTL, got {ttl_ms} ms"
    );

    // A record decoded with another bundle is refused, not misclassified.
    let (bundle_id, bundle_version, k) = bundle_identity();
    let other = RedisStore::connect(
        &redis.url(),
        "test:",
        3,
        Duration::from_secs(3_600),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    other
        .insert(StoredMessage {
            message_id: "foreign".into(),
            k,
            snr_db: 10.0,
            effective_snr_db: 10.0,
            z_hat: vec![0.0; 4],
            received_unix_ms: 1,
            top_labels: vec![],
            bundle_id: format!("{bundle_id}-other"),
            bundle_version,
        })
        .await
        .unwrap();
    let err = b
        .client()
        .await
        .classify(classify_request("foreign"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("-other"), "{}", err.message());

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_expire_from_redis_after_the_max_age() {
    let redis = RedisServer::start();
    let receiver = start_receiver(redis_config(&redis, 100, 2)).await;

    let acks = transmit(&receiver, &["short-lived"]).await;
    assert!(acks[0].accepted, "{:?}", acks[0]);
    assert_eq!(listed_ids(&receiver).await, ["short-lived"]);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg("test:msg:short-lived")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl_ms > 0 && ttl_ms <= 2_000, "TTL {ttl_ms} ms");

    // Redis drops the record itself once the TTL has run out.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg("test:msg:short-lived")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "the record expired");
    let err = receiver
        .client()
        .await
        .classify(classify_request("short-lived"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(listed_ids(&receiver).await.is_empty());

    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_gives_unavailable_and_the_receiver_keeps_serving() {
    let mut redis = RedisServer::start();
    let receiver = start_receiver(redis_config(&redis, 100, 3_600)).await;
    let acks = transmit(&receiver, &["before"]).await;
    assert!(acks[0].accepted, "{:?}", acks[0]);

    redis.stop();
    let mut client = receiver.client().await;
    let err = client
        .classify(classify_request("before"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("redis"), "{}", err.message());

    let err = client
        .list_messages(pb::ListMessagesRequest { limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("redis"), "{}", err.message());

    let acks = transmit(&receiver, &["during"]).await;
    assert!(!acks[0].accepted);
    assert_eq!(acks[0].code, Code::Unavailable as i32, "{:?}", acks[0]);
    assert!(acks[0].error.contains("redis"), "{}", acks[0].error);

    // Still up and healthy; once Redis is back (empty: it had no persistence), frames are
    // stored again without a restart.
    wait_serving(&receiver.url()).await;
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let acks = transmit(&receiver, &["after"]).await;
        if acks[0].accepted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no frame stored within 20 s of Redis coming back: {:?}",
            acks[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed_ids(&receiver).await, ["after"]);

    receiver.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_receiver_at_start() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut config = semclip_receiver::Config::from_env();
    config.metrics_addr = MetricsAddr::OFF;
    config.store = StoreKind::Redis;
    config.redis_url = format!("redis://:secret@127.0.0.1:{port}/0");
    config.redis_timeout_ms = 500;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();

    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        semclip_receiver::serve(config, listener, std::future::pending()),
    )
    .await
    .expect("serve gives up within 30 s")
    .expect_err("serve refuses to start without its Redis");
    let message = err.to_string();
    assert!(
        message.contains(&format!("redis store at redis://***@127.0.0.1:{port}/0")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    println!("refused to start after {:?}: {message}", started.elapsed());
}
