//! Endpoints of the three services and the translation of gRPC failures into sentences
//! that name the service, its address and what went wrong.

use std::error::Error as _;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Which of the three services an endpoint or an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Transmitter,
    Channel,
    Receiver,
}

impl Service {
    /// The service's name as people read it in messages.
    pub fn name(self) -> &'static str {
        match self {
            Service::Transmitter => "transmitter",
            Service::Channel => "channel",
            Service::Receiver => "receiver",
        }
    }
}

/// A failed call, worded for people: `transmitter at http://127.0.0.1:50051: unavailable
/// (connection refused)`.
#[derive(Debug, thiserror::Error)]
#[error("{} at {endpoint}: {what}", service.name())]
pub struct RpcError {
    /// The service that was called.
    pub service: Service,
    /// The address it was called at, as the user gave it.
    pub endpoint: String,
    /// The gRPC status code, when the call reached the point of having one.
    pub code: Option<Code>,
    /// The status message or the transport failure, in words.
    pub what: String,
}

impl RpcError {
    /// Words an error returned by a call to `service` at `endpoint`.
    pub fn from_status(service: Service, endpoint: &str, status: &Status) -> Self {
        Self {
            service,
            endpoint: endpoint.to_string(),
            code: Some(status.code()),
            what: describe_status(status),
        }
    }

    /// Words an address that could not be turned into an endpoint.
    pub fn bad_address(service: Service, endpoint: &str, why: impl std::fmt::Display) -> Self {
        Self {
            service,
            endpoint: endpoint.to_string(),
            code: None,
            what: format!("not a valid address ({why})"),
        }
    }
}

/// The code's name as in the gRPC specification, in lower case with spaces.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `code: message`, or for transport failures `unavailable (connection refused)` with the
/// innermost cause found in the error's source chain.
pub fn describe_status(status: &Status) -> String {
    let name = code_name(status.code());
    if let Some(io) = find_io_error(status) {
        let cause = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
            std::io::ErrorKind::TimedOut => "timed out".to_string(),
            _ => io.to_string(),
        };
        return format!("{name} ({cause})");
    }
    let message = status.message().trim();
    if message.is_empty() {
        name.to_string()
    } else {
        format!("{name}: {message}")
    }
}

fn find_io_error(status: &Status) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = err.source();
    }
    None
}

/// Adds `http://` to a bare `host:port`.
pub fn normalise_address(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// A lazily connecting channel to `address`: the connection is made by the first call, so
/// that a service that is down shows up as that call's `unavailable` error.
pub fn lazy_channel(service: Service, address: &str) -> Result<Channel, RpcError> {
    let uri = normalise_address(address);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| RpcError::bad_address(service, &uri, e))?
        .connect_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_without_transport_cause_names_code_and_message() {
        let status = Status::not_found("no message with id \"x\"");
        assert_eq!(
            describe_status(&status),
            "not found: no message with id \"x\""
        );
        let err = RpcError::from_status(Service::Receiver, "http://127.0.0.1:1", &status);
        assert_eq!(
            err.to_string(),
            "receiver at http://127.0.0.1:1: not found: no message with id \"x\""
        );
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalise_address("127.0.0.1:5"), "http://127.0.0.1:5");
        assert_eq!(normalise_address("https://a:5"), "https://a:5");
    }

    #[tokio::test]
    async fn refused_connection_is_worded_as_such() {
        // Bind then drop a listener so that the port is very likely closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let channel = lazy_channel(Service::Channel, &address).unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap_err();
        let err = RpcError::from_status(Service::Channel, &normalise_address(&address), &status);
        assert_eq!(err.code, Some(Code::Unavailable));
        assert!(
            err.to_string()
                .ends_with(": unavailable (connection refused)"),
            "{err}"
        );
    }
}
