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
