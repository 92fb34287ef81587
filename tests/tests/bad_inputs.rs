//! Bad inputs get the right gRPC status code and a message that names the problem.

use semclip_cli::rpc::RpcError;
use semclip_proto::v1::link_client::LinkClient as LinkStreamClient;
use semclip_proto::v1::transmitter_client::TransmitterClient;
use semclip_proto::v1::{ChannelState, Fading, SendRequest, SymbolFrame};
use semclip_tests::{fixture_bundle, manifest, png_image, start_link};
use tonic::Code;

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Asserts the error's code and that its message contains every one of `words`
/// (case-insensitively).
fn assert_status(err: &RpcError, code: Code, words: &[&str]) {
    assert_eq!(err.code, Some(code), "{err}");
    let text = err.what.to_lowercase();
    for w in words {
        assert!(
            text.contains(&w.to_lowercase()),
            "{err:?} should mention {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_reasons() {
    let bundle = fixture_bundle();
    let (link, client) = start_link(&bundle).await;

    // Not an image at all.
    let err = client
        .send(b"this is not an image, just text".to_vec(), "")
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["image"]);

    // A PNG cut off in the middle.
    let mut truncated = png_image(64, 64, 3);
    truncated.truncate(truncated.len() / 2);
    let err = client.send(truncated, "").await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["image"]);

    // No bytes.
    let err = client.send(Vec::new(), "").await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["empty"]);

    // A valid message to ask about.
    let reply = client.send(png_image(32, 32, 4), "valid").await.unwrap();

    // No labels.
    let err = client
        .classify(&reply.message_id, &[], &[], 0)
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["label"]);

    // A template without its "{}".
    let err = client
        .classify(
            &reply.message_id,
            &labels(&["cat"]),
            &labels(&["a photo"]),
            0,
        )
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["template"]);

    // An id the receiver never saw.
    let err = client
        .classify("no-such-message-42", &labels(&["cat", "dog"]), &[], 0)
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, &["no-such-message-42"]);

    link.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_image_is_refused() {
    let bundle = fixture_bundle();
    let (link, client) = start_link(&bundle).await;

    // One byte over the transmitter's default limit of 16 MiB.
    let mut transmitter = TransmitterClient::connect(link.endpoints().transmitter)
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);
    let status = transmitter
        .send(SendRequest {
            image: vec![0xFF; (16 << 20) + 1],
            message_id: String::new(),
        })
        .await
        .unwrap_err();
    let err = RpcError::from_status(
        semclip_cli::rpc::Service::Transmitter,
        &link.endpoints().transmitter,
        &status,
    );
    assert_status(&err, Code::InvalidArgument, &["image", "bytes"]);

    // The link still works afterwards.
    client.send(png_image(16, 16, 5), "").await.unwrap();
    link.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_from_another_bundle_is_refused() {
    let bundle = fixture_bundle();
    let m = manifest(&bundle);
    let k = m["default_k"].as_u64().unwrap() as u32;
    let version = m["version"].as_str().unwrap().to_string();
    let (link, client) = start_link(&bundle).await;

    // Straight to the receiver's Link service, as a channel simulator would.
    let mut peer = LinkStreamClient::connect(link.endpoints().receiver)
        .await
        .unwrap();
    let mut symbols = vec![0.0f32; 2 * k as usize];
    for pair in symbols.chunks_mut(2) {
        pair[0] = 1.0;
    }
    let frame = SymbolFrame {
        sequence: 1,
        message_id: "foreign-frame".to_string(),
        k,
        snr_db: 10.0,
        symbols,
        bundle_id: "some-other-bundle".to_string(),
        bundle_version: version,
        channel: Some(ChannelState {
            snr_db: 10.0,
            fading: Fading::Awgn as i32,
            h_re: 1.0,
            h_im: 0.0,
        }),
    };
    let outcome = peer
        .transmit(futures::stream::iter(vec![frame]))
        .await
        .map(|r| r.into_inner());
    let mut acks = outcome.unwrap();
    let ack = acks.message().await.unwrap().expect("one acknowledgement");
    assert_eq!(ack.sequence, 1);
    assert!(!ack.accepted, "{ack:?}");
    assert_eq!(ack.code, Code::FailedPrecondition as i32, "{ack:?}");
    assert!(ack.error.contains("some-other-bundle"), "{ack:?}");
    assert!(ack.error.contains("bundle"), "{ack:?}");

    // Nothing was stored under that id.
    let err = client
        .classify("foreign-frame", &labels(&["cat", "dog"]), &[], 0)
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, &["foreign-frame"]);
    link.shutdown().await.unwrap();
}
