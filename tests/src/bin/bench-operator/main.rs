//! Operator benchmark (a program, not a test): AccessRequests in bulk against the real control
//! plane, the shared operator (webhook + reconcilers) and a proxy caching every request.
//!
//! - `BENCH_REQUESTS` (default 2,000; the documented figure is 10,000) requests created at once
//!   under an auto-approve policy, as alice through a kube client, `BENCH_PARALLEL` (16) in
//!   flight: create rate and time until a watch has seen every one Issued;
//! - `BENCH_APPROVALS` (default 500; documented 1,000) requests under a one-approval policy,
//!   approved in a burst by bob (annotation through admission): approve→certificate p50/p99,
//!   from the moment the approval's PATCH returned to the moment the watch saw Issued;
//! - operator peak RSS (VmHWM, and VmRSS sampled every 200 ms), proxy RSS with the requests in
//!   its cache;
//! - API requests per AccessRequest, from the API server's `apiserver_request_total` (by verb,
//!   resource and subresource, before and after each phase), and the webhook's own histogram.
//!
//! `BENCH_FLOOR=1` runs only the floor instead ([`floor`]): where the API server's CPU per
//! auto-approved request goes (ConfigMaps, AccessRequests with and without the webhooks, status
//! applies and Events alone, a copy of the CRD with and without its CEL rules).
//!
//! Run with `make bench-operator` (a fresh control plane; see docs/benchmarks.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark reports failure by panicking, like the harness it uses"
)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use gatehouse_crds::{AccessRequest, Phase, contract::annotations::APPROVE};
use gatehouse_tests::{
    ControlPlane, User, control_plane,
    proxy::{Proxy, ProxyConfig, Storage},
    scenario::{self, Scenario, Setup},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};

use crate::{
    metrics::{proc_status_kib, report_calls, snapshot},
    watch::{all_in, watch_phases},
};

mod floor;
mod floor_copy;
mod floor_report;
mod floor_shares;
mod metrics;
mod watch;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Create `names` as `client` with `parallel` in flight; returns when the last create returned.
async fn create_all(api: &Api<AccessRequest>, names: &[String], key: &str, parallel: usize) {
    stream::iter(names)
        .map(|name| async move {
            let request: AccessRequest =
                serde_json::from_value(scenario::request(name, "ubuntu", key)).unwrap();
            api.create(&PostParams::default(), &request)
                .await
                .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        })
        .buffer_unordered(parallel)
        .collect::<Vec<()>>()
        .await;
}

async fn scenario_with(cp: &ControlPlane, prefix: &str, approvals: u32) -> Scenario {
    Scenario::new(
        cp,
        prefix,
        &Setup {
            approvals,
            ..Setup::default()
        },
    )
    .await
}

