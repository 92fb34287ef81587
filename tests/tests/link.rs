//! The link end to end over real gRPC sockets: send, classify, list, watch, and an SNR
//! change in the middle of a SendStream that must reach both ends.

use std::time::Duration;

use futures::StreamExt;
use semclip_proto::v1::transmitter_client::TransmitterClient;
use semclip_proto::v1::SendReply;
use semclip_proto::v1::{PromptKind, SendRequest};
use semclip_tests::{fixture_bundle, manifest, png_image, start_link};
use tokio::sync::mpsc::Sender;
use tonic::Streaming;

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The learned prompt's prior-correction strength for k at `snr_db`, straight from the
/// manifest (docs/bundle.md: linear in dB between grid points, clamped outside).
fn expected_prior_strength(manifest: &serde_json::Value, k: u32, snr_db: f64) -> f32 {
    let prior = &manifest["tapl"]["prior"];
    let Some(table) = prior["beta"][k.to_string()].as_array() else {
        return 0.0;
    };
    let grid: Vec<f64> = prior["grid_db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let beta: Vec<f64> = table.iter().map(|v| v.as_f64().unwrap()).collect();
    let x = snr_db.clamp(grid[0], grid[grid.len() - 1]);
    let i = grid.iter().position(|&g| g >= x).unwrap().max(1);
    let w = (x - grid[i - 1]) / (grid[i] - grid[i - 1]);
    (beta[i - 1] * (1.0 - w) + beta[i] * w) as f32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_then_classify_list_and_watch() {
    let bundle = fixture_bundle();
    let default_k = manifest(&bundle)["default_k"].as_u64().unwrap() as u32;
    let has_tapl = manifest(&bundle).get("tapl").is_some_and(|t| !t.is_null());
    let (link, client) = start_link(&bundle).await;

    let mut watch = client.watch().await.unwrap();
    let config = client.set_channel(Some(12.0), None, Some(7)).await.unwrap();
    assert_eq!(config.snr_db, 12.0);
    assert_eq!(config.seed, 7);

    let reply = client
        .send_at_snr(&png_image(40, 30, 1), "first", 12.0)
        .await
        .unwrap();
    assert!(reply.message_id.starts_with("first"));
    assert_eq!(reply.k, default_k);
    let t = reply.timings.unwrap();
    assert!(t.total_ms > 0.0 && t.total_ms >= t.link_ms, "{t:?}");

    // The message arrives on the watch stream.
    let arrived = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = watch.next().await.unwrap().unwrap();
            if m.message_id == reply.message_id {
                return m;
            }
        }
    })
    .await
    .expect("the message shows up on WatchMessages");
    assert_eq!(arrived.k, default_k);
    assert_eq!(arrived.snr_db, 12.0);

    // Learned prompt (or the bundle's default template) when no template is given.
    let names = labels(&["cat", "dog", "truck", "ship"]);
    let answer = client
        .classify(&reply.message_id, &names, &[], 0)
        .await
        .unwrap();
    assert_eq!(answer.message_id, reply.message_id);
    assert_eq!(answer.snr_db, 12.0);
    let expected_prompt = if has_tapl {
        PromptKind::Learned
    } else {
        PromptKind::Template
    };
    assert_eq!(answer.prompt, expected_prompt as i32);
    let want = expected_prior_strength(&manifest(&bundle), default_k, 12.0);
    assert!(
        (answer.prior_strength - want).abs() < 1e-6,
        "prior strength {} where the manifest gives {want}",
        answer.prior_strength
    );
    assert_eq!(answer.labels.len(), names.len());
    let sum: f32 = answer.labels.iter().map(|l| l.probability).sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
    assert!(answer
        .labels
        .windows(2)
        .all(|w| w[0].probability >= w[1].probability));
    let mut returned: Vec<String> = answer.labels.iter().map(|l| l.label.clone()).collect();
    returned.sort();
    let mut asked = names.clone();
    asked.sort();
    assert_eq!(returned, asked);

    // Caller templates, top_k honoured.
    let templated = client
        .classify(
            &reply.message_id,
            &names,
            &labels(&["a photo of a {}.", "a blurry photo of a {}."]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(templated.prompt, PromptKind::Template as i32);
    assert_eq!(
        templated.prior_strength, 0.0,
        "caller templates are never corrected"
    );
    assert_eq!(templated.labels.len(), 2);

    // A second image; the list is newest first and holds both.
    let second = client
        .send_at_snr(&png_image(64, 64, 2), "second", 12.0)
        .await
        .unwrap();
    let listed = client.list(0).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.message_id.as_str()).collect();
    let (first_at, second_at) = (
        ids.iter().position(|i| *i == reply.message_id).unwrap(),
        ids.iter().position(|i| *i == second.message_id).unwrap(),
    );
    assert!(second_at < first_at, "newest first: {ids:?}");
    assert_eq!(client.list(1).await.unwrap().len(), 1);

    link.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snr_change_mid_stream_reaches_both_ends() {
    let bundle = fixture_bundle();
    let (link, client) = start_link(&bundle).await;
    client.set_channel(Some(20.0), None, Some(1)).await.unwrap();

    // One SendStream for the whole test: requests go in through an mpsc channel.
    let (requests, rx) = tokio::sync::mpsc::channel::<SendRequest>(4);
    let mut transmitter = TransmitterClient::connect(link.endpoints().transmitter)
        .await
        .unwrap();
    let mut replies = transmitter
        .send_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut counter = 0;

    // Before the change: wait until the stream's sends are encoded at 20 dB.
    let before = send_until(&requests, &mut replies, &mut counter, 20.0, &[20.0]).await;

    // Change the SNR while the stream stays open; the transmitter must pick it up, and
    // until it does, sends may only carry the old SNR.
    let changed = client.set_channel(Some(-5.0), None, None).await.unwrap();
    assert_eq!(changed.snr_db, -5.0);
    let after = send_until(&requests, &mut replies, &mut counter, -5.0, &[20.0, -5.0]).await;

    // The receiver reports the SNR the channel applied to each message.
    let names = labels(&["cat", "dog"]);
    let old = client
        .classify(&before.message_id, &names, &[], 1)
        .await
        .unwrap();
    assert_eq!(old.snr_db, 20.0);
    let new = client
        .classify(&after.message_id, &names, &[], 1)
        .await
        .unwrap();
    assert_eq!(new.snr_db, -5.0);
    let listed = client.list(0).await.unwrap();
    let info = listed
        .iter()
        .find(|m| m.message_id == after.message_id)
        .unwrap();
    assert_eq!(info.snr_db, -5.0);

    drop(requests);
    assert!(
        replies.next().await.is_none(),
        "the stream ends after the last request"
    );
    link.shutdown().await.unwrap();
}

/// Sends images on the open stream until one is encoded at `target` dB (at most 10 s);
/// every reply must carry one of `allowed`.
async fn send_until(
    requests: &Sender<SendRequest>,
    replies: &mut Streaming<SendReply>,
    counter: &mut u32,
    target: f32,
    allowed: &[f32],
) -> SendReply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        *counter += 1;
        let request = SendRequest {
            image: png_image(32, 32, *counter),
            message_id: format!("stream-{counter}"),
        };
        requests.send(request).await.unwrap();
        let reply = replies.next().await.unwrap().unwrap();
        assert_eq!(
            reply.message_id,
            format!("stream-{counter}"),
            "replies in order"
        );
        assert!(allowed.contains(&reply.snr_db), "{reply:?}");
        if reply.snr_db == target {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no send encoded at {target} dB within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
