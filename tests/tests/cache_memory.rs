//! A requester cannot grow the operator's or the proxy's memory with metadata: admission
//! refuses a request carrying 200 KiB of annotations, and 300 requests carrying 30 KiB each
//! (under the 32 KiB admission bound) leave both processes far below their chart limits and
//! growing by much less than the payload, because the watch caches drop what Gatehouse does not
//! read (managedFields, foreign annotations and labels). Alone in its test binary: it measures
//! the RSS of the shared operator.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use gatehouse_crds::{AccessRequest, Phase};
use gatehouse_tests::{User, proxied_world::ProxiedWorld, wait_for};
use kube::api::PostParams;
use serde_json::Value;

const REQUESTS: usize = 300;
const ANNOTATION_BYTES: usize = 30 * 1024;
/// The chart's memory limits (charts/gatehouse/values.yaml), checked below against the file.
const OPERATOR_LIMIT_MIB: u64 = 256;
const PROXY_LIMIT_MIB: u64 = 512;

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// A request `name` whose annotation `notes` holds `bytes` bytes.
fn padded(w: &ProxiedWorld, name: &str, bytes: usize) -> Value {
    let mut request = w.request(name);
    request["metadata"]["annotations"] = serde_json::json!({ "notes": "x".repeat(bytes) });
    request["metadata"]["labels"] = serde_json::json!({ "team": "db" });
    request
}

#[tokio::test]
async fn metadata_does_not_grow_the_caches() {
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/gatehouse/values.yaml"
    ))
    .unwrap();
    for limit in [
        format!("limits: {{memory: {OPERATOR_LIMIT_MIB}Mi}}"),
        format!("limits: {{memory: {PROXY_LIMIT_MIB}Mi, ephemeral-storage"),
    ] {
        assert!(values.contains(&limit), "the chart no longer says {limit}");
    }

    let w = ProxiedWorld::with_local_store("cache-memory").await;
    // 200 KiB of annotations: refused by admission, naming the bound.
    let file = w.dir.path().join("huge.json");
    std::fs::write(&file, padded(&w, "huge", 200 * 1024).to_string()).unwrap();
    w.cp.kubectl(User::Alice)
        .args(["-n", &w.s.ns, "create", "-f"])
        .arg(&file)
        .run()
        .fails_with(&["at most 32768 bytes"]);

    // Settle the first request through both, then measure from there.
    w.issue(w.request("warm")).await;
    let operator_pid = std::fs::read_to_string(w.cp.dir().join("operator.pid")).unwrap();
    let operator_pid = operator_pid.trim().to_owned();
    let proxy_pid = w.proxy.pid().unwrap().to_string();
    let (operator_before, proxy_before) = (rss_kib(&operator_pid), rss_kib(&proxy_pid));

    let alice: kube::Api<AccessRequest> =
        kube::Api::namespaced(w.cp.client(User::Alice).await, &w.s.ns);
    futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let request: AccessRequest =
                serde_json::from_value(padded(&w, &format!("r{i}"), ANNOTATION_BYTES)).unwrap();
            let alice = alice.clone();
            async move { alice.create(&PostParams::default(), &request).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    wait_for(Duration::from_secs(120), "every request Issued", || async {
        let list = w.s.requests.list(&Default::default()).await.ok()?;
        let issued = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Issued))
            .count();
        (issued > REQUESTS).then_some(())
    })
    .await;
    // The proxy's cache follows the API server's watch; give it a moment to have them all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (operator_after, proxy_after) = (rss_kib(&operator_pid), rss_kib(&proxy_pid));
    let payload_kib = (REQUESTS * ANNOTATION_BYTES / 1024) as u64;
    println!(
        "{REQUESTS} requests x {} KiB of annotations ({payload_kib} KiB): \
         operator RSS {operator_before} -> {operator_after} KiB (limit {OPERATOR_LIMIT_MIB} MiB), \
         proxy RSS {proxy_before} -> {proxy_after} KiB (limit {PROXY_LIMIT_MIB} MiB)",
        ANNOTATION_BYTES / 1024
    );
    assert!(operator_after < OPERATOR_LIMIT_MIB * 1024 / 2);
    assert!(proxy_after < PROXY_LIMIT_MIB * 1024 / 2);
    // An untrimmed cache holds every annotation byte: measured here, untrimmed, the proxy grew
    // 13.7 MiB and the operator 19.8 MiB for the 8.8 MiB payload; trimmed 1.7 and 6.5 MiB (the
    // operator also signs and stores 300 certificates).
    let proxy_growth = proxy_after.saturating_sub(proxy_before);
    let operator_growth = operator_after.saturating_sub(operator_before);
    assert!(
        proxy_growth < payload_kib / 2,
        "the proxy grew {proxy_growth} KiB for {payload_kib} KiB of annotations"
    );
    // The shared operator now also makes its audit events durable (about 900 here: spool
    // appends on the blocking pool, batches rendered each second), which took its growth from
    // 6.5 to 7–10 MiB across runs; 1.5x the payload still fails an untrimmed cache (19.8 MiB).
    assert!(
        operator_growth < payload_kib * 3 / 2,
        "the operator grew {operator_growth} KiB for {payload_kib} KiB of annotations"
    );
}
