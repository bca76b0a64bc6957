//! The chart on a real node (`make e2e-node`): `helm install` with the images built on this
//! machine, and what a user does next, with real pods (kubelet, containerd, CNI, kube-proxy).
//!
//! One test, in the order a cluster's life goes, because every step needs the one before:
//! install (both operator and both proxy replicas Running and Ready, their processes locked
//! down, one Lease holder); a request made with kubectl, stamped by the webhook the operator pods
//! serve through their Service, approved by annotation, Issued; an `ssh` from this machine
//! through the proxy's NodePort to an sshd on this machine, recorded to MinIO (on the node
//! address, where pods reach this machine) with its SHA-256 in status; the leader operator pod
//! deleted (another takes the Lease, a new request is issued); a proxy pod deleted during a
//! session (the engineer reads the shutdown message, the recording is stored before the pod is
//! gone, a reconnect reaches another replica); `helm upgrade` rolling the pods with the CAs
//! kept; `helm uninstall` removing everything but the CA Secrets and what the operator made.

#![allow(
    clippy::expect_used,
    reason = "the steps are the test, split into functions: they report failure by panicking"
)]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use gatehouse_crds::{Phase, contract::annotations};
use gatehouse_tests::{
    ControlPlane, SYSTEM_NAMESPACE, User, control_plane,
    node::{Node, PodView},
    node_world::{NODE_PORT, NodeWorld, POD_SSH_PORT, recording_store, traced},
    scenario, wait_for,
};
use kube::Api;
use serde_json::Value;

const SHUTDOWN_MESSAGE: &str = "the proxy is shutting down; connect again to reach another replica";

fn step(name: &str, start: Instant) {
    eprintln!(
        "[real-node] ok: {name} ({:.1}s)",
        start.elapsed().as_secs_f64()
    );
}

// Needs a real node (root, kubelet, containerd): `make e2e-node` starts one and runs this with
// `--ignored`; `make test`'s `cargo test --workspace` leaves it out.
#[tokio::test]
#[ignore = "needs a real node: run it with `make e2e-node`"]
async fn the_chart_on_a_real_node() {
    let all = Instant::now();
    let w = install().await;
    requests_are_stamped_by_the_webhook_pods_and_issued(&w).await;
    ssh_through_the_proxy_service_is_recorded_to_minio(&w).await;
    deleting_the_leader_operator_pod_hands_over_the_lease(&w).await;
    deleting_a_proxy_pod_mid_session_stores_the_recording_first(&w).await;
    helm_upgrade_rolls_the_pods_and_keeps_the_cas(&w).await;
    helm_uninstall_keeps_only_the_cas_and_what_the_operator_made(&w).await;
    eprintln!(
        "[real-node] all steps passed in {:.1}s",
        all.elapsed().as_secs_f64()
    );
}

/// MinIO on the node address, the credentials Secret, `helm install --wait`; then both
/// replicas of each Deployment Running and Ready, their processes locked down, one leader.
async fn install() -> NodeWorld {
    let start = Instant::now();
    let cp = control_plane();
    let node = Node::from_env();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (minio, sets) = recording_store(cp, &node, dir.path());
    let helm = Instant::now();
    node.helm(cp, "install", &sets).ok();
    eprintln!(
        "[real-node] helm install --wait: {:.1}s",
        helm.elapsed().as_secs_f64()
    );

    let operators = node
        .wait_ready(cp, "operator", 2, Duration::from_secs(30))
        .await;
    node.wait_ready(cp, "proxy", 2, Duration::from_secs(30))
        .await;
    let processes = node.container_processes(SYSTEM_NAMESPACE);
    let names: Vec<&str> = processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["operator", "proxy"]),
        "{names:?}"
    );
    assert_eq!(processes.len(), 4, "{names:?}");
    for p in &processes {
        let faults = gatehouse_tests::node::lockdown_faults(&p.status, &p.root_options);
        assert!(faults.is_empty(), "{} (pid {}): {faults:?}", p.name, p.pid);
    }
    let leader = one_leader(cp, &node, &operators).await;
    eprintln!("[real-node] Lease held by {leader}");

    let w = NodeWorld::team(cp, node, dir, minio, sets).await;
    step(
        "helm install: 2 operator + 2 proxy pods Running and Ready, 4 processes uid 65532 without capabilities, no-new-privileges, seccomp, read-only root; one Lease holder",
        start,
    );
    w
}

