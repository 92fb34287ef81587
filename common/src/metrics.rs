//! Prometheus metrics of a daemon and the HTTP endpoint that serves them at `/metrics`.
//!
//! Every daemon owns one [`Metrics`] with its own registry, so that the three daemons can
//! run in one process (the demo, tests) without sharing series. Names and labels are listed
//! in docs/metrics.md.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::MetricsAddr;
use crate::ServeError;

/// Buckets from 0.1 ms to 10 s: stages range from sub-millisecond channel application to
/// multi-second image encoding on a slow CPU.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The series every daemon exports; a daemon leaves the ones it has no use for at zero.
#[derive(Clone)]
pub struct Metrics {
    /// Registry holding exactly the series below; served by [`serve_metrics`].
    pub registry: Registry,
    /// `semclip_requests_total{method}`: gRPC requests (and stream items) started.
    pub requests: IntCounterVec,
    /// `semclip_request_errors_total{method,code}`: requests that ended in an error status.
    pub request_errors: IntCounterVec,
    /// `semclip_request_duration_seconds{method}`: latency of each request.
    pub request_seconds: HistogramVec,
    /// `semclip_stage_duration_seconds{stage}`: latency of one processing stage
    /// (preprocess, image_encode, jscc_encode, link, channel, jscc_decode, text_features,
    /// classify).
    pub stage_seconds: HistogramVec,
    /// `semclip_frames_total{event}`: symbol frames by what happened to them.
    pub frames: IntCounterVec,
    /// `semclip_symbols_total`: complex channel uses carried by accepted frames.
    pub symbols: IntCounter,
    /// `semclip_queue_depth{queue}`: items waiting or in flight in a bounded queue.
    pub queue_depth: IntGaugeVec,
}

impl Metrics {
    /// Registers the series in a new registry; `daemon` becomes a constant label.
    pub fn new(daemon: &str) -> Self {
        let registry = Registry::new_custom(
            None,
            Some([("daemon".to_owned(), daemon.to_owned())].into()),
        )
        .expect("a constant label with a valid name");

        let requests = IntCounterVec::new(
            Opts::new(
                "semclip_requests_total",
                "gRPC requests and stream items started",
            ),
            &["method"],
        )
        .expect("valid metric");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "semclip_request_errors_total",
                "Requests and stream items that ended in an error status, by gRPC code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "semclip_request_duration_seconds",
                "Latency of each request",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid metric");
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "semclip_stage_duration_seconds",
                "Latency of one processing stage",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        let frames = IntCounterVec::new(
            Opts::new("semclip_frames_total", "Symbol frames by event"),
            &["event"],
        )
        .expect("valid metric");
        let symbols = IntCounter::new(
            "semclip_symbols_total",
            "Complex channel uses carried by accepted frames",
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "semclip_queue_depth",
                "Items waiting or in flight in a bounded queue",
            ),
            &["queue"],
        )
        .expect("valid metric");

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_errors.clone()),
            Box::new(request_seconds.clone()),
            Box::new(stage_seconds.clone()),
            Box::new(frames.clone()),
            Box::new(symbols.clone()),
            Box::new(queue_depth.clone()),
        ] {
            registry.register(c).expect("series registered once");
        }

        Self {
            registry,
            requests,
            request_errors,
            request_seconds,
            stage_seconds,
            frames,
            symbols,
            queue_depth,
        }
    }

    /// Records one finished request: count, latency and, when it failed, its code.
    pub fn observe_request<T>(
        &self,
        method: &str,
        elapsed: Duration,
        result: &Result<T, tonic::Status>,
    ) {
        self.requests.with_label_values(&[method]).inc();
        self.request_seconds
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
        if let Err(status) = result {
            self.request_errors
                .with_label_values(&[method, code_name(status.code())])
                .inc();
        }
    }

    /// Records the latency of one stage.
    pub fn observe_stage(&self, stage: &str, elapsed: Duration) {
        self.stage_seconds
            .with_label_values(&[stage])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of all series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The snake_case name of a gRPC code, used as a label value.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Binds the metrics endpoint (when not `off`) and serves `GET /metrics` until `shutdown`
/// is cancelled. Returns the bound address, which differs from the configured one when the
/// port was 0.
pub async fn serve_metrics(
    addr: MetricsAddr,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<Option<std::net::SocketAddr>, ServeError> {
    let Some(addr) = addr.0 else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io {
            context: format!("binding the metrics endpoint {addr}"),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Io {
        context: "reading the metrics endpoint's address".into(),
        source,
    })?;

    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    tracing::info!("metrics on http://{local}/metrics");
    Ok(Some(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_errors_and_stages() {
        let m = Metrics::new("test");
        m.observe_request::<()>(
            "Classify",
            Duration::from_millis(3),
            &Err(tonic::Status::not_found("x")),
        );
        m.observe_stage("classify", Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains(r#"semclip_requests_total{method="Classify",daemon="test"} 1"#));
        assert!(text.contains(
            r#"semclip_request_errors_total{code="not_found",method="Classify",daemon="test"} 1"#
        ));
        assert!(text.contains("semclip_stage_duration_seconds_bucket"));
    }
}
