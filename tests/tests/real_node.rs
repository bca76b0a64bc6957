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
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gatehouse_crds::{
    AccessRequest, Phase, SessionRecord,
    contract::{annotations, published},
};
use gatehouse_tests::{
    ControlPlane, SYSTEM_NAMESPACE, Subject, User, control_plane,
    minio::{Credentials, Minio},
    node::{Node, PodView},
    scenario::{self, HOST_GROUP, POLICY, Scenario},
    sha256_hex,
    ssh_client::{Client, Server, SshCommand},
    sshd::{Sshd, SshdConfig, current_login},
    wait_for,
};
use kube::Api;
use serde_json::{Value, json};

const BUCKET: &str = "gatehouse-recordings";
/// The proxy Service's node port (kind-config.yaml uses the same).
const NODE_PORT: u16 = 32222;
/// The proxy's SSH port in its pod.
const POD_SSH_PORT: u16 = 2222;
const SHUTDOWN_MESSAGE: &str = "the proxy is shutting down; connect again to reach another replica";

/// What the steps share.
struct World {
    cp: &'static ControlPlane,
    node: Node,
    dir: tempfile::TempDir,
    minio: Minio,
    sets: Vec<String>,
    s: Scenario,
    sshd: Sshd,
    login: String,
    key: PathBuf,
    public: String,
    known_hosts: PathBuf,
}

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
async fn install() -> World {
    let start = Instant::now();
    let cp = control_plane();
    let node = Node::from_env();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let minio = Minio::start_at(
        cp,
        node.ip,
        &dir.path().join("minio-data"),
        &dir.path().join("minio.log"),
        Credentials::for_tests(),
        |spec| spec,
    );
    minio.create_bucket(BUCKET);
    cp.kubectl(User::Admin)
        .args(["create", "namespace", SYSTEM_NAMESPACE])
        .run()
        .ok();
    // The keys go in a file, not on a command line `ps` shows.
    let credentials = dir.path().join("s3.env");
    let c = Credentials::for_tests();
    std::fs::write(
        &credentials,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            c.access_key, c.secret_key
        ),
    )
    .expect("writing the credentials file");
    cp.kubectl(User::Admin)
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "create",
            "secret",
            "generic",
            "gatehouse-s3",
        ])
        .arg(format!("--from-env-file={}", credentials.display()))
        .run()
        .ok();
    let sets = vec![
        "recording.storage.type=s3".to_owned(),
        format!("recording.storage.s3.endpoint={}", minio.endpoint()),
        format!("recording.storage.s3.bucket={BUCKET}"),
        "recording.storage.s3.pathStyle=true".to_owned(),
        "recording.storage.s3.credentialsSecret.name=gatehouse-s3".to_owned(),
        "proxy.service.type=NodePort".to_owned(),
        format!("proxy.service.nodePort={NODE_PORT}"),
        // The proxy may dial only this machine's node address (the target sshd).
        format!("proxy.allowedTargets={{{}/32}}", node.ip),
    ];
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

    // The team: a HostGroup whose one host is an sshd on this machine's node address, trusting
    // only the upstream CA the operator pods published; alice may request, bob approves.
    let upstream_ca = cp.published(published::UPSTREAM_CA_PUB).await;
    let login = current_login();
    let sshd = Sshd::start(&SshdConfig {
        listen: node.ip,
        // bash runs ~/.bashrc for a command sshd starts (it sees SSH_CLIENT at shell level 1).
        // On this machine root's runs `pyenv init -`, i.e. `pyenv rehash` under one lock file
        // for the whole machine: concurrent root logins of other test runs waited for it for up
        // to 60 s (PYENV_REHASH_TIMEOUT), a killed one leaves the lock stale, and that was the
        // slow first ssh. The target's shell is not what this test is about: SHLVL=1 makes
        // bash skip the file.
        extra_config: vec!["SetEnv SHLVL=1".to_owned()],
        ..SshdConfig::trusting(upstream_ca.trim()).authorize(&login, &[])
    });
    let ns = cp.namespace("node").await;
    cp.bind(&ns, "gatehouse-requester", Subject::Group("dev"));
    cp.allow_approve(&ns, POLICY, Subject::Group("sre-leads"));
    let host = (
        "db1".to_owned(),
        node.ip.to_string(),
        sshd.port(),
        sshd.host_key().to_owned(),
    );
    cp.apply_as(
        User::Admin,
        &ns,
        &scenario::host_group(HOST_GROUP, "Proxied", "prod", &[host]),
    )
    .ok();
    cp.apply_as(
        User::Admin,
        &ns,
        &json!({
            "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "subjects": [{"kind": "Group", "name": "dev"}],
                "hostSelector": {"matchLabels": {"env": "prod"}},
                "logins": [login],
                "maxDuration": "2h",
                "approval": {"required": 1},
            },
        }),
    )
    .ok();
    let principals = scenario::authorized_principals(cp, &ns, HOST_GROUP, "db1", &login).await;
    sshd.set_authorized_principals(&login, &principals);
    let requests: Api<AccessRequest> = Api::namespaced(cp.client(User::Admin).await, &ns);
    let s = Scenario { ns, requests };
    let (key, public) = scenario::keypair(dir.path(), "alice");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        cp.published(published::PROXY_KNOWN_HOSTS).await,
    )
    .expect("writing known_hosts");
    step(
        "helm install: 2 operator + 2 proxy pods Running and Ready, 4 processes uid 65532 without capabilities, no-new-privileges, seccomp, read-only root; one Lease holder",
        start,
    );
    World {
        cp,
        node,
        dir,
        minio,
        sets,
        s,
        sshd,
        login,
        key,
        public,
        known_hosts,
    }
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