/// The Lease holder, once it is one of `operators` and the only one whose log says it leads.
async fn one_leader(cp: &ControlPlane, node: &Node, operators: &[PodView]) -> String {
    wait_for(
        Duration::from_secs(30),
        "one operator pod holding the Lease and logging that it leads",
        || async {
            let holder = node.lease_holder(cp).await?;
            operators.iter().find(|p| p.name == holder)?;
            let leading: Vec<&str> = operators
                .iter()
                .filter(|p| node.logs(cp, &p.name).contains("became leader"))
                .map(|p| p.name.as_str())
                .collect();
            (leading == [holder.as_str()]).then_some(holder)
        },
    )
    .await
}

async fn requests_are_stamped_by_the_webhook_pods_and_issued(w: &NodeWorld) {
    let start = Instant::now();
    let (cp, s) = (w.cp, &w.s);
    let webhook = cp
        .kubectl(User::Admin)
        .args([
            "get",
            "mutatingwebhookconfiguration",
            "gatehouse",
            "-o",
            "json",
        ])
        .run();
    let webhook: Value = serde_json::from_str(webhook.ok()).expect("webhook JSON");
    let client = &webhook["webhooks"][0]["clientConfig"];
    assert!(client["url"].is_null(), "the webhook has a URL: {client}");
    assert_eq!(client["service"]["name"], "gatehouse-webhook", "{client}");
    let service_ip = cp
        .kubectl(User::Admin)
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "get",
            "service",
            "gatehouse-webhook",
        ])
        .args(["-o", "jsonpath={.spec.clusterIP}"])
        .run();
    let service_ip = service_ip.ok().trim().parse().expect("a ClusterIP");

    let request = scenario::request("first", &w.login, &w.public);
    s.apply(cp, User::Alice, &request).ok();
    let stamped = s.get("first").await.spec.requester;
    assert_eq!(
        stamped.as_ref().map(|r| r.username.as_str()),
        Some("alice"),
        "{stamped:?}"
    );
    s.annotate(cp, User::Alice, "first", annotations::APPROVE, "mine")
        .fails_with(&["cannot approve"]);
    s.annotate(cp, User::Bob, "first", annotations::APPROVE, "real node")
        .ok();
    s.wait_phase("first", Phase::Issued, Duration::from_secs(30))
        .await;

    // The API server reached the webhook at the Service address; kube-proxy sent it to an
    // operator pod (the only pods that listen on 8443).
    let operator_ips: BTreeSet<String> = w
        .node
        .pods(cp, "operator")
        .await
        .iter()
        .filter_map(|p| p.ip.map(|ip| ip.to_string()))
        .collect();
    match Node::conntrack_backends(service_ip, 443) {
        Some(backends) => {
            assert!(
                !backends.is_empty(),
                "no connection to {service_ip}:443 tracked"
            );
            for b in &backends {
                assert!(
                    operator_ips.contains(b),
                    "{b} is not an operator pod: {operator_ips:?}"
                );
            }
            eprintln!("[real-node] webhook Service {service_ip}:443 answered by {backends:?}");
        }
        None => eprintln!("[real-node] note: no /proc/net/nf_conntrack; Service path not shown"),
    }
    step(
        "a kubectl request is stamped by the operator pods' webhook (via its Service), self-approval refused, approved by annotation, Issued",
        start,
    );
}

