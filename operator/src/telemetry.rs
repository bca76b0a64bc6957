//! Metrics, health endpoints and the small HTTP plumbing the webhook shares.
//!
//! Data comes from the reconcilers and the webhook (counters and timings they record); it goes
//! out on a plain-HTTP listener as `/metrics` (Prometheus text format), `/healthz` (the process
//! runs) and `/readyz` (keys are loaded and the webhook serves).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes_body::Full;
use http::{Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// Log to stderr as JSON lines (`format == "json"`) or text, filtered by `RUST_LOG` or else
/// `default_filter`. Shared by the operator and the proxy.
pub fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}

/// Response bodies here are whole buffers.
pub mod bytes_body {
    /// A complete body.
    pub type Full = http_body_util::Full<hyper::body::Bytes>;
}

/// Every metric the operator exports. Names are the contract with the chart's dashboard.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    names: Vec<String>,
    /// AccessRequests by phase, as the leader last saw them.
    pub requests: IntGaugeVec,
    /// Certificates signed.
    pub certificates_issued: IntCounter,
    /// Seconds from the approval that completed a request to its certificate.
    pub approval_to_issue: Histogram,
    /// Reconcile failures by controller and error.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile durations by controller.
    pub reconcile_duration: HistogramVec,
    /// Admission reviews by operation and verdict.
    pub admission_reviews: IntCounterVec,
    /// Admission review latency, including SubjectAccessReviews.
    pub admission_duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
}

impl Metrics {
    /// Create and register the metrics.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let requests = IntGaugeVec::new(
            Opts::new("gatehouse_access_requests", "AccessRequests by phase"),
            &["phase"],
        )?;
        let certificates_issued = IntCounter::new(
            "gatehouse_certificates_issued_total",
            "OpenSSH user certificates signed",
        )?;
        let approval_to_issue = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_approval_to_issue_seconds",
                "Seconds from the approval that completed a request to its signed certificate",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new("gatehouse_reconcile_errors_total", "Reconcile failures"),
            &["controller", "error"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_reconcile_duration_seconds",
                "Reconcile durations",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["controller"],
        )?;
        let admission_reviews = IntCounterVec::new(
            Opts::new(
                "gatehouse_admission_reviews_total",
                "Admission reviews of AccessRequests",
            ),
            &["webhook", "operation", "verdict"],
        )?;
        let admission_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_admission_duration_seconds",
                "Admission review latency",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        )?;
        let leader = IntGauge::new(
            "gatehouse_operator_leader",
            "Whether this replica holds the leader Lease (1) or stands by (0)",
        )?;
        let names = register(
            &registry,
            vec![
                Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(certificates_issued.clone()),
                Box::new(approval_to_issue.clone()),
                Box::new(reconcile_errors.clone()),
                Box::new(reconcile_duration.clone()),
                Box::new(admission_reviews.clone()),
                Box::new(admission_duration.clone()),
                Box::new(leader.clone()),
            ],
        )?;
        Ok(Self {
            registry,
            requests,
            certificates_issued,
            approval_to_issue,
            reconcile_errors,
            reconcile_duration,
            admission_reviews,
            admission_duration,
            leader,
            names,
        })
    }

    /// The name of every metric family, as exported (histograms add `_bucket`, `_sum` and
    /// `_count`). Dashboards and alerts may query only these.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Register `collectors` in `registry` and return their metric family names (what
/// `Metrics::names` reports: the contract with dashboards).
pub fn register(
    registry: &Registry,
    collectors: Vec<Box<dyn prometheus::core::Collector>>,
) -> prometheus::Result<Vec<String>> {
    let mut names = Vec::new();
    for collector in collectors {
        names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
        registry.register(collector)?;
    }
    Ok(names)
}

/// Readiness, flipped on once start-up finished.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Mark ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Mark not ready (shutting down): load balancers stop sending new work.
    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full> {
    let mut response = Response::new(Full::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Bind `address`, reporting which address failed.
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address, source })
}

/// Serve HTTP/1 connections from `listener` with `handler`; each connection in its own task.
/// `accept` turns a TCP stream into the transport (identity for plain HTTP, TLS for the webhook).
pub async fn serve<H, F, A, AF, S>(listener: TcpListener, handler: H, accept: A)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full>> + Send + 'static,
    A: Fn(tokio::net::TcpStream) -> AF + Clone + Send + Sync + 'static,
    AF: Future<Output = std::io::Result<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        let accept = accept.clone();
        tokio::spawn(async move {
            let stream = match accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, %peer, "connection setup failed");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
}

/// Serve `/metrics` (whatever `render` produces), `/healthz` and `/readyz` on `listener`.
/// Shared by the operator and the proxy.
pub async fn serve_health<R, E>(listener: TcpListener, render: R, readiness: Readiness)
where
    R: Fn() -> std::result::Result<String, E> + Clone + Send + Sync + 'static,
    E: std::fmt::Display,
{
    let handler = move |request: Request<Incoming>| {
        let render = render.clone();
        let readiness = readiness.clone();
        async move {
            match request.uri().path() {
                "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
                "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
                "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                "/metrics" => match render() {
                    Ok(body) => text(StatusCode::OK, body),
                    Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                },
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    };
    serve(listener, handler, |stream| async move { Ok(stream) }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_its_contract_name() -> Result<()> {
        let metrics = Metrics::new()?;
        metrics.requests.with_label_values(&["Pending"]).set(2);
        metrics.certificates_issued.inc();
        metrics.approval_to_issue.observe(0.2);
        metrics
            .reconcile_errors
            .with_label_values(&["accessrequest", "WriteStatus"])
            .inc();
        metrics
            .reconcile_duration
            .with_label_values(&["accessrequest"])
            .observe(0.01);
        metrics
            .admission_reviews
            .with_label_values(&["mutate", "UPDATE", "denied"])
            .inc();
        metrics.admission_duration.observe(0.003);
        metrics.leader.set(1);
        let text = metrics.render()?;
        for line in [
            "gatehouse_access_requests{phase=\"Pending\"} 2",
            "gatehouse_certificates_issued_total 1",
            "gatehouse_approval_to_issue_seconds_count 1",
            "gatehouse_reconcile_errors_total{controller=\"accessrequest\",error=\"WriteStatus\"} 1",
            "gatehouse_reconcile_duration_seconds_count{controller=\"accessrequest\"} 1",
            "gatehouse_admission_reviews_total{operation=\"UPDATE\",verdict=\"denied\",webhook=\"mutate\"} 1",
            "gatehouse_admission_duration_seconds_count 1",
            "gatehouse_operator_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        Ok(())
    }
}
