//! The channel simulator goes away in the middle of a session and comes back on the same
//! port: sends fail with UNAVAILABLE during the outage, succeed afterwards, and every send
//! that was acknowledged is stored at the receiver.

use std::time::Duration;

use semclip_tests::{eventually, fixture_bundle, png_image, start_link};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_during_a_channel_outage_and_recover_after_it() {
    let bundle = fixture_bundle();
    let (mut link, client) = start_link(&bundle).await;
    let mut acknowledged = Vec::new();

    for i in 0..3 {
        let reply = client
            .send(png_image(32, 32, i), &format!("before-{i}"))
            .await
            .unwrap();
        acknowledged.push(reply.message_id);
    }

    link.stop_channel().await.unwrap();

    // With the channel gone, a send cannot be acknowledged: UNAVAILABLE, not a hang.
    for i in 0..3 {
        let started = std::time::Instant::now();
        let err = client
            .send(png_image(32, 32, 10 + i), &format!("outage-{i}"))
            .await
            .unwrap_err();
        assert_eq!(err.code, Some(Code::Unavailable), "{err}");
        assert!(
            err.what.to_lowercase().contains("channel"),
            "the message names the channel: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    link.start_channel().await.unwrap();

    // The transmitter reconnects (with backoff); sends succeed again.
    let mut attempt = 0;
    let first_after = eventually(Duration::from_secs(30), "a send after the restart", || {
        attempt += 1;
        let client = client.clone();
        let id = format!("after-{attempt}");
        async move {
            match client.send(png_image(32, 32, 100), &id).await {
                Ok(reply) => Some(reply),
                Err(e) => {
                    assert_eq!(e.code, Some(Code::Unavailable), "{e}");
                    None
                }
            }
        }
    })
    .await;
    acknowledged.push(first_after.message_id);
    for i in 0..3 {
        let reply = client
            .send(png_image(32, 32, 200 + i), &format!("after-ok-{i}"))
            .await
            .unwrap();
        acknowledged.push(reply.message_id);
    }

    // No acknowledged send is lost: all are stored and can be classified.
    let stored: Vec<String> = client
        .list(0)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged {id} missing from {stored:?}"
        );
        client
            .classify(id, &["cat".to_string(), "dog".to_string()], &[], 1)
            .await
            .unwrap();
    }
    // Sends refused during the outage left nothing behind.
    assert!(
        !stored.iter().any(|id| id.starts_with("outage-")),
        "{stored:?}"
    );
    link.shutdown().await.unwrap();
}

/// One SendStream stays open while the channel goes away and comes back: the items sent
/// during the outage come back with UNAVAILABLE in their reply (the stream itself goes
/// on), the items after the restart succeed on the same stream, and every item reported
/// as sent is stored at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stream_survives_a_channel_restart() {
    use futures::StreamExt;
    use semclip_proto::v1::transmitter_client::TransmitterClient;
    use semclip_proto::v1::SendRequest;

    let bundle = fixture_bundle();
    let (mut link, client) = start_link(&bundle).await;
    let (requests, rx) = tokio::sync::mpsc::channel::<SendRequest>(4);
    let mut transmitter = TransmitterClient::connect(link.endpoints().transmitter)
        .await
        .unwrap();
    let mut replies = transmitter
        .send_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut counter = 0u32;
    let mut send = |phase: &str| {
        counter += 1;
        SendRequest {
            image: png_image(32, 32, counter),
            message_id: format!("{phase}-{counter}"),
        }
    };
    let mut sent = Vec::new();

    for _ in 0..3 {
        requests.send(send("before")).await.unwrap();
        let reply = replies.next().await.unwrap().unwrap();
        assert_eq!(reply.error_code, 0, "{reply:?}");
        sent.push(reply.message_id);
    }

    link.stop_channel().await.unwrap();
    for _ in 0..3 {
        requests.send(send("outage")).await.unwrap();
        let reply = replies.next().await.unwrap().unwrap();
        assert_eq!(reply.error_code, Code::Unavailable as i32, "{reply:?}");
        assert!(reply.error.to_lowercase().contains("channel"), "{reply:?}");
    }

    link.start_channel().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        requests.send(send("after")).await.unwrap();
        let reply = replies.next().await.unwrap().unwrap();
        if reply.error_code == 0 {
            sent.push(reply.message_id);
            break;
        }
        assert_eq!(reply.error_code, Code::Unavailable as i32, "{reply:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "no item succeeded on the stream within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..3 {
        requests.send(send("after")).await.unwrap();
        let reply = replies.next().await.unwrap().unwrap();
        assert_eq!(reply.error_code, 0, "{reply:?}");
        sent.push(reply.message_id);
    }
    drop(requests);
    assert!(
        replies.next().await.is_none(),
        "the stream ends with its requests"
    );

    let stored: Vec<String> = client
        .list(0)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    for id in &sent {
        assert!(stored.contains(id), "sent {id} missing from {stored:?}");
    }
    assert!(
        !stored.iter().any(|id| id.starts_with("outage-")),
        "{stored:?}"
    );
    link.shutdown().await.unwrap();
}
