//! The operator against the real API server: issue, deny, expire, revoke, the CA's stability and
//! leader election. Requests are made and approved by the control plane's real users.

use std::time::{Duration, Instant};

use gatehouse_crds::{
    Phase,
    contract::{annotations, identity, published, secrets},
};
use gatehouse_tests::{
    Cmd, SYSTEM_NAMESPACE, Subject, User, control_plane,
    operator::{Operator, OperatorConfig, libfaketime},
    scenario::{self, HOST_GROUP, POLICY, Scenario, Setup, condition, keypair, public_key},
    unique_name, wait_for,
};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, Secret},
};
use kube::Api;
use serde_json::json;

fn ssh_keygen(args: &[&str], file: &std::path::Path) -> gatehouse_tests::CmdOutput {
    Cmd::new("ssh-keygen").args(args).arg(file).run()
}

#[tokio::test]
async fn approval_issues_a_certificate_within_a_second_that_ssh_keygen_reads() {
    let cp = control_plane();
    let s = Scenario::new(cp, "issue", &Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = keypair(dir.path(), "alice");
    s.apply(cp, User::Alice, &scenario::request("r1", "ubuntu", &public))
        .ok();
    let pending = s
        .wait_phase("r1", Phase::Pending, Duration::from_secs(10))
        .await;
    let pending_status = pending.status.clone().unwrap_or_default();
    assert_eq!(pending_status.policy.as_deref(), Some(POLICY));
    assert_eq!(pending_status.granted_duration.as_deref(), Some("30m"));
    assert!(pending_status.certificate.is_none());

    let approved_at = Instant::now();
    s.annotate(cp, User::Bob, "r1", annotations::APPROVE, "lgtm")
        .ok();
    let issued = wait_for(Duration::from_secs(5), "the certificate", || async {
        let r = s.requests.get("r1").await.ok()?;
        r.status.as_ref()?.certificate.is_some().then_some(r)
    })
    .await;
    let latency = approved_at.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "certificate took {latency:?} after approval"
    );

    let status = issued.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Issued));
    assert_eq!(status.approvals.len(), 1);
    assert_eq!(status.approvals[0].user, "bob");
    assert_eq!(status.approvals[0].message.as_deref(), Some("lgtm"));
    let uid = issued.metadata.uid.clone().unwrap_or_default();
    let key_id = identity::user_key_id(&s.ns, "r1", &uid, User::Alice.username());
    assert_eq!(status.key_id.as_deref(), Some(key_id.as_str()));
    let principal = identity::proxied_principal(&s.ns, "r1");
    assert_eq!(status.principals, std::slice::from_ref(&principal));

    let cert_file = dir.path().join("alice-cert.pub");
    std::fs::write(&cert_file, status.certificate.clone().unwrap_or_default()).unwrap();
    let listing = ssh_keygen(&["-L", "-f"], &cert_file);
    let text = listing.ok();
    let serial = status.serial.clone().unwrap_or_default();
    let after = status.valid_after.clone().expect("validAfter").0;
    let before = status.valid_before.clone().expect("validBefore").0;
    assert_eq!(
        before.duration_since(after).as_secs(),
        30 * 60 + 30,
        "30m granted, backdated 30 s"
    );
    let local = |t: jiff::Timestamp| {
        t.to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    for expected in [
        "Type: ssh-ed25519-cert-v01@openssh.com user certificate".to_owned(),
        format!("Key ID: \"{key_id}\""),
        format!("Serial: {serial}"),
        format!("Valid: from {} to {}", local(after), local(before)),
        format!("Principals: \n                {principal}"),
        "Critical Options: (none)".to_owned(),
        "Extensions: \n                permit-pty".to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "ssh-keygen -L lacks {expected:?}:\n{text}"
        );
    }
    assert!(
        !text.contains("permit-port-forwarding") && !text.contains("permit-agent-forwarding"),
        "{text}"
    );

    let reasons = s.event_reasons(cp, "r1");
    assert!(
        reasons.contains(&"Pending".to_owned()) && reasons.contains(&"Issued".to_owned()),
        "{reasons:?}"
    );
    let metrics = cp
        .shared_operator()
        .get("/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let issued_total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_certificates_issued_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(issued_total >= 1.0, "{metrics}");
    assert!(
        metrics.contains("gatehouse_approval_to_issue_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test]
async fn auto_approve_issues_with_no_approver() {
    let cp = control_plane();
    let setup = Setup {
        approvals: 0,
        ..Setup::default()
    };
    let s = Scenario::new(cp, "auto", &setup).await;
    let public = public_key();
    s.apply(cp, User::Alice, &scenario::request("r1", "ubuntu", &public))
        .ok();
    let issued = s
        .wait_phase("r1", Phase::Issued, Duration::from_secs(10))
        .await;
    let status = issued.status.unwrap_or_default();
    assert!(status.approvals.is_empty());
    let approved = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Approved")
        .expect("Approved");
    assert_eq!(
        (approved.status.as_str(), approved.reason.as_str()),
        ("True", "AutoApproved")
    );
    assert_eq!(
        approved.message,
        format!("AccessPolicy {POLICY} requires no approval")
    );
    // The operator also keeps the HostGroup's status.
    let groups: Api<gatehouse_crds::HostGroup> =
        Api::namespaced(cp.client(User::Admin).await, &s.ns);
    let group = wait_for(Duration::from_secs(10), "HostGroup status", || async {
        let g = groups.get(HOST_GROUP).await.ok()?;
        let status = g.status?;
        (status.host_count == Some(1)).then_some(status)
    })
    .await;
    let ready = group
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");
    assert!(
        ready
            .message
            .starts_with("1 host(s), mode Proxied, 1 login(s) allowed by policy"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn issued_requests_expire_at_valid_before() {
    let cp = control_plane();
    let s = Scenario::new(
        cp,
        "expire",
        &Setup {
            approvals: 0,
            ..Setup::default()
        },
    )
    .await;
    let public = public_key();
    s.apply(cp, User::Alice, &scenario::request("r1", "ubuntu", &public))
        .ok();
    let issued = s
        .wait_phase("r1", Phase::Issued, Duration::from_secs(10))
        .await;
    let valid_before = issued
        .status
        .unwrap_or_default()
        .valid_before
        .expect("validBefore")
        .0;
    // An operator whose clock runs 31 minutes ahead (libfaketime) sees the 30m certificate expired.
    let system = cp.namespace("expire-system").await;
    let _later = Operator::start(&OperatorConfig {
        env: vec![
            ("LD_PRELOAD".to_owned(), libfaketime(true)),
            ("FAKETIME".to_owned(), "+31m".to_owned()),
        ],
        ..OperatorConfig::extra(cp, &system, &s.ns)
    });
    let expired = s
        .wait_phase("r1", Phase::Expired, Duration::from_secs(15))
        .await;
    let ready = condition(&expired, "Ready");
    assert_eq!(
        ready.map(|c| (c.reason, c.message)),
        Some((
            "Expired".into(),
            format!("certificate expired at {valid_before}")
        ))
    );
    assert!(s.event_reasons(cp, "r1").contains(&"Expired".to_owned()));
}

#[tokio::test]
async fn an_approver_denial_is_terminal() {
    let cp = control_plane();
    let s = Scenario::new(cp, "deny", &Setup::default()).await;
    let public = public_key();
    s.apply(cp, User::Alice, &scenario::request("r1", "ubuntu", &public))
        .ok();
    s.wait_phase("r1", Phase::Pending, Duration::from_secs(10))
        .await;
    s.annotate(
        cp,
        User::Bob,
        "r1",
        annotations::DENY,
        "not during the freeze",
    )
    .ok();
    let denied = s
        .wait_phase("r1", Phase::Denied, Duration::from_secs(5))
        .await;
    let status = denied.status.unwrap_or_default();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Denied")
        .expect("Denied");
    assert_eq!(condition.reason, "DeniedByApprover");
    assert_eq!(condition.message, "denied by bob: not during the freeze");
    assert!(status.certificate.is_none());
    assert!(
        s.event_reasons(cp, "r1")
            .contains(&"DeniedByApprover".to_owned())
    );
    s.annotate(cp, User::Carol, "r1", annotations::APPROVE, "")
        .fails_with(&[&format!(
            "AccessRequest {}/r1 is already Denied: it accepts no further approve",
            s.ns
        )]);
}

#[tokio::test]
async fn requests_no_policy_allows_are_denied_saying_why() {
    let cp = control_plane();
    let s = Scenario::new(cp, "nopolicy", &Setup::default()).await;
    cp.bind(&s.ns, "gatehouse-requester", Subject::Group("dba-leads"));
    let other = scenario::host_group("other", "Proxied", "staging", &Setup::default().hosts);
    s.apply(cp, User::Admin, &other).ok();
    let public = public_key();
    let mut other_group = scenario::request("other-group", "ubuntu", &public);
    other_group["spec"]["target"]["hostGroup"] = json!("other");
    let mut unknown_host = scenario::request("unknown-host", "ubuntu", &public);
    unknown_host["spec"]["target"]["host"] = json!("db9");
    let cases = [
        (
            User::Dave,
            scenario::request("dave", "ubuntu", &public),
            format!(
                "no AccessPolicy in namespace {} has a subject matching user dave or groups [dba-leads, system:authenticated]",
                s.ns
            ),
        ),
        (
            User::Alice,
            other_group,
            format!(
                "host group other is not selected by any AccessPolicy for this requester ({POLICY})"
            ),
        ),
        (
            User::Alice,
            scenario::request("root", "root", &public),
            format!("login root is not allowed on host group {HOST_GROUP} (allowed: ubuntu)"),
        ),
        (
            User::Alice,
            unknown_host,
            format!("host db9 is not in HostGroup {HOST_GROUP}"),
        ),
    ];
    for (user, request, message) in &cases {
        s.apply(cp, *user, request).ok();
        let name = request["metadata"]["name"].as_str().unwrap_or_default();
        let denied = s
            .wait_phase(name, Phase::Denied, Duration::from_secs(10))
            .await;
        let condition =
            condition(&denied, "Denied").unwrap_or_else(|| panic!("Denied condition on {name}"));
        assert_eq!(condition.reason, "NoMatchingPolicy", "{name}");
        assert_eq!(&condition.message, message, "{name}");
    }
}

#[tokio::test]
async fn revoking_or_deleting_an_issued_request_publishes_its_certificate_as_revoked() {
    let cp = control_plane();
    let s = Scenario::new(
        cp,
        "revoke",
        // Direct: its certificates open hosts themselves, so revoked ones must be listed.
        &Setup {
            approvals: 0,
            mode: "Direct",
            ..Setup::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = keypair(dir.path(), "alice");
    for name in ["kept", "revoked", "deleted"] {
        s.apply(cp, User::Alice, &scenario::request(name, "ubuntu", &public))
            .ok();
    }
    let mut serials = std::collections::BTreeMap::new();
    for name in ["kept", "revoked", "deleted"] {
        let issued = s
            .wait_phase(name, Phase::Issued, Duration::from_secs(10))
            .await
            .status
            .unwrap_or_default();
        std::fs::write(
            dir.path().join(format!("{name}-cert.pub")),
            issued.certificate.unwrap_or_default(),
        )
        .unwrap();
        serials.insert(name, issued.serial.unwrap_or_default());
    }
    // The requester revokes her own request; an admin deletes another.
    s.annotate(
        cp,
        User::Alice,
        "revoked",
        annotations::REVOKE,
        "done early",
    )
    .ok();
    let revoked = s
        .wait_phase("revoked", Phase::Revoked, Duration::from_secs(5))
        .await;
    let ready = condition(&revoked, "Ready");
    assert_eq!(
        ready.map(|c| (c.reason, c.message)),
        Some(("Revoked".into(), "revoked by alice: done early".into()))
    );
    cp.kubectl(User::Admin)
        .args([
            "-n",
            &s.ns,
            "delete",
            "accessrequest",
            "deleted",
            "--wait=false",
        ])
        .run()
        .ok();
    wait_for(
        Duration::from_secs(10),
        "the deleted request to be gone",
        || async {
            s.requests
                .get_opt("deleted")
                .await
                .ok()
                .and_then(|r| r.is_none().then_some(()))
        },
    )
    .await;

    let config_maps: Api<ConfigMap> =
        Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    let revocations = wait_for(
        Duration::from_secs(10),
        "both revocations to be published",
        || async {
            let cm = config_maps
                .get(published::REVOCATIONS_CONFIGMAP)
                .await
                .ok()?;
            let json = cm.data.as_ref()?.get(published::REVOKED_JSON)?.clone();
            (json.contains(&serials["revoked"]) && json.contains(&serials["deleted"])).then_some(cm)
        },
    )
    .await;
    let list = revocations.data.clone().unwrap_or_default()[published::REVOKED_JSON].clone();
    assert!(!list.contains(&serials["kept"]), "{list}");
    let krl = revocations
        .binary_data
        .unwrap_or_default()
        .get(published::REVOKED_KRL)
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let krl_file = dir.path().join(published::REVOKED_KRL);
    std::fs::write(&krl_file, krl).unwrap();
    for (name, expect_revoked) in [("kept", false), ("revoked", true), ("deleted", true)] {
        let check = Cmd::new("ssh-keygen")
            .args(["-Q", "-f"])
            .args([&krl_file, &dir.path().join(format!("{name}-cert.pub"))])
            .run();
        assert_eq!(check.success, !expect_revoked, "{name}: {check:?}");
        assert_eq!(
            check.stdout.contains("REVOKED"),
            expect_revoked,
            "{name}: {check:?}"
        );
    }
    // A terminal request accepts nothing more.
    s.annotate(cp, User::Bob, "revoked", annotations::APPROVE, "")
        .fails_with(&["is already Revoked"]);
}

#[tokio::test]
async fn unapproved_requests_expire_after_the_pending_ttl() {
    let cp = control_plane();
    let s = Scenario::new(cp, "pendingttl", &Setup::default()).await;
    // A second operator for this namespace only, with a 3 s pending TTL (the shared one uses 24h).
    let system = cp.namespace("pendingttl-system").await;
    let _short = Operator::start(&OperatorConfig {
        pending_ttl: Some("3s".to_owned()),
        ..OperatorConfig::extra(cp, &system, &s.ns)
    });
    let public = public_key();
    s.apply(cp, User::Alice, &scenario::request("r1", "ubuntu", &public))
        .ok();
    s.wait_phase("r1", Phase::Pending, Duration::from_secs(10))
        .await;
    let expired = s
        .wait_phase("r1", Phase::Expired, Duration::from_secs(15))
        .await;
    let ready = condition(&expired, "Ready");
    assert_eq!(
        ready.map(|c| c.message),
        Some("not approved within the pending TTL of 3s".to_owned())
    );
    s.annotate(cp, User::Bob, "r1", annotations::APPROVE, "too late")
        .fails_with(&["is already Expired"]);
}

/// The SHA256 fingerprint of CA Secret `secret`'s public key.
fn fingerprint(secret: &Secret, dir: &std::path::Path) -> String {
    let public = secret
        .data
        .as_ref()
        .and_then(|d| d.get(secrets::CA_PUBLIC_KEY))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let file = dir.join(unique_name("ca"));
    std::fs::write(&file, public).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    gatehouse_tests::sshd::fingerprint(&file)
}

#[tokio::test]
async fn the_ca_survives_restarts_and_racing_starts_and_one_replica_leads() {
    let cp = control_plane();
    cp.install_gatehouse();
    let system = cp.namespace("ca-system").await;
    let quiet = cp.namespace("ca-watch").await;
    let config = |n: usize| OperatorConfig {
        log: cp.dir().join(format!("operator-{system}-{n}.log")),
        ..OperatorConfig::extra(cp, &system, &quiet)
    };
    // Two replicas start at the same moment: both race to create the CA Secrets.
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Operator::start(&config(1)));
        let b = scope.spawn(|| Operator::start(&config(2)));
        (a.join().expect("start 1"), b.join().expect("start 2"))
    });
    let secrets: Api<Secret> = Api::namespaced(cp.client(User::Admin).await, &system);
    let dir = tempfile::tempdir().unwrap();
    let user_ca = secrets.get(secrets::USER_CA).await.unwrap();
    let upstream_ca = secrets.get(secrets::UPSTREAM_CA).await.unwrap();
    let (user_fp, upstream_fp) = (
        fingerprint(&user_ca, dir.path()),
        fingerprint(&upstream_ca, dir.path()),
    );
    assert!(
        user_fp.starts_with("SHA256:") && user_fp != upstream_fp,
        "{user_fp} {upstream_fp}"
    );
    for operator in [&first, &second] {
        let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
        assert!(
            log.contains(&user_fp),
            "operator log does not name the CA it loaded:\n{log}"
        );
        assert!(
            !log.contains("BEGIN OPENSSH PRIVATE KEY"),
            "key material in the log"
        );
    }

    // Exactly one replica leads; stopping it hands the Lease to the other.
    let leader_of = |op: &Operator| {
        op.get("/metrics")
            .is_some_and(|(_, m)| m.lines().any(|l| l == "gatehouse_operator_leader 1"))
    };
    let first_leads = wait_for(Duration::from_secs(20), "exactly one leader", || async {
        match (leader_of(&first), leader_of(&second)) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if first_leads {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let leases: Api<Lease> = Api::namespaced(cp.client(User::Admin).await, &system);
    let lease = leases.get("gatehouse-operator").await.unwrap();
    assert!(lease.spec.and_then(|s| s.holder_identity).is_some());
    leader.send_sigterm();
    wait_for(
        Duration::from_secs(20),
        "the standby to take over",
        || async { leader_of(standby).then_some(()) },
    )
    .await;
    drop((first, second));

    // Three restarts: the keys are read back, never replaced.
    for round in 3..6 {
        let mut operator = Operator::start(&config(round));
        let again = secrets.get(secrets::USER_CA).await.unwrap();
        assert_eq!(fingerprint(&again, dir.path()), user_fp, "restart {round}");
        assert_eq!(
            again.metadata.resource_version, user_ca.metadata.resource_version,
            "restart {round}"
        );
        let upstream = secrets.get(secrets::UPSTREAM_CA).await.unwrap();
        assert_eq!(
            fingerprint(&upstream, dir.path()),
            upstream_fp,
            "restart {round}"
        );
        operator.stop();
    }
}