#[tokio::main]
async fn main() {
    let requests = env_number("BENCH_REQUESTS", 2_000);
    let approvals = env_number("BENCH_APPROVALS", 500);
    let parallel = env_number("BENCH_PARALLEL", 16).max(1);
    let cp = control_plane();
    let operator = cp.shared_operator();
    let operator_pid: u32 = std::fs::read_to_string(cp.dir().join("operator.pid"))
        .expect("operator.pid")
        .trim()
        .parse()
        .expect("a pid in operator.pid");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let proxy = Proxy::start(
        cp,
        ProxyConfig::new(
            dir.path().join("proxy"),
            Storage::Local(dir.path().join("store")),
        ),
    );
    let admin = cp.client(User::Admin).await;
    let alice = cp.client(User::Alice).await;
    let bob = cp.client(User::Bob).await;
    let key = scenario::public_key();
    let operator_metrics = || operator.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let pid_of = |name: &str| -> u32 {
        std::fs::read_to_string(cp.dir().join(format!("{name}.pid")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_default()
    };
    let pids = [operator_pid, pid_of("apiserver"), pid_of("etcd")];

    let peak_rss = Arc::new(Mutex::new(0u64));
    {
        let peak = Arc::clone(&peak_rss);
        tokio::spawn(async move {
            loop {
                if let Some(kib) = proc_status_kib(operator_pid, "VmRSS:") {
                    let mut peak = peak.lock().unwrap();
                    *peak = (*peak).max(kib);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    // Let the fresh proxy and operator settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if std::env::var("BENCH_FLOOR").is_ok_and(|v| v == "1") {
        let plane = floor::Plane {
            cp,
            admin: &admin,
            alice: &alice,
            key: &key,
            pids,
            operator_metrics: &operator_metrics,
            parallel,
        };
        floor::run(&plane, requests, env_number("BENCH_FLOOR_ROUNDS", 2).max(1)).await;
        return;
    }
    let operator_before = proc_status_kib(operator_pid, "VmRSS:").unwrap_or_default();
    let proxy_before = proxy.rss_kib().unwrap_or_default();

    println!("# Gatehouse operator benchmark");
    println!(
        "requests {requests} auto-approved, {approvals} approved in a burst, {parallel} API calls in flight"
    );

    // Auto-approve: create them all at once, wait until every one is Issued.
    let auto = scenario_with(cp, "bench-auto", 0).await;
    // The baseline on this machine now: ConfigMaps of about the same size, same client and
    // parallelism, no webhook and no controller.
    let baseline = requests.min(1_000);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &auto.ns);
    let before = snapshot(&admin, &operator_metrics, pids).await;
    let started = Instant::now();
    floor::create_config_maps(&config_maps, "baseline", baseline, &key, parallel).await;
    let took = started.elapsed();
    let after = snapshot(&admin, &operator_metrics, pids).await;
    println!(
        "baseline: {baseline} ConfigMaps created in {:.1} s ({:.0}/s); API server {:.2} ms, etcd {:.2} ms CPU per create",
        took.as_secs_f64(),
        baseline as f64 / took.as_secs_f64(),
        (after.cpu[1] - before.cpu[1]) * 1e3 / baseline as f64,
        (after.cpu[2] - before.cpu[2]) * 1e3 / baseline as f64,
    );
    let auto_seen = watch_phases(admin.clone(), &auto.ns);
    let auto_api: Api<AccessRequest> = Api::namespaced(alice.clone(), &auto.ns);
    let names: Vec<String> = (0..requests).map(|i| format!("auto-{i:05}")).collect();
    let before = snapshot(&admin, &operator_metrics, pids).await;
    let started = Instant::now();
    create_all(&auto_api, &names, &key, parallel).await;
    let created = started.elapsed();
    let last_issued = all_in(
        &auto_seen,
        Phase::Issued,
        "",
        requests,
        Duration::from_secs(1800),
    )
    .await;
    let issued = last_issued.duration_since(started);
    // Let trailing writes (Events) land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = snapshot(&admin, &operator_metrics, pids).await;
    println!(
        "auto-approve: {requests} created in {:.1} s ({:.0}/s); all Issued {:.1} s after the first create ({:.1} s after the last)",
        created.as_secs_f64(),
        requests as f64 / created.as_secs_f64(),
        issued.as_secs_f64(),
        issued.saturating_sub(created).as_secs_f64()
    );
    report_calls("auto-approve", &before, &after, requests);
    let proxy_with = proxy.rss_kib().unwrap_or_default();
    println!(
        "proxy RSS {:.1} MiB before, {:.1} MiB with {requests} requests cached ({:.1} KiB per request)",
        mib(proxy_before),
        mib(proxy_with),
        proxy_with.saturating_sub(proxy_before) as f64 / requests.max(1) as f64
    );

    // One approval each: create, wait for Pending, approve in a burst as bob.
    let burst = scenario_with(cp, "bench-burst", 1).await;
    let burst_seen = watch_phases(admin.clone(), &burst.ns);
    let burst_api: Api<AccessRequest> = Api::namespaced(alice.clone(), &burst.ns);
    let names: Vec<String> = (0..approvals).map(|i| format!("burst-{i:05}")).collect();
    let started = Instant::now();
    create_all(&burst_api, &names, &key, parallel).await;
    let pending = all_in(
        &burst_seen,
        Phase::Pending,
        "",
        approvals,
        Duration::from_secs(1800),
    )
    .await
    .duration_since(started);
    println!(
        "one-approval: {approvals} created and Pending in {:.1} s",
        pending.as_secs_f64()
    );
    let bob_api: Api<AccessRequest> = Api::namespaced(bob, &burst.ns);
    let before = snapshot(&admin, &operator_metrics, pids).await;
    let started = Instant::now();
    let approved: Vec<(String, Instant)> = stream::iter(&names)
        .map(|name| {
            let bob_api = bob_api.clone();
            async move {
                let patch = serde_json::json!({"metadata": {"annotations": {APPROVE: "bench"}}});
                bob_api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("approving {name}: {e}"));
                (name.clone(), Instant::now())
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let approving = started.elapsed();
    let last = all_in(
        &burst_seen,
        Phase::Issued,
        "",
        approvals,
        Duration::from_secs(1800),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = snapshot(&admin, &operator_metrics, pids).await;
    let mut latencies: Vec<Duration> = {
        let seen = burst_seen.lock().unwrap();
        approved
            .iter()
            .map(|(name, at)| {
                let issued = seen.at[&(name.clone(), "Issued".to_owned())];
                issued.saturating_duration_since(*at)
            })
            .collect()
    };
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "one-approval: {approvals} approvals in {:.1} s ({:.0}/s); all Issued {:.1} s after the first; approve→certificate p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        approving.as_secs_f64(),
        approvals as f64 / approving.as_secs_f64(),
        last.duration_since(started).as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    report_calls("approve burst", &before, &after, approvals);

    let hwm = proc_status_kib(operator_pid, "VmHWM:").unwrap_or_default();
    let sampled = *peak_rss.lock().unwrap();
    let now = proc_status_kib(operator_pid, "VmRSS:").unwrap_or_default();
    println!(
        "operator RSS {:.1} MiB before, peak {:.1} MiB sampled (VmHWM {:.1} MiB), {:.1} MiB at the end with {} requests",
        mib(operator_before),
        mib(sampled),
        mib(hwm),
        mib(now),
        requests + approvals
    );
    let proxy_end = proxy.rss_kib().unwrap_or_default();
    println!(
        "proxy RSS at the end {:.1} MiB with {} requests cached",
        mib(proxy_end),
        requests + approvals
    );
}
