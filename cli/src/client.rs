//! Typed clients of the three services. Every call returns an [`RpcError`] that names the
//! service and its address, so that callers can print it as it is.

use std::time::Duration;

use semclip_proto::v1::channel_client::ChannelClient;
use semclip_proto::v1::receiver_client::ReceiverClient;
use semclip_proto::v1::transmitter_client::TransmitterClient;
use semclip_proto::v1::{
    ChannelConfig, ClassifyReply, ClassifyRequest, Fading, GetChannelRequest, ListMessagesRequest,
    MessageInfo, SendReply, SendRequest, SetChannelRequest, WatchMessagesRequest,
};
use tonic::transport::Channel;
use tonic::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::rpc::{lazy_channel, normalise_address, RpcError, Service};

/// Addresses of the three services, as `host:port` or URIs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub transmitter: String,
    pub channel: String,
    pub receiver: String,
}

/// Clients of the transmitter, the channel simulator and the receiver. Connections are
/// made lazily by the first call to each service.
#[derive(Clone)]
pub struct LinkClient {
    endpoints: Endpoints,
    transmitter: TransmitterClient<Channel>,
    channel: ChannelClient<Channel>,
    receiver: ReceiverClient<Channel>,
    health: [HealthClient<Channel>; 3],
}

/// How long a channel change may take to reach the transmitter before
/// [`LinkClient::send_at_snr`] gives up.
pub const SNR_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message the client accepts or sends (the services enforce their own limits).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl LinkClient {
    /// Clients of the services at `endpoints`; fails only on a malformed address.
    pub fn new(endpoints: Endpoints) -> Result<Self, RpcError> {
        let endpoints = Endpoints {
            transmitter: normalise_address(&endpoints.transmitter),
            channel: normalise_address(&endpoints.channel),
            receiver: normalise_address(&endpoints.receiver),
        };
        let tx = lazy_channel(Service::Transmitter, &endpoints.transmitter)?;
        let ch = lazy_channel(Service::Channel, &endpoints.channel)?;
        let rx = lazy_channel(Service::Receiver, &endpoints.receiver)?;
        Ok(Self {
            transmitter: TransmitterClient::new(tx.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            channel: ChannelClient::new(ch.clone()),
            receiver: ReceiverClient::new(rx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            health: [
                HealthClient::new(tx),
                HealthClient::new(ch),
                HealthClient::new(rx),
            ],
            endpoints,
        })
    }

    /// The addresses in use, with their scheme.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn endpoint(&self, service: Service) -> &str {
        match service {
            Service::Transmitter => &self.endpoints.transmitter,
            Service::Channel => &self.endpoints.channel,
            Service::Receiver => &self.endpoints.receiver,
        }
    }

    fn err(&self, service: Service, status: tonic::Status) -> RpcError {
        RpcError::from_status(service, self.endpoint(service), &status)
    }

    /// Sends one image; returns once the receiver has accepted its frame.
    pub async fn send(&self, image: Vec<u8>, message_id: &str) -> Result<SendReply, RpcError> {
        let request = SendRequest {
            image,
            message_id: message_id.to_string(),
        };
        self.transmitter
            .clone()
            .send(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(Service::Transmitter, s))
    }

    /// Sends `image` and returns a reply whose encoder SNR is `snr_db`. Right after a
    /// channel change the transmitter may still encode at the previous SNR (it learns of
    /// changes through a watch stream); such a send is repeated under the id
    /// `<message_id>-retry<n>` until the change has reached it, for at most
    /// [`SNR_PROPAGATION_TIMEOUT`].
    pub async fn send_at_snr(
        &self,
        image: &[u8],
        message_id: &str,
        snr_db: f32,
    ) -> anyhow::Result<SendReply> {
        let deadline = tokio::time::Instant::now() + SNR_PROPAGATION_TIMEOUT;
        let mut attempt = 0;
        loop {
            let id = if attempt == 0 {
                message_id.to_string()
            } else {
                format!("{message_id}-retry{attempt}")
            };
            let reply = self.send(image.to_vec(), &id).await?;
            if (reply.snr_db - snr_db).abs() < 1e-3 {
                return Ok(reply);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the transmitter still encodes at {:.2} dB {} s after the channel was set \
                     to {snr_db:.2} dB",
                    reply.snr_db,
                    SNR_PROPAGATION_TIMEOUT.as_secs()
                );
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks the receiver to rank `labels` for a stored message.
    pub async fn classify(
        &self,
        message_id: &str,
        labels: &[String],
        templates: &[String],
        top_k: u32,
    ) -> Result<ClassifyReply, RpcError> {
        let request = ClassifyRequest {
            message_id: message_id.to_string(),
            labels: labels.to_vec(),
            templates: templates.to_vec(),
            top_k,
        };
        self.receiver
            .clone()
            .classify(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(Service::Receiver, s))
    }

    /// Changes the channel; `None` leaves a field as it is.
    pub async fn set_channel(
        &self,
        snr_db: Option<f32>,
        fading: Option<Fading>,
        seed: Option<u64>,
    ) -> Result<ChannelConfig, RpcError> {
        let request = SetChannelRequest {
            snr_db,
            fading: fading.unwrap_or(Fading::Unspecified) as i32,
            seed,
        };
        self.channel
            .clone()
            .set_channel(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(Service::Channel, s))
    }

    /// The channel configuration in force.
    pub async fn get_channel(&self) -> Result<ChannelConfig, RpcError> {
        self.channel
            .clone()
            .get_channel(GetChannelRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(Service::Channel, s))
    }

    /// Stored messages, newest first (`limit` 0: all).
    pub async fn list(&self, limit: u32) -> Result<Vec<MessageInfo>, RpcError> {
        self.receiver
            .clone()
            .list_messages(ListMessagesRequest { limit })
            .await
            .map(|r| r.into_inner().messages)
            .map_err(|s| self.err(Service::Receiver, s))
    }

    /// The stream of messages as they arrive at the receiver.
    pub async fn watch(&self) -> Result<Streaming<MessageInfo>, RpcError> {
        self.receiver
            .clone()
            .watch_messages(WatchMessagesRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(Service::Receiver, s))
    }

    /// Words a failure of a stream opened by [`LinkClient::watch`].
    pub fn receiver_error(&self, status: tonic::Status) -> RpcError {
        self.err(Service::Receiver, status)
    }

    /// Waits until all three services report SERVING on gRPC health (service name ""),
    /// polling every 20 ms, for at most `timeout`.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<(), RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let services = [Service::Transmitter, Service::Channel, Service::Receiver];
        for (service, health) in services.into_iter().zip(self.health.iter()) {
            loop {
                let answer = health
                    .clone()
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                let last = match answer {
                    Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32 => {
                        break;
                    }
                    Ok(reply) => tonic::Status::unavailable(format!(
                        "health reports {:?}",
                        ServingStatus::try_from(reply.get_ref().status)
                            .unwrap_or(ServingStatus::Unknown)
                    )),
                    Err(status) => status,
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(self.err(service, last));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}
