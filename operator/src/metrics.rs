//! The operator's metrics. Data comes from the reconcilers and the webhook (counters and
//! timings they record); it goes out as Prometheus text on the health listener's `/metrics`
//! (served by [`gatehouse_runtime::health`]). Names are the contract with the chart's dashboard.

use gatehouse_runtime::metrics::MetricSet;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::error::Result;

/// Every metric the operator exports. Names are the contract with the chart's dashboard.
#[derive(Debug, Clone)]
pub struct Metrics {
    set: MetricSet,
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
        let set = MetricSet::new(vec![
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(certificates_issued.clone()),
            Box::new(approval_to_issue.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(admission_reviews.clone()),
            Box::new(admission_duration.clone()),
            Box::new(leader.clone()),
        ])?;
        Ok(Self {
            set,
            requests,
            certificates_issued,
            approval_to_issue,
            reconcile_errors,
            reconcile_duration,
            admission_reviews,
            admission_duration,
            leader,
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
