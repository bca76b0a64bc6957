//! The proxy's metrics. Data comes from the SSH handler (logins, refusals), the session tasks
//! (bytes, active sessions), the uploader (failures, latency) and the audit writer (batches
//! waiting); it goes out as Prometheus text on the health listener's `/metrics`. Names are the
//! contract with the chart's dashboard.

use gatehouse_runtime::metrics::MetricSet;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::error::Result;

/// Every metric the proxy exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    set: MetricSet,
    /// Sessions (session channels) open right now.
    pub sessions_active: IntGauge,
    /// Sessions opened, by kind (`shell`, `exec`, `subsystem`, `direct-tcpip`).
    pub sessions_total: IntCounterVec,
    /// Bytes bridged, by direction (`to_target`, `to_client`).
    pub bytes_total: IntCounterVec,
    /// Successful engineer logins.
    pub logins_total: IntCounter,
    /// Refused logins, by reason (`blocked` when the rate limiter refused without checking).
    pub auth_failures_total: IntCounterVec,
    /// Sessions ended by the proxy, by reason (`revoked`, `expired`, `recording`, `shutdown`).
    pub sessions_terminated_total: IntCounterVec,
    /// Failed recording upload attempts (each retry counts).
    pub upload_failures_total: IntCounter,
    /// Seconds one successful recording upload took.
    pub upload_duration_seconds: Histogram,
    /// Recordings spooled on disk and not yet uploaded.
    pub recordings_pending: IntGauge,
    /// Sealed audit batches in the audit spool, not yet in the store (set when rendered).
    pub audit_pending_batches: IntGauge,
}

impl Metrics {
    /// Create and register the metrics.
    pub fn new() -> Result<Self> {
        let sessions_active = IntGauge::new(
            "gatehouse_proxy_sessions_active",
            "SSH sessions open through the proxy",
        )?;
        let sessions_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_proxy_sessions_total",
                "SSH sessions opened through the proxy",
            ),
            &["kind"],
        )?;
        let bytes_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_proxy_bytes_total",
                "Bytes bridged between engineers and targets",
            ),
            &["direction"],
        )?;
        let logins_total = IntCounter::new(
            "gatehouse_proxy_logins_total",
            "Engineer logins accepted by the proxy",
        )?;
        let auth_failures_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_proxy_auth_failures_total",
                "Engineer logins refused by the proxy",
            ),
            &["reason"],
        )?;
        let sessions_terminated_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_proxy_sessions_terminated_total",
                "Sessions the proxy ended because access ended or recording failed",
            ),
            &["reason"],
        )?;
        let upload_failures_total = IntCounter::new(
            "gatehouse_proxy_upload_failures_total",
            "Failed recording upload attempts",
        )?;
        let upload_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_proxy_upload_duration_seconds",
                "Seconds one successful recording upload took",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
            ]),
        )?;
        let recordings_pending = IntGauge::new(
            "gatehouse_proxy_recordings_pending",
            "Recordings spooled on disk and not yet uploaded",
        )?;
        let audit_pending_batches = IntGauge::new(
            "gatehouse_audit_pending_batches",
            "Sealed audit batches spooled on disk and not yet in the store",
        )?;
        let set = MetricSet::new(vec![
            Box::new(sessions_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sessions_total.clone()),
            Box::new(bytes_total.clone()),
            Box::new(logins_total.clone()),
            Box::new(auth_failures_total.clone()),
            Box::new(sessions_terminated_total.clone()),
            Box::new(upload_failures_total.clone()),
            Box::new(upload_duration_seconds.clone()),
            Box::new(recordings_pending.clone()),
            Box::new(audit_pending_batches.clone()),
        ])?;
        Ok(Self {
            set,
            sessions_active,
            sessions_total,
            bytes_total,
            logins_total,
            auth_failures_total,
            sessions_terminated_total,
            upload_failures_total,
            upload_duration_seconds,
            recordings_pending,
            audit_pending_batches,
        })
    }

    /// The name of every metric family, as exported (histograms add `_bucket`, `_sum` and
    /// `_count`). Dashboards and alerts may query only these.
    pub fn names(&self) -> &[String] {
        self.set.names()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String> {
        Ok(self.set.render()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_its_name() -> Result<()> {
        let metrics = Metrics::new()?;
        metrics.sessions_total.with_label_values(&["shell"]).inc();
        metrics
            .bytes_total
            .with_label_values(&["to_client"])
            .inc_by(5);
        metrics
            .auth_failures_total
            .with_label_values(&["blocked"])
            .inc();
        metrics
            .sessions_terminated_total
            .with_label_values(&["revoked"])
            .inc();
        let text = metrics.render()?;
        for name in [
            "gatehouse_proxy_sessions_active",
            "gatehouse_proxy_sessions_total{kind=\"shell\"} 1",
            "gatehouse_proxy_bytes_total{direction=\"to_client\"} 5",
            "gatehouse_proxy_logins_total",
            "gatehouse_proxy_auth_failures_total{reason=\"blocked\"} 1",
            "gatehouse_proxy_sessions_terminated_total{reason=\"revoked\"} 1",
            "gatehouse_proxy_upload_failures_total",
            "gatehouse_proxy_upload_duration_seconds_bucket",
            "gatehouse_proxy_recordings_pending",
            "gatehouse_audit_pending_batches",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        Ok(())
    }
}