/// Alice's request, made with kubectl, approved by bob: returns its certificate file.
async fn issue(w: &World, name: &str) -> PathBuf {
    let request = scenario::request(name, &w.login, &w.public);
    w.s.apply(w.cp, User::Alice, &request).ok();
    w.s.annotate(w.cp, User::Bob, name, annotations::APPROVE, "real node")
        .ok();
    let issued =
        w.s.wait_phase(name, Phase::Issued, Duration::from_secs(30))
            .await;
    let file = w.dir.path().join(format!("{name}-cert.pub"));
    std::fs::write(
        &file,
        issued
            .status
            .unwrap_or_default()
            .certificate
            .unwrap_or_default(),
    )
    .expect("writing the certificate");
    file
}

async fn requests_are_stamped_by_the_webhook_pods_and_issued(w: &World) {
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

/// `ssh` as alice at `address:port` (the NodePort, or a pod) as `LOGIN@db1`.
fn ssh(
    w: &World,
    address: std::net::Ipv4Addr,
    port: u16,
    cert: &Path,
    args: &[&str],
) -> SshCommand {
    let server = Server {
        address,
        port,
        known_hosts: w.known_hosts.clone(),
    };
    SshCommand::new(
        Client::Ssh,
        &server,
        &format!("{}@db1", w.login),
        &w.key,
        cert,
    )
    .option("HostKeyAlias", published::PROXY_HOST_KEY_ALIAS)
    .args(args)
}

async fn sessions(w: &World, name: &str) -> Vec<SessionRecord> {
    w.s.get(name).await.status.unwrap_or_default().sessions
}

/// Wait until session `id` of request `name` has its recording in status; check the object in
/// MinIO against it and return its text.
async fn stored_recording(w: &World, name: &str, id: &str) -> String {
    let recording = wait_for(
        Duration::from_secs(30),
        &format!("session {id} recorded in {name}'s status"),
        || async {
            sessions(w, name)
                .await
                .into_iter()
                .find(|s| s.id == id)?
                .recording
        },
    )
    .await;
    let bytes = w
        .minio
        .get(BUCKET, &recording.key)
        .unwrap_or_else(|| panic!("{} is not in MinIO bucket {BUCKET}", recording.key));
    assert_eq!(sha256_hex(&bytes), recording.sha256, "{}", recording.key);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The session ids of request `name` not in `before`.
async fn new_sessions(w: &World, name: &str, before: &[SessionRecord]) -> Vec<String> {
    sessions(w, name)
        .await
        .into_iter()
        .filter(|s| before.iter().all(|b| b.id != s.id))
        .map(|s| s.id)
        .collect()
}

/// Run `ssh` with a verbose log (`-vvv -E FILE`) whose lines are stamped with the time they
/// appeared, so a slow login shows where it waited; returns what ssh printed and the stamped log.
async fn traced(
    cmd: SshCommand,
    log: &Path,
) -> (gatehouse_tests::CmdOutput, Vec<(Duration, String)>) {
    let start = Instant::now();
    let mut running = cmd.flag("-vvv").flag("-E").flag(log).spawn();
    let mut lines: Vec<(Duration, String)> = Vec::new();
    loop {
        let exited = running.has_exited();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().skip(lines.len()) {
            lines.push((start.elapsed(), line.to_owned()));
        }
        if exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::task::spawn_blocking(move || running.wait())
        .await
        .expect("ssh");
    (out, lines)
}

async fn ssh_through_the_proxy_service_is_recorded_to_minio(w: &World) {
    let start = Instant::now();
    let cert = issue(w, "session").await;
    let mut timings = Vec::new();
    for round in 0..2 {
        let before = sessions(w, "session").await;
        let started_at = jiff::Timestamp::now();
        let t = Instant::now();
        let message = format!("hello-from-the-node {round}");
        let cmd = ssh(w, w.node.ip, NODE_PORT, &cert, &["echo", &message]);
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
                let ids = new_sessions(w, "session", &before).await;
                (!ids.is_empty()).then_some(ids)
            },
        )
        .await;
        let text = stored_recording(w, "session", &ids[0]).await;
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

async fn deleting_the_leader_operator_pod_hands_over_the_lease(w: &World) {
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
    issue(w, "after-failover").await;
    step(
        "leader operator pod deleted: another pod holds the Lease and a new request is Issued",
        start,
    );
}

/// Event `SessionRecorded` of request `name` for session `id`: the proxy pod that reported it.
fn recorded_by(w: &World, name: &str, id: &str) -> Option<String> {
    let out =
        w.cp.kubectl(User::Admin)
            .args(["-n", &w.s.ns, "get", "events.events.k8s.io", "-o", "json"])
            .run();
    let list: Value = serde_json::from_str(out.ok()).ok()?;
    list["items"]
        .as_array()?
        .iter()
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == "SessionRecorded")
        .find(|e| e["note"].as_str().is_some_and(|n| n.contains(id)))
        .and_then(|e| e["reportingInstance"].as_str().map(str::to_owned))
}

async fn deleting_a_proxy_pod_mid_session_stores_the_recording_first(w: &World) {
    let start = Instant::now();
    let (cp, node) = (w.cp, &w.node);
    let cert = issue(w, "drain").await;
    let proxies = node
        .wait_ready(cp, "proxy", 2, Duration::from_secs(30))
        .await;
    let victim = proxies[0].clone();
    let victim_ip = victim.ip.expect("a pod address");
    // Straight to the victim's pod address, so the session is known to be on it.
    let session = ssh(
        w,
        victim_ip,
        POD_SSH_PORT,
        &cert,
        &["echo started; sleep 120"],
    )
    .spawn();
    let id = wait_for(
        Duration::from_secs(30),
        "the live session in status",
        || async {
            sessions(w, "drain")
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
            && sessions(w, "drain")
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
    let text = stored_recording(w, "drain", &id).await;
    assert!(text.contains(r#""o", "started"#), "{text}");
    assert!(text.contains("the proxy is shutting down"), "{text}");
    assert_eq!(
        recorded_by(w, "drain", &id).as_deref(),
        Some(victim.name.as_str())
    );

    // Connect again, through the Service: another replica answers.
    let before = sessions(w, "drain").await;
    let again = Instant::now();
    let out = wait_for(
        Duration::from_secs(30),
        "a reconnect through the NodePort",
        || async {
            let out = ssh(w, node.ip, NODE_PORT, &cert, &["echo", "again"]).run();
            out.success.then_some(out)
        },
    )
    .await;
    assert_eq!(out.stdout.trim(), "again");
    let reconnect = wait_for(
        Duration::from_secs(15),
        "the reconnect's session in status",
        || async {
            let ids = new_sessions(w, "drain", &before).await;
            (!ids.is_empty()).then_some(ids)
        },
    )
    .await;
    assert_eq!(reconnect.len(), 1, "{reconnect:?}");
    stored_recording(w, "drain", &reconnect[0]).await;
    let served_by = wait_for(
        Duration::from_secs(15),
        "the reconnect's SessionRecorded event",
        || async { recorded_by(w, "drain", &reconnect[0]) },
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

async fn helm_upgrade_rolls_the_pods_and_keeps_the_cas(w: &World) {
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
    issue(w, "after-upgrade").await;
    step(
        "helm upgrade with changed values rolls every pod; CA Secrets identical; a request is Issued",
        start,
    );
}

async fn helm_uninstall_keeps_only_the_cas_and_what_the_operator_made(w: &World) {
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
