//! What the API server, etcd and the operator did between two moments: the API server's and
//! the operator's Prometheus counters, and CPU seconds from `/proc/PID/stat`.

use std::collections::BTreeMap;

use kube::Client;

/// A `name{labels} value` counter family from Prometheus text, keyed by the chosen labels.
pub fn counters(text: &str, family: &str, keys: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once("} ") {
                Some(parts) => parts,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let label = |key: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let key: Vec<String> = keys
            .iter()
            .map(|k| label(k))
            .filter(|v| !v.is_empty())
            .collect();
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        *out.entry(key.join(" ")).or_insert(0.0) += value;
    }
    out
}

/// What the API server and the operator count, at one moment.
pub struct Snapshot {
    pub api: BTreeMap<String, f64>,
    /// Mean-able API server latencies: (sum, count) of `apiserver_request_duration_seconds`.
    pub api_seconds: BTreeMap<String, f64>,
    pub api_counts: BTreeMap<String, f64>,
    /// `apiserver_admission_webhook_admission_duration_seconds_sum` by webhook.
    pub webhook_seconds: BTreeMap<String, f64>,
    /// CPU seconds (utime + stime) of the operator, the API server and etcd.
    pub cpu: [f64; 3],
    pub webhooks: BTreeMap<String, f64>,
    pub reviews: BTreeMap<String, f64>,
    pub review_seconds: f64,
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

pub async fn snapshot(
    admin: &Client,
    operator_metrics: &dyn Fn() -> String,
    pids: [u32; 3],
) -> Snapshot {
    let request = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(request).await.expect("GET /metrics");
    let operator = operator_metrics();
    let sum = |family: &str| counters(&operator, family, &[]).values().sum::<f64>();
    Snapshot {
        api: counters(
            &text,
            "apiserver_request_total",
            &["verb", "resource", "subresource"],
        ),
        api_seconds: counters(
            &text,
            "apiserver_request_duration_seconds_sum",
            &["verb", "resource", "subresource"],
        ),
        api_counts: counters(
            &text,
            "apiserver_request_duration_seconds_count",
            &["verb", "resource", "subresource"],
        ),
        webhook_seconds: counters(
            &text,
            "apiserver_admission_webhook_admission_duration_seconds_sum",
            &["name", "operation", "type"],
        ),
        cpu: pids.map(cpu_seconds),
        webhooks: counters(
            &text,
            "apiserver_admission_webhook_admission_duration_seconds_count",
            &["name", "operation", "type"],
        ),
        reviews: counters(
            &operator,
            "gatehouse_admission_reviews_total",
            &["webhook", "operation"],
        ),
        review_seconds: sum("gatehouse_admission_duration_seconds_sum"),
    }
}

/// Print what changed between two snapshots, per request of `count`.
pub fn report_calls(what: &str, before: &Snapshot, after: &Snapshot, count: usize) {
    let per = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, key: &str| {
        (b.get(key).copied().unwrap_or(0.0) - a.get(key).copied().unwrap_or(0.0)) / count as f64
    };
    println!("{what}: API requests per AccessRequest (apiserver_request_total, ≥ 0.01 shown)");
    let mut total_writes = 0.0;
    for key in after.api.keys() {
        let n = per(&before.api, &after.api, key);
        if n >= 0.01 {
            let verb = key.split(' ').next().unwrap_or_default();
            if !matches!(verb, "GET" | "LIST" | "WATCH") {
                total_writes += n;
            }
            println!("  {key:<48} {n:>6.2}");
        }
    }
    println!("  writes (all verbs but GET/LIST/WATCH)             {total_writes:>6.2}");
    let mean_ms = |sums: fn(&Snapshot) -> &BTreeMap<String, f64>,
                   counts: fn(&Snapshot) -> &BTreeMap<String, f64>,
                   key: &str| {
        let delta = |s: &Snapshot, f: fn(&Snapshot) -> &BTreeMap<String, f64>| {
            f(s).get(key).copied().unwrap_or(0.0)
        };
        let n = delta(after, counts) - delta(before, counts);
        (delta(after, sums) - delta(before, sums)) * 1e3 / n.max(1.0)
    };
    for key in after.api.keys() {
        let n = per(&before.api, &after.api, key);
        let verb = key.split(' ').next().unwrap_or_default();
        if n >= 0.5 && !matches!(verb, "GET" | "LIST" | "WATCH") {
            println!(
                "  API server latency {key:<35} {:>7.1} ms mean",
                mean_ms(|s| &s.api_seconds, |s| &s.api_counts, key)
            );
        }
    }
    for key in after.webhooks.keys() {
        let n = per(&before.webhooks, &after.webhooks, key);
        if n >= 0.01 {
            println!(
                "  webhook call {key:<35} {n:>6.2}, {:>7.1} ms mean as the API server waits",
                mean_ms(|s| &s.webhook_seconds, |s| &s.webhooks, key)
            );
        }
    }
    let cpu = |i: usize| (after.cpu[i] - before.cpu[i]) * 1e3 / count as f64;
    println!(
        "  CPU per request: operator {:.2} ms, kube-apiserver {:.2} ms, etcd {:.2} ms",
        cpu(0),
        cpu(1),
        cpu(2)
    );
    let reviews: f64 = after.reviews.values().sum::<f64>() - before.reviews.values().sum::<f64>();
    let seconds = after.review_seconds - before.review_seconds;
    println!(
        "  operator's webhook: {:.2} reviews per request, {:.2} ms mean per review",
        reviews / count as f64,
        seconds * 1e3 / reviews.max(1.0)
    );
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One line: the writes (all verbs but GET/LIST/WATCH) and webhook calls per object of `count`.
pub fn calls_line(before: &Snapshot, after: &Snapshot, count: usize) -> String {
    let per = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, key: &str| {
        (b.get(key).copied().unwrap_or(0.0) - a.get(key).copied().unwrap_or(0.0)) / count as f64
    };
    let writes: Vec<String> = after
        .api
        .keys()
        .filter(|key| {
            let verb = key.split(' ').next().unwrap_or_default();
            !matches!(verb, "GET" | "LIST" | "WATCH")
        })
        .filter_map(|key| {
            let n = per(&before.api, &after.api, key);
            (n >= 0.01).then(|| format!("{key} {n:.2}"))
        })
        .collect();
    let webhooks: f64 = after
        .webhooks
        .keys()
        .map(|key| per(&before.webhooks, &after.webhooks, key))
        .sum::<f64>()
        .max(0.0)
        + 0.0; // not "-0.00"
    format!(
        "per object: {}; webhook calls {webhooks:.2}",
        writes.join(", ")
    )
}
