//! gRPC plumbing shared by the daemons: health, reflection and admission control.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The standard health service, starting NOT_SERVING for the whole server (`""`) and for
/// each named service, so that nothing looks ready before its models are loaded.
/// Call [`set_all_serving`] afterwards.
pub async fn health_service(
    services: &[&str],
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, server) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for name in services {
        reporter
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    (reporter, server)
}

/// Flips the whole server and each named service to SERVING.
pub async fn set_all_serving(reporter: &HealthReporter, services: &[&str]) {
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    for name in services {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
}

/// Flips everything back to NOT_SERVING (at shutdown, so load balancers stop routing).
pub async fn set_all_not_serving(reporter: &HealthReporter, services: &[&str]) {
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for name in services {
        reporter
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
}

/// Server reflection (v1 and v1alpha, which older clients such as grpcurl still ask for)
/// describing the SemCLIP services and the health service.
pub fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(semclip_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(semclip_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Caps the requests a daemon works on at once. Excess requests are refused at once with
/// RESOURCE_EXHAUSTED instead of queueing without bound, so that a client sees overload
/// immediately and can back off.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    /// One permit per request in progress; a permit is held for the request's lifetime.
    semaphore: Arc<Semaphore>,
    /// The configured number of permits, quoted in the error.
    limit: usize,
}

impl ConcurrencyLimit {
    /// A limit of `limit` concurrent requests (at least one).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A permit for one request, or RESOURCE_EXHAUSTED naming the limit.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.semaphore.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent requests: max_concurrent_requests = {}",
                self.limit
            ))
        })
    }

    /// Requests in progress now.
    pub fn in_use(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }
}

/// INVALID_ARGUMENT for an input over a configured limit, naming the limit and its value.
pub fn over_limit(
    what: &str,
    actual: impl std::fmt::Display,
    limit_name: &str,
    limit: impl std::fmt::Display,
) -> Status {
    Status::invalid_argument(format!(
        "{what} is {actual}, over the limit {limit_name} = {limit}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_requests_are_refused_until_a_permit_returns() {
        let limit = ConcurrencyLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        let err = limit.try_acquire().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("max_concurrent_requests = 2"));
        assert_eq!(limit.in_use(), 2);

        drop(a);
        assert!(limit.try_acquire().is_ok());
    }

    #[test]
    fn over_limit_names_the_limit() {
        let s = over_limit("image", "20000000 bytes", "max_image_bytes", 10_000_000);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().contains("max_image_bytes = 10000000"),
            "{}",
            s.message()
        );
    }
}
