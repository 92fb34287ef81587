//! Keeps the transmitter's view of the channel current through `Channel.WatchChannel`,
//! reconnecting with exponential backoff.

use std::time::Duration;

use semclip_common::backoff::Backoff;
use semclip_proto::v1 as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::service::ChannelView;

/// Runs until `shutdown`; publishes every configuration the channel pushes, and
/// [`ChannelView::Unknown`] with the cause while it is unreachable.
pub(crate) async fn watch_channel(
    endpoint: String,
    view: watch::Sender<ChannelView>,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    loop {
        let cause = tokio::select! {
            _ = shutdown.cancelled() => return,
            cause = follow(&endpoint, &view, &mut backoff) => cause,
        };
        let was_known = matches!(*view.borrow(), ChannelView::Known(_));
        if was_known {
            warn!("lost the channel's configuration stream at {endpoint}: {cause}");
        }
        view.send_replace(ChannelView::Unknown(format!(
            "channel at {endpoint}: {cause}"
        )));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Follows one WatchChannel stream until it fails; returns the cause.
async fn follow(
    endpoint: &str,
    view: &watch::Sender<ChannelView>,
    backoff: &mut Backoff,
) -> String {
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.to_owned()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)),
        Err(e) => return format!("invalid URL: {e}"),
    };
    let channel = match channel.connect().await {
        Ok(c) => c,
        Err(e) => return error_chain(&e),
    };
    let mut stream = match pb::channel_client::ChannelClient::new(channel)
        .watch_channel(pb::WatchChannelRequest {})
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return format!("{}: {}", s.code(), s.message()),
    };
    loop {
        match stream.message().await {
            Ok(Some(config)) => {
                backoff.reset();
                let previous = match &*view.borrow() {
                    ChannelView::Known(c) => Some(c.snr_db),
                    ChannelView::Unknown(_) => None,
                };
                match previous {
                    None => info!(
                        "channel at {endpoint}: SNR {} dB (epoch {})",
                        config.snr_db, config.epoch
                    ),
                    Some(old) if old != config.snr_db => info!(
                        "SNR changed from {old} dB to {} dB (epoch {})",
                        config.snr_db, config.epoch
                    ),
                    Some(_) => {}
                }
                view.send_replace(ChannelView::Known(config));
            }
            Ok(None) => return "the channel closed the configuration stream".into(),
            Err(s) => return format!("{}: {}", s.code(), s.message()),
        }
    }
}

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
