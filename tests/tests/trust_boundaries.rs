//! Trust boundaries, tried as an attacker would, end to end: real kubectl as the attacker's
//! identity, the real proxy, real `ssh` and a real Debian `sshd` configured only from what the
//! operator publishes. Each test fails on a Gatehouse without the mechanism it names.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use gatehouse_crds::{
    AccessPolicy, AccessRequest, Phase,
    contract::{annotations, published},
};
use gatehouse_tests::{
    SYSTEM_NAMESPACE, Subject, User,
    proxied_world::ProxiedWorld,
    proxy::{Proxy, ProxyConfig},
    scenario::{self, Scenario, Setup, keypair, sshd_host},
    ssh_client::Client,
    sshd::{Sshd, SshdConfig, current_login},
    wait_for,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// A second namespace that points a HostGroup at `target` (another namespace's machine), with
/// an auto-approve policy for the world's login.
async fn intruder(w: &ProxiedWorld, mode: &'static str, target: &Sshd) -> Scenario {
    Scenario::new(
        w.cp,
        "intruder",
        &Setup {
            approvals: 0,
            mode,
            logins: vec![w.login.clone()],
            hosts: vec![sshd_host("db1", target)],
            policy_extra: json!({}),
        },
    )
    .await
}

#[tokio::test]
async fn a_host_group_in_another_namespace_opens_nothing_through_the_proxy() {
    let w = ProxiedWorld::with_local_store("owner").await;
    let cert = w.issue(w.request("mine")).await;
    let user = format!("{}@db1", w.login);
    let out = w.ssh(&cert, &user, &["echo owner-in"]).run();
    assert!(
        out.stdout.contains("owner-in"),
        "the owner gets in: {out:?}"
    );

    // Namespace B names A's machine (address, port, host key: all public) and approves itself.
    let b = intruder(&w, "Proxied", &w.sshd).await;
    b.apply(
        w.cp,
        User::Alice,
        &scenario::request("steal", &w.login, &w.public),
    )
    .ok();
    let issued = b
        .wait_phase("steal", Phase::Issued, Duration::from_secs(10))
        .await;
    let stolen = w.dir.path().join("steal-cert.pub");
    std::fs::write(
        &stolen,
        issued
            .status
            .unwrap_or_default()
            .certificate
            .unwrap_or_default(),
    )
    .unwrap();
    let out = w.ssh(&stolen, &user, &["echo intruder-in"]).run();
    assert!(
        !out.stdout.contains("intruder-in"),
        "B reached A's host: {out:?}\n{}",
        w.proxy.log_tail()
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("refused login") || out.stderr.contains("open failed"),
        "{}",
        out.stderr
    );
    // A's sshd saw the proxy's certificate for B and refused it: its principal names B.
    assert!(
        w.sshd.wait_for_log(
            &format!(
                "gatehouse:{}/steal requester=alice via=gatehouse-proxy",
                b.ns
            ),
            Duration::from_secs(5)
        ),
        "{}\n{}",
        w.sshd.log(),
        w.proxy.log_tail()
    );
}

#[tokio::test]
async fn a_direct_host_group_in_another_namespace_opens_nothing_and_host_bound_certificates_open_one_host()
 {
    let cp = gatehouse_tests::control_plane();
    cp.install_gatehouse();
    let login = current_login();
    let user_ca = cp.published(published::USER_CA_PUB).await;
    let direct = |config: SshdConfig| Sshd::start(&config);
    let db1 = direct(SshdConfig::trusting(user_ca.trim()).authorize(&login, &[]));
    let db2 = direct(SshdConfig::trusting(user_ca.trim()).authorize(&login, &[]));
    let a = Scenario::new(
        cp,
        "direct-owner",
        &Setup {
            approvals: 0,
            mode: "Direct",
            logins: vec![login.clone()],
            hosts: vec![sshd_host("db1", &db1), sshd_host("db2", &db2)],
            policy_extra: json!({}),
        },
    )
    .await;
    // Each host is configured from its own entry in A's HostGroup status, nothing else.
    for (sshd, host) in [(&db1, "db1"), (&db2, "db2")] {
        let lines = a.authorized_principals(cp, host, &login).await;
        sshd.set_authorized_principals(&login, &lines);
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "alice");
    let issue = async |s: &Scenario, name: &str, host: Option<&str>| {
        let mut request = scenario::request(name, &login, &public);
        if let Some(host) = host {
            request["spec"]["target"]["host"] = json!(host);
        }
        s.apply(cp, User::Alice, &request).ok();
        let issued = s
            .wait_phase(name, Phase::Issued, Duration::from_secs(10))
            .await;
        let file = dir.path().join(format!("{name}-cert.pub"));
        std::fs::write(
            &file,
            issued
                .status
                .unwrap_or_default()
                .certificate
                .unwrap_or_default(),
        )
        .unwrap();
        file
    };
    let group_wide = issue(&a, "group", None).await;
    for sshd in [&db1, &db2] {
        let out = sshd.ssh(&login, &key, &group_wide).arg("echo in").run();
        assert_eq!(out.stdout.trim(), "in", "{out:?}");
    }
    // A certificate for db1 only opens db1.
    let only_db1 = issue(&a, "only-db1", Some("db1")).await;
    assert_eq!(
        db1.ssh(&login, &key, &only_db1)
            .arg("echo in")
            .run()
            .stdout
            .trim(),
        "in"
    );
    let out = db2.ssh(&login, &key, &only_db1).arg("echo in").run();
    assert_ne!(out.code, Some(0), "a db1 certificate opened db2: {out:?}");

    // Namespace B's Direct HostGroup names A's machine; B's certificate opens nothing there.
    let b = Scenario::new(
        cp,
        "direct-intruder",
        &Setup {
            approvals: 0,
            mode: "Direct",
            logins: vec![login.clone()],
            hosts: vec![sshd_host("db1", &db1)],
            policy_extra: json!({}),
        },
    )
    .await;
    let stolen = issue(&b, "steal", None).await;
    let out = db1.ssh(&login, &key, &stolen).arg("echo in").run();
    assert_ne!(
        out.code,
        Some(0),
        "B's Direct certificate opened A's host: {out:?}"
    );
    db1.expect_log(&format!("gatehouse:{}/", b.ns), Duration::from_secs(5));
}

#[tokio::test]
async fn the_proxy_dials_only_the_targets_it_is_allowed() {
    let w = ProxiedWorld::with_local_store("allowed").await;
    let cert = w.issue(w.request("r1")).await;
    let fenced = Proxy::start(
        w.cp,
        ProxyConfig {
            args: vec!["--allowed-targets=10.0.0.0/8:22,[fd00::/8]:22".to_owned()],
            ..ProxyConfig::new(
                w.dir.path().join("fenced"),
                ProxiedWorld::local_storage(w.dir.path()),
            )
        },
    );
    let out = fenced
        .client(
            Client::Ssh,
            &format!("{}@db1", w.login),
            &w.key,
            &cert,
            &w.known_hosts,
        )
        .arg("echo in")
        .run();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr
            .contains("outside the targets this proxy may reach"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("10.0.0.0/8:22-22"), "{}", out.stderr);
}

#[tokio::test]
async fn two_thousand_self_revocations_do_not_stop_the_next_revocation() {
    let w = ProxiedWorld::with_local_store("flood").await;
    let cert = w.issue(w.request("victim")).await;
    // alice (a requester) floods: 2,000 requests with 250-character names, each revoked by her.
    let alice: Api<AccessRequest> = Api::namespaced(w.cp.client(User::Alice).await, &w.s.ns);
    let names: Vec<String> = (0..2000)
        .map(|i| format!("{i:04}-{}", "x".repeat(245)))
        .collect();
    let started = Instant::now();
    futures::stream::iter(names.iter())
        .for_each_concurrent(32, |name| {
            let alice = alice.clone();
            let request: AccessRequest =
                serde_json::from_value(scenario::request(name, &w.login, &w.public)).unwrap();
            async move {
                alice
                    .create(&PostParams::default(), &request)
                    .await
                    .unwrap();
            }
        })
        .await;
    // Each is Issued (auto-approve), then self-revoked.
    eprintln!("2,000 created in {:?}", started.elapsed());
    await_phase_count(&w.s.requests, Phase::Issued, 2001, Duration::from_secs(300)).await;
    eprintln!("2,000 Issued after {:?}", started.elapsed());
    futures::stream::iter(names.iter())
        .for_each_concurrent(32, |name| {
            let alice = alice.clone();
            async move {
                let patch = json!({"metadata": {"annotations": {annotations::REVOKE: "flood"}}});
                alice
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
        })
        .await;
    await_phase_count(
        &w.s.requests,
        Phase::Revoked,
        2000,
        Duration::from_secs(300),
    )
    .await;
    eprintln!(
        "flood of 2,000 created, issued and revoked in {:?}",
        started.elapsed()
    );

    // The list stayed small (proxied certificates need no entry) and still publishes.
    let config_maps: Api<ConfigMap> =
        Api::namespaced(w.cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    let list = config_maps
        .get(published::REVOCATIONS_CONFIGMAP)
        .await
        .unwrap();
    let json = &list.data.unwrap_or_default()[published::REVOKED_JSON];
    assert!(
        json.len() < 64 * 1024,
        "revocation list grew to {} bytes",
        json.len()
    );

    // An approver's revocation of an unrelated live request still takes effect within 2 s.
    let session = w.live_session("victim", &cert).await;
    let revoked_at = Instant::now();
    w.s.annotate(
        w.cp,
        User::Bob,
        "victim",
        annotations::REVOKE,
        "incident over",
    )
    .ok();
    w.s.wait_phase("victim", Phase::Revoked, Duration::from_secs(2))
        .await;
    let ended = session.wait();
    assert!(
        revoked_at.elapsed() < Duration::from_secs(3),
        "session ended {:?} after the revoke",
        revoked_at.elapsed()
    );
    assert!(
        ended
            .stderr
            .contains("is Revoked (revoked by bob: incident over); session closed"),
        "{}",
        ended.stderr
    );
}

/// Wait until at least `count` requests are in `phase` (listing every 2 s: the list is large).
async fn await_phase_count(
    requests: &Api<AccessRequest>,
    phase: Phase,
    count: usize,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        let list = match requests.list(&Default::default()).await {
            Ok(list) => list,
            Err(error) => panic!("listing AccessRequests: {error}"),
        };
        let now = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(phase))
            .count();
        if now >= count {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {now} of {count} requests {phase:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn another_requester_cannot_touch_a_request_at_all() {
    let w = ProxiedWorld::with_local_store("owned").await;
    w.issue(w.request("alices")).await;
    // dave may request in this namespace too: a colleague, not an approver of its policy.
    w.cp.bind(&w.s.ns, "gatehouse-requester", Subject::User("dave"));
    let patch = |user: User, body: serde_json::Value| {
        w.cp.kubectl(user)
            .args([
                "-n",
                &w.s.ns,
                "patch",
                "accessrequest",
                "alices",
                "--type=merge",
                "-p",
            ])
            .arg(body.to_string())
            .run()
    };
    let dangling = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000000"}]}});
    patch(User::Dave, dangling.clone()).fails_with(&["metadata.ownerReferences"]);
    patch(User::Alice, dangling).fails_with(&["metadata.ownerReferences"]);
    patch(User::Dave, json!({"metadata": {"finalizers": null}}))
        .fails_with(&["metadata.finalizers"]);
    // 260 KiB of annotation, from a file (too long for a command line).
    let pad = w.dir.path().join("pad.json");
    std::fs::write(
        &pad,
        json!({"metadata": {"annotations": {"pad": "x".repeat(260 * 1024)}}}).to_string(),
    )
    .unwrap();
    w.cp.kubectl(User::Dave)
        .args([
            "-n",
            &w.s.ns,
            "patch",
            "accessrequest",
            "alices",
            "--type=merge",
            "--patch-file",
        ])
        .arg(&pad)
        .run()
        .fails_with(&["may hold at most 32768 bytes"]);
    patch(
        User::Dave,
        json!({"metadata": {"labels": {"team": "dave"}}}),
    )
    .fails_with(&["dave may not change", "only its requester, its approvers"]);
    // alice's request is intact: Issued, finalizer and all, and her revoke still fits.
    let request = w.s.get("alices").await;
    assert_eq!(
        request.status.unwrap_or_default().phase,
        Some(Phase::Issued)
    );
    assert!(
        request
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert!(!request.metadata.finalizers.unwrap_or_default().is_empty());
    w.s.annotate(w.cp, User::Bob, "alices", annotations::REVOKE, "done")
        .ok();
    w.s.wait_phase("alices", Phase::Revoked, Duration::from_secs(5))
        .await;
}

/// Start a session under the world's policy, change the policy with `change`, and check that
/// the session ends within 3 s, the login is refused and the request is Revoked saying `why`.
async fn withdrawn(
    w: &ProxiedWorld,
    name: &str,
    change: impl AsyncFnOnce(&Api<AccessPolicy>),
    why: &str,
) {
    let policies: Api<AccessPolicy> = Api::namespaced(w.cp.client(User::Admin).await, &w.s.ns);
    let cert = w.issue(w.request(name)).await;
    let session = w.live_session(name, &cert).await;
    let started = Instant::now();
    change(&policies).await;
    let ended = session.wait();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the session lasted {:?} after the change",
        started.elapsed()
    );
    assert!(ended.stderr.contains(why), "{}", ended.stderr);
    let out = w.ssh(&cert, &format!("{}@db1", w.login), &["true"]).run();
    assert_ne!(out.code, Some(0), "{out:?}");
    let request =
        w.s.wait_phase(name, Phase::Revoked, Duration::from_secs(5))
            .await;
    let ready = scenario::condition(&request, "Ready").map(|c| c.message);
    assert_eq!(ready.as_deref(), Some(why));
}

#[tokio::test]
async fn deleting_the_policy_in_git_ends_the_grant() {
    let w = ProxiedWorld::with_local_store("git-delete").await;
    let why = format!(
        "access withdrawn: AccessPolicy {}/{} was deleted",
        w.s.ns,
        scenario::POLICY
    );
    withdrawn(
        &w,
        "deleted",
        async |policies| {
            policies
                .delete(scenario::POLICY, &DeleteParams::default())
                .await
                .unwrap();
        },
        &why,
    )
    .await;
}

#[tokio::test]
async fn narrowing_the_policy_in_git_ends_the_grant() {
    let w = ProxiedWorld::with_local_store("git-narrow").await;
    let why = format!(
        "access withdrawn: AccessPolicy {}/{} no longer allows login {}",
        w.s.ns,
        scenario::POLICY,
        w.login
    );
    withdrawn(
        &w,
        "narrowed",
        async |policies| {
            let narrower = json!({"spec": {"logins": ["somebody-else"]}});
            policies
                .patch(
                    scenario::POLICY,
                    &PatchParams::default(),
                    &Patch::Merge(&narrower),
                )
                .await
                .unwrap();
        },
        &why,
    )
    .await;
}

#[tokio::test]
async fn one_request_gets_one_certificate_ever() {
    let cp = gatehouse_tests::control_plane();
    let s = Scenario::new(
        cp,
        "one-cert",
        &Setup {
            approvals: 0,
            mode: "Direct",
            ..Setup::default()
        },
    )
    .await;
    // Watch every change to every request from before the first exists.
    let serials: std::sync::Arc<std::sync::Mutex<BTreeMap<String, BTreeSet<String>>>> =
        Default::default();
    let seen = serials.clone();
    let watch = tokio::spawn(
        watcher(s.requests.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each(move |r: AccessRequest| {
                if let Some(serial) = r.status.as_ref().and_then(|s| s.serial.clone()) {
                    seen.lock()
                        .unwrap()
                        .entry(r.metadata.name.clone().unwrap_or_default())
                        .or_default()
                        .insert(serial);
                }
                async { Ok(()) }
            }),
    );
    let alice: Api<AccessRequest> = Api::namespaced(cp.client(User::Alice).await, &s.ns);
    let public = scenario::public_key();
    futures::stream::iter(0..200)
        .for_each_concurrent(32, |i| {
            let alice = alice.clone();
            let request: AccessRequest =
                serde_json::from_value(scenario::request(&format!("r{i:03}"), "ubuntu", &public))
                    .unwrap();
            async move {
                alice
                    .create(&PostParams::default(), &request)
                    .await
                    .unwrap();
            }
        })
        .await;
    wait_for(Duration::from_secs(120), "200 requests Issued", || async {
        let list = s.requests.list(&Default::default()).await.ok()?;
        (list
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Issued))
            .count()
            == 200)
            .then_some(())
    })
    .await;
    // Give a second signature every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    watch.abort();
    let serials = serials.lock().unwrap();
    assert_eq!(serials.len(), 200);
    let twice: Vec<_> = serials.iter().filter(|(_, s)| s.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "requests signed more than once: {twice:?}"
    );
}