async fn ssh_through_the_proxy_service_is_recorded_to_minio(w: &NodeWorld) {
    let start = Instant::now();
    let cert = w.issue("session").await;
    let mut timings = Vec::new();
    for round in 0..2 {
        let before = w.sessions("session").await;
        let started_at = jiff::Timestamp::now();
        let t = Instant::now();
        let message = format!("hello-from-the-node {round}");
        let cmd = w.ssh(w.node.ip, NODE_PORT, &cert, &["echo", &message]);
        let (out, trace) = traced(cmd, &w.dir.path().join(format!("ssh-{round}.log"))).await;
        let took = t.elapsed();
        timings.push(took);
        if took > Duration::from_secs(3) || !out.success {
            // Where the time went: the client's own log, then both proxies' and the target's.
            eprintln!(
                "[real-node] slow or failed ssh ({took:?}, started {started_at}, exit {:?}); client log:",
                out.code
            );
            let mut last = Duration::ZERO;
            for (at, line) in &trace {
                let gap = at.saturating_sub(last);
                last = *at;
                eprintln!(
                    "  +{:>7.3}s{} {line}",
                    at.as_secs_f64(),
                    if gap > Duration::from_millis(500) {
                        format!(" (after {:.1}s)", gap.as_secs_f64())
                    } else {
                        String::new()
                    }
                );
            }
            for pod in w.node.pods(w.cp, "proxy").await {
                eprintln!(
                    "[real-node] proxy {} log:\n{}",
                    pod.name,
                    w.node.logs(w.cp, &pod.name)
                );
            }
            eprintln!("[real-node] target sshd log:\n{}", w.sshd.log());
        }
        assert_eq!(
            out.stdout.trim(),
            message,
            "{}\nsshd:\n{}",
            out.stderr,
            w.sshd.log()
        );
        let ids = wait_for(
            Duration::from_secs(15),
            "the new session in status",
            || async {
                let ids = w.new_sessions("session", &before).await;
                (!ids.is_empty()).then_some(ids)
            },
        )
        .await;
        let text = w.stored_recording("session", &ids[0]).await;
        assert!(text.contains(&message), "{text}");
    }
    eprintln!(
        "[real-node] ssh through NodePort {}:{NODE_PORT}: first {:?}, second {:?}",
        w.node.ip, timings[0], timings[1]
    );
    step(
        "ssh through the proxy's NodePort to the target sshd, recorded in MinIO with the sha256 in status",
        start,
    );
}

async fn deleting_the_leader_operator_pod_hands_over_the_lease(w: &NodeWorld) {
    let start = Instant::now();
    let (cp, node) = (w.cp, &w.node);
    let leader = node.lease_holder(cp).await.expect("a Lease holder");
    cp.kubectl(User::Admin)
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "delete",
            "pod",
            &leader,
            "--wait=false",
        ])
        .run()
        .ok();
    let deleted = Instant::now();
    let next = wait_for(
        Duration::from_secs(60),
        "another ready operator pod holding the Lease",
        || async {
            let holder = node.lease_holder(cp).await?;
            let pods = node.pods(cp, "operator").await;
            pods.iter()
                .any(|p| p.name == holder && p.name != leader && p.ready && !p.deleting)
                .then_some(holder)
        },
    )
    .await;
    eprintln!(
        "[real-node] Lease went from {leader} to {next} in {:.1}s",
        deleted.elapsed().as_secs_f64()
    );
    w.issue("after-failover").await;
    step(
        "leader operator pod deleted: another pod holds the Lease and a new request is Issued",
        start,
    );
}

