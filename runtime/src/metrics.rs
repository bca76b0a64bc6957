//! A set of Prometheus metrics: registered once, rendered as text, and named, so dashboards
//! and alerts can be checked against exactly what a binary exports.

use prometheus::{Encoder, Registry, TextEncoder, core::Collector};

use crate::error::Result;

/// A registry and the names of the metric families registered in it.
#[derive(Debug, Clone)]
pub struct MetricSet {
    registry: Registry,
    names: Vec<String>,
}

impl MetricSet {
    /// Register `collectors` in a fresh registry.
    pub fn new(collectors: Vec<Box<dyn Collector>>) -> Result<Self> {
        let registry = Registry::new();
        let mut names = Vec::new();
        for collector in collectors {
            names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(collector)?;
        }
        Ok(Self { registry, names })
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounter, IntGaugeVec, Opts};

    #[test]
    fn registered_metrics_are_named_and_rendered() {
        let counter = IntCounter::new("demo_total", "a counter").unwrap();
        let gauge = IntGaugeVec::new(Opts::new("demo_gauge", "a gauge"), &["kind"]).unwrap();
        let set = MetricSet::new(vec![Box::new(counter.clone()), Box::new(gauge.clone())]).unwrap();
        counter.inc();
        gauge.with_label_values(&["a"]).set(3);
        assert_eq!(set.names(), ["demo_total", "demo_gauge"]);
        let text = set.render().unwrap();
        assert!(text.contains("demo_total 1"), "{text}");
        assert!(text.contains("demo_gauge{kind=\"a\"} 3"), "{text}");
    }
}
