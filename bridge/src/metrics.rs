//! The bridge's metrics. Data comes from the Slack client (every Web API call and its outcome),
//! the webhook sender (deliveries), and the Request URL / Socket Mode handlers (interactions and
//! the decisions made from them); it goes out as Prometheus text on `--metrics-addr`'s
//! `/metrics`. Label values are fixed sets chosen here, never text from Slack or a receiver.

use gatehouse_runtime::metrics::MetricSet;
use prometheus::{IntCounterVec, Opts};

use crate::error::{Error, Result};

/// Every metric the bridge exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    set: MetricSet,
    /// Slack Web API calls, by method and outcome (`ok`, `rate_limited`, `http_error`,
    /// `slack_error`).
    pub slack_calls_total: IntCounterVec,
    /// Webhook delivery attempts' results, by outcome (`delivered`, `retried`, `dropped`,
    /// `no_key`).
    pub webhook_deliveries_total: IntCounterVec,
    /// Slack interactions received, by outcome (`accepted`, `bad_signature`, `too_large`,
    /// `not_a_payload`, `busy`).
    pub interactions_total: IntCounterVec,
    /// Decisions from Slack clicks, by verb (`approval`, `denial`) and outcome (`recorded`,
    /// `refused`, `unmapped`).
    pub decisions_total: IntCounterVec,
}

impl Metrics {
    /// Create and register the metrics.
    pub fn new() -> Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).map_err(Error::from)
        };
        let slack_calls_total = counter(
            "gatehouse_bridge_slack_calls_total",
            "Slack Web API calls by method and outcome",
            &["method", "outcome"],
        )?;
        let webhook_deliveries_total = counter(
            "gatehouse_bridge_webhook_deliveries_total",
            "Webhook delivery results by outcome",
            &["outcome"],
        )?;
        let interactions_total = counter(
            "gatehouse_bridge_interactions_total",
            "Slack interactions received by outcome",
            &["outcome"],
        )?;
        let decisions_total = counter(
            "gatehouse_bridge_decisions_total",
            "Approvals and denials from Slack by outcome",
            &["verb", "outcome"],
        )?;
        let set = MetricSet::new(vec![
            Box::new(slack_calls_total.clone()),
            Box::new(webhook_deliveries_total.clone()),
            Box::new(interactions_total.clone()),
            Box::new(decisions_total.clone()),
        ])?;
        Ok(Self {
            set,
            slack_calls_total,
            webhook_deliveries_total,
            interactions_total,
            decisions_total,
        })
    }

    /// The Prometheus text of every metric.
    pub fn render(&self) -> Result<String> {
        Ok(self.set.render()?)
    }

    /// Every exported metric family's name.
    pub fn names(&self) -> &[String] {
        self.set.names()
    }
}

/// The outcome label of a Slack call's result.
pub fn slack_outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::RateLimited { .. }) => "rate_limited",
        Err(Error::Slack { .. }) => "slack_error",
        Err(_) => "http_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_fixed_labels() {
        let m = Metrics::new().unwrap();
        m.slack_calls_total
            .with_label_values(&["chat.postMessage", "ok"])
            .inc();
        m.decisions_total
            .with_label_values(&["approval", "recorded"])
            .inc();
        let text = m.render().unwrap();
        assert!(
            text.contains(
                "gatehouse_bridge_slack_calls_total{method=\"chat.postMessage\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            m.names()
                .contains(&"gatehouse_bridge_decisions_total".to_owned())
        );
    }

    #[test]
    fn slack_outcomes() {
        let cases: [(Result<()>, &str); 4] = [
            (Ok(()), "ok"),
            (
                Err(Error::RateLimited {
                    method: "m".into(),
                    retry_after_secs: 1,
                }),
                "rate_limited",
            ),
            (
                Err(Error::Slack {
                    method: "m".into(),
                    error: "channel_not_found".into(),
                }),
                "slack_error",
            ),
            (
                Err(Error::Http {
                    what: "m".into(),
                    message: "HTTP 500".into(),
                }),
                "http_error",
            ),
        ];
        for (result, want) in cases {
            assert_eq!(slack_outcome(&result), want);
        }
    }
}