async fn deleting_a_proxy_pod_mid_session_stores_the_recording_first(w: &NodeWorld) {
    let start = Instant::now();
    let (cp, node) = (w.cp, &w.node);
    let cert = w.issue("drain").await;
    let proxies = node
        .wait_ready(cp, "proxy", 2, Duration::from_secs(30))
        .await;
    let victim = proxies[0].clone();
    let victim_ip = victim.ip.expect("a pod address");
    // Straight to the victim's pod address, so the session is known to be on it.
    let session = w
        .ssh(victim_ip, POD_SSH_PORT, &cert, &["echo started; sleep 120"])
        .spawn();
    let id = wait_for(
        Duration::from_secs(30),
        "the live session in status",
        || async {
            w.sessions("drain")
                .await
                .into_iter()
                .find(|s| s.end_time.is_none())
                .map(|s| s.id)
        },
    )
    .await;
    // The victim's log to its end (the container's exit ends `kubectl logs -f`).
    let log = cp
        .kubectl(User::Admin)
        .args(["-n", SYSTEM_NAMESPACE, "logs", "-f", &victim.name])
        .timeout(Duration::from_secs(120))
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deleting = Instant::now();
    cp.kubectl(User::Admin)
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "delete",
            "pod",
            &victim.name,
            "--wait=false",
        ])
        .run()
        .ok();
    // Until the pod object is gone (kubelet confirms its containers stopped), watch when the
    // recording shows up in status: it must come first.
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    let mut recorded_at = None;
    let gone_at = loop {
        if recorded_at.is_none()
            && w.sessions("drain")
                .await
                .iter()
                .any(|s| s.id == id && s.recording.is_some())
        {
            recorded_at = Some(deleting.elapsed());
        }
        if let Ok(None) = pods.get_opt(&victim.name).await {
            break deleting.elapsed();
        }
        assert!(
            deleting.elapsed() < Duration::from_secs(90),
            "pod {} still exists 90 s after its deletion",
            victim.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recorded_at = recorded_at.unwrap_or_else(|| {
        panic!(
            "pod {} was gone after {gone_at:?} and session {id} had no recording in status yet",
            victim.name
        )
    });
    eprintln!(
        "[real-node] proxy pod {}: recording in status after {recorded_at:?}, pod gone after {gone_at:?}",
        victim.name
    );
    let ssh_out = tokio::task::spawn_blocking(move || session.wait())
        .await
        .expect("the ssh session");
    assert!(
        ssh_out.stderr.contains(SHUTDOWN_MESSAGE),
        "{}",
        ssh_out.stderr
    );
    assert_eq!(ssh_out.code, Some(255), "{}", ssh_out.stderr);
    assert_eq!(ssh_out.stdout.trim(), "started", "{}", ssh_out.stderr);
    let log = tokio::task::spawn_blocking(move || log.wait())
        .await
        .expect("kubectl logs");
    assert!(
        log.stdout
            .contains("sessions closed and recordings stored; stopped"),
        "{}",
        log.stdout
    );
    let text = w.stored_recording("drain", &id).await;
    assert!(text.contains(r#""o", "started"#), "{text}");
    assert!(text.contains("the proxy is shutting down"), "{text}");
    assert_eq!(
        w.recorded_by("drain", &id).as_deref(),
        Some(victim.name.as_str())
    );

    // Connect again, through the Service: another replica answers.
    let before = w.sessions("drain").await;
    let again = Instant::now();
    let out = wait_for(
        Duration::from_secs(30),
        "a reconnect through the NodePort",
        || async {
            let out = w.ssh(node.ip, NODE_PORT, &cert, &["echo", "again"]).run();
            out.success.then_some(out)
        },
    )
    .await;
    assert_eq!(out.stdout.trim(), "again");
    let reconnect = wait_for(
        Duration::from_secs(15),
        "the reconnect's session in status",
        || async {
            let ids = w.new_sessions("drain", &before).await;
            (!ids.is_empty()).then_some(ids)
        },
    )
    .await;
    assert_eq!(reconnect.len(), 1, "{reconnect:?}");
    w.stored_recording("drain", &reconnect[0]).await;
    let served_by = wait_for(
        Duration::from_secs(15),
        "the reconnect's SessionRecorded event",
        || async { w.recorded_by("drain", &reconnect[0]) },
    )
    .await;
    assert_ne!(served_by, victim.name);
    eprintln!(
        "[real-node] reconnect served by {served_by} after {:?}",
        again.elapsed()
    );
    step(
        "proxy pod deleted mid-session: shutdown message, recording stored before the pod was gone, reconnect to another replica",
        start,
    );
}

async fn helm_upgrade_rolls_the_pods_and_keeps_the_cas(w: &NodeWorld) {
    let start = Instant::now();
    let (cp, node) = (w.cp, &w.node);
    let cas = node.ca_fingerprints(cp).await;
    let names = |pods: Vec<PodView>| pods.into_iter().map(|p| p.name).collect::<BTreeSet<_>>();
    let operators = names(
        node.wait_ready(cp, "operator", 2, Duration::from_secs(60))
            .await,
    );
    let proxies = names(
        node.wait_ready(cp, "proxy", 2, Duration::from_secs(60))
            .await,
    );
    let mut sets = w.sets.clone();
    sets.push("operator.pendingTTL=12h".to_owned());
    sets.push("proxy.authBlock=10m".to_owned());
    node.helm(cp, "upgrade", &sets).ok();
    let operators_after = names(
        node.wait_ready(cp, "operator", 2, Duration::from_secs(90))
            .await,
    );
    let proxies_after = names(
        node.wait_ready(cp, "proxy", 2, Duration::from_secs(90))
            .await,
    );
    assert!(
        operators.is_disjoint(&operators_after),
        "{operators:?} → {operators_after:?}"
    );
    assert!(
        proxies.is_disjoint(&proxies_after),
        "{proxies:?} → {proxies_after:?}"
    );
    let deployment = cp
        .kubectl(User::Admin)
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "get",
            "deployment",
            "gatehouse-operator",
            "-o",
            "json",
        ])
        .run();
    assert!(
        deployment.ok().contains(r#""value": "12h""#),
        "{}",
        deployment.stdout
    );
    assert_eq!(node.ca_fingerprints(cp).await, cas);
    // The new pods sign with the same CA, and the webhook's caBundle survived the upgrade.
    w.issue("after-upgrade").await;
    step(
        "helm upgrade with changed values rolls every pod; CA Secrets identical; a request is Issued",
        start,
    );
}

async fn helm_uninstall_keeps_only_the_cas_and_what_the_operator_made(w: &NodeWorld) {
    let start = Instant::now();
    let (cp, node) = (w.cp, &w.node);
    let cas = node.ca_fingerprints(cp).await;
    let manifest = cp
        .helm()
        .args(["get", "manifest", "gatehouse", "-n", SYSTEM_NAMESPACE])
        .run();
    let manifest_file = w.dir.path().join("manifest.yaml");
    std::fs::write(&manifest_file, manifest.ok()).expect("writing the manifest");
    let released = cp
        .kubectl(User::Admin)
        .args(["get", "-o", "name", "-f"])
        .arg(&manifest_file)
        .run();
    let released: Vec<&str> = released.ok().lines().collect();
    assert!(released.len() > 20, "{released:?}");
    cp.helm()
        .args([
            "uninstall",
            "gatehouse",
            "-n",
            SYSTEM_NAMESPACE,
            "--wait",
            "--timeout",
            "2m",
        ])
        .timeout(Duration::from_secs(180))
        .run()
        .ok();
    let left = cp
        .kubectl(User::Admin)
        .args(["get", "--ignore-not-found", "-o", "name", "-f"])
        .arg(&manifest_file)
        .run();
    assert_eq!(
        left.ok().trim(),
        "",
        "the release's objects left after uninstall"
    );
    // What is left in the namespace: exactly the CA Secrets and what the operator created at
    // run time (documented in README and docs/real-node.md), plus what this test and
    // Kubernetes put there.
    let expected: BTreeSet<String> = [
        "secret/gatehouse-user-ca",
        "secret/gatehouse-upstream-ca",
        "secret/gatehouse-admission",
        "secret/gatehouse-proxy-host-key",
        "secret/gatehouse-s3",
        "configmap/gatehouse-ssh",
        "configmap/gatehouse-revocations",
        "configmap/kube-root-ca.crt",
        "lease.coordination.k8s.io/gatehouse-operator",
        "serviceaccount/default",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let kinds = "pods,services,deployments,replicasets,endpointslices,serviceaccounts,roles,\
        rolebindings,poddisruptionbudgets,secrets,configmaps,leases,networkpolicies";
    let listed = || {
        let out = cp
            .kubectl(User::Admin)
            .args(["-n", SYSTEM_NAMESPACE, "get", kinds, "-o", "name"])
            .run();
        out.ok()
            .lines()
            .map(str::to_owned)
            .collect::<BTreeSet<String>>()
    };
    let waiting = Instant::now();
    let mut remaining = listed();
    while remaining != expected && waiting.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        remaining = listed();
    }
    assert_eq!(remaining, expected);
    assert_eq!(node.ca_fingerprints(cp).await, cas);
    for crd in gatehouse_tests::GATEHOUSE_CRDS {
        cp.kubectl(User::Admin).args(["get", "crd", crd]).run().ok();
    }
    step(
        "helm uninstall removes every object of the release; the CA Secrets (unchanged) and the operator's own objects stay",
        start,
    );
}
