//! Table tests of the AccessRequest state machine: every phase transition, refusals included,
//! with plain values and no API server.

use super::*;
use crate::decisions::{DecisionKind, DecisionRecord};
use gatehouse_crds::{
    AccessPolicySpec, AccessRequestSpec, HostGroupSpec, Requester, Target, conditions::DENIED,
};
use serde_json::json;

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIISa1AY8mpx0OMvpQM9rRmi9MFzv63hBz+TstwkC/lzx alice@laptop";
const RSA_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDoM5Ov8K4bH9QFAFIMsumvFei3RTkI9LK6hwqJ+/C6CEbznBNYPRophtqAl3aD5lN5SpArxA9cRTudZTjRGkpMMVXjfaXp2hZA1wxL9eRiyz0w+E+J4in58esv5GVurDEUHrEvJTPyJb0w3ZzOjNgtEz5foMd/cq/65CPSauoKcNmMtvLGM80XPWitM6UV/tmYBkIfknx58AffQoXJG7RtJAtYa8pmEPDKEc5uQsEZoJOIdhOil8WZVw/W5Md/fPkqPunXbIpf8cGdjDB5HBJ4aQQ4CqEWIWjmcwm8dccO4+pjhNerhHmwZnrkluFwYy4VchabufPRlKBoq/UZmIpof2RGcrQ7GXlxRoZZ/84Cd1FKxxOcSz+Sq72TuKCYD4rQduG2GG2Zq1/CqiVu2CdCmkEoE0pMLRaHlAkNXEwBEIXCg/hUq0s83sJW9jikTYQAX727e35+YpzdKeNxJwsFB9EGfSemTTBeU9z5J6FTeBRykNkl1gfOihwLx4h3Pj8= old@laptop";

/// 2026-11-22T10:00:00Z.
const T0: i64 = 1_795_341_600;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

fn request(created: i64, status: Option<AccessRequestStatus>) -> AccessRequest {
    let mut r = AccessRequest::new(
        "r1",
        AccessRequestSpec {
            target: Target {
                host_group: "db".into(),
                host: None,
            },
            login: "ubuntu".into(),
            duration: "1h".into(),
            reason: Some("INC-1".into()),
            public_key: ALICE_KEY.into(),
            requester: Some(Requester {
                username: "alice".into(),
                uid: None,
                groups: vec!["dev".into()],
            }),
        },
    );
    r.metadata.namespace = Some("team".into());
    r.metadata.uid = Some("uid-r1".into());
    r.metadata.generation = Some(1);
    r.metadata.creation_timestamp = Some(Time(at(created)));
    r.status = status;
    r
}

fn policy(name: &str, approvals: u32) -> AccessPolicy {
    let spec: AccessPolicySpec = serde_json::from_value(json!({
        "subjects": [{"kind": "Group", "name": "dev"}],
        "hostSelector": {"matchLabels": {"env": "prod"}},
        "logins": ["ubuntu"],
        "maxDuration": "2h",
        "approval": {"required": approvals},
        "certificate": {"extensions": ["permit-pty"], "forceCommand": "/usr/bin/psql", "sourceAddresses": ["10.0.0.0/8"]},
    }))
    .unwrap();
    let mut p = AccessPolicy::new(name, spec);
    p.metadata.namespace = Some("team".into());
    p
}

fn host_group(mode: gatehouse_crds::HostGroupMode) -> HostGroup {
    let spec: HostGroupSpec = serde_json::from_value(json!({
        "mode": mode,
        "hosts": [{"name": "db1", "address": "10.1.0.1", "hostKeys": ["ssh-ed25519 AAAA"]}],
    }))
    .unwrap();
    let mut g = HostGroup::new("db", spec);
    g.metadata.namespace = Some("team".into());
    g.metadata.labels = Some([("env".to_owned(), "prod".to_owned())].into());
    g
}

fn record(kind: DecisionKind, user: &str, time: &str, message: Option<&str>) -> DecisionRecord {
    DecisionRecord {
        kind,
        user: user.into(),
        time: time.into(),
        message: message.map(str::to_owned),
        key_version: 1,
        seal: "verified-by-tally".into(),
    }
}

fn approvals(users: &[(&str, &str)]) -> Decisions {
    Decisions {
        approvals: users
            .iter()
            .map(|(u, t)| record(DecisionKind::Approve, u, t, None))
            .collect(),
        ..Decisions::default()
    }
}

/// Issued through the proxy (its certificate opens nothing without it).
fn issued_status(valid_before: Option<i64>) -> AccessRequestStatus {
    AccessRequestStatus {
        phase: Some(Phase::Issued),
        policy: Some("oncall".into()),
        serial: Some("77".into()),
        principals: vec!["gatehouse-proxy:team/r1".into()],
        key_id: Some("gatehouse:team/r1 uid=uid-r1 requester=alice".into()),
        valid_before: valid_before.map(|s| Time(at(s))),
        ..AccessRequestStatus::default()
    }
}

fn pending_status() -> AccessRequestStatus {
    AccessRequestStatus {
        phase: Some(Phase::Pending),
        policy: Some("oncall".into()),
        ..AccessRequestStatus::default()
    }
}

/// The world a decision sees.
struct World {
    decisions: Decisions,
    host_group: Option<HostGroup>,
    policies: Vec<AccessPolicy>,
    revoked_in_namespace: usize,
    now: i64,
}

impl World {
    fn new(approvals_required: u32) -> Self {
        Self {
            decisions: Decisions::default(),
            host_group: Some(host_group(gatehouse_crds::HostGroupMode::Proxied)),
            policies: vec![policy("oncall", approvals_required)],
            revoked_in_namespace: 0,
            now: T0 + 60,
        }
    }

    fn decide(&self, request: &AccessRequest) -> Decision {
        decide(
            request,
            &Facts {
                decisions: &self.decisions,
                host_group: self.host_group.as_ref(),
                policies: &self.policies,
                pending_ttl: Duration::from_secs(24 * 3600),
                revoked_in_namespace: self.revoked_in_namespace,
                revoked_limit: 1000,
                now: at(self.now),
            },
        )
    }
}

#[track_caller]
fn written(decision: Decision) -> Transition {
    match decision {
        Decision::Write(t) => t,
        other => panic!("expected a status write, got {other:?}"),
    }
}

#[track_caller]
fn ready(t: &Transition) -> (&str, &str) {
    let c = t
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("a Ready condition");
    (c.reason.as_str(), c.message.as_str())
}

#[test]
fn auto_approved_request_orders_exactly_the_certificate_the_policy_grants() {
    let w = World::new(0);
    let Decision::Issue(issuance) = w.decide(&request(T0, None)) else {
        panic!("expected an issuance");
    };
    let order = &issuance.order;
    assert_eq!(order.public_key, ALICE_KEY);
    assert_eq!(order.principals, ["gatehouse-proxy:team/r1"]);
    assert_eq!(order.key_id, "gatehouse:team/r1 uid=uid-r1 requester=alice");
    let now = u64::try_from(w.now).unwrap();
    assert_eq!(
        (order.valid_after, order.valid_before),
        (now - 30, now + 3600)
    );
    assert_eq!(order.extensions, [CertificateExtension::PermitPty]);
    assert_eq!(order.force_command.as_deref(), Some("/usr/bin/psql"));
    assert_eq!(order.source_addresses, ["10.0.0.0/8"]);
    assert_eq!(
        (issuance.policy.as_str(), issuance.granted.as_str()),
        ("oncall", "1h")
    );
    assert!(issuance.approvals.is_empty());
    assert_eq!(issuance.completed_by_approval_at, None);
    assert_eq!(issuance.requeue, Duration::from_secs(3601));
}

#[test]
fn direct_host_groups_get_the_group_and_login_principal() {
    let mut w = World::new(0);
    w.host_group = Some(host_group(gatehouse_crds::HostGroupMode::Direct));
    let Decision::Issue(issuance) = w.decide(&request(T0, None)) else {
        panic!("expected an issuance");
    };
    assert_eq!(issuance.order.principals, ["gatehouse:team/db:ubuntu"]);
}

#[test]
fn a_new_request_waits_pending_until_its_deadline() {
    let w = World::new(1);
    let t = written(w.decide(&request(T0, None)));
    assert_eq!(t.status.phase, Some(Phase::Pending));
    assert_eq!(t.status.policy.as_deref(), Some("oncall"));
    assert_eq!(t.status.granted_duration.as_deref(), Some("1h"));
    assert_eq!(
        ready(&t),
        (
            "Pending",
            "waiting for 1 approval(s) under AccessPolicy oncall"
        )
    );
    let note = t.note.expect("a Pending event");
    assert_eq!((note.reason, note.type_), ("Pending", EventType::Normal));
    // Looked at again when the pending TTL runs out (24 h after creation, minus the minute).
    assert_eq!(t.requeue, Some(Duration::from_secs(24 * 3600 - 60 + 1)));
    assert_eq!(t.revoke, None);
}

#[test]
fn each_new_approval_is_an_event_until_enough_issue() {
    let mut w = World::new(2);
    w.decisions = approvals(&[("bob", "2026-11-22T10:00:30Z")]);
    let t = written(w.decide(&request(T0, Some(pending_status()))));
    assert_eq!(t.status.phase, Some(Phase::Pending));
    assert_eq!(t.status.approvals.len(), 1);
    let note = t.note.expect("an approval event");
    assert_eq!(
        (note.reason, note.message.as_str()),
        ("ApprovalRecorded", "approved by bob")
    );
    // The same view again changes nothing worth an Event.
    let mut already = pending_status();
    already.approvals = t.status.approvals.clone();
    assert_eq!(written(w.decide(&request(T0, Some(already)))).note, None);

    w.decisions = approvals(&[
        ("bob", "2026-11-22T10:00:30Z"),
        ("carol", "2026-11-22T10:00:50Z"),
    ]);
    let Decision::Issue(issuance) = w.decide(&request(T0, Some(pending_status()))) else {
        panic!("two approvals of two issue");
    };
    let users: Vec<_> = issuance.approvals.iter().map(|a| a.user.as_str()).collect();
    assert_eq!(users, ["bob", "carol"]);
    assert_eq!(issuance.completed_by_approval_at, Some(at(T0 + 50)));
}

#[test]
fn refusals_wait_out_the_watch_lag_then_deny_naming_the_rule() {
    type Change = Box<dyn Fn(&mut World, &mut AccessRequest)>;
    let cases: [(&str, Change, &str); 4] = [
        (
            "no HostGroup",
            Box::new(|w, _| w.host_group = None),
            "HostGroup db does not exist in namespace team",
        ),
        (
            "host not in the group",
            Box::new(|_, r| r.spec.target.host = Some("db9".into())),
            "host db9 is not in HostGroup db",
        ),
        (
            "no policy for the requester",
            Box::new(|_, r| {
                r.spec.requester = Some(Requester {
                    username: "mallory".into(),
                    uid: None,
                    groups: vec![],
                })
            }),
            "no AccessPolicy in namespace team has a subject matching user mallory",
        ),
        (
            "login not allowed",
            Box::new(|_, r| r.spec.login = "root".into()),
            "login root is not allowed on host group db (allowed: ubuntu)",
        ),
    ];
    for (what, change, message) in cases {
        let mut w = World::new(1);
        let mut young = request(T0, None);
        w.now = T0 + 2;
        change(&mut w, &mut young);
        assert_eq!(
            w.decide(&young),
            Decision::Wait(Some(WATCH_LAG_RETRY)),
            "{what}: a young request waits for the caches"
        );
        w.now = T0 + 6;
        let t = written(w.decide(&young));
        assert_eq!(t.status.phase, Some(Phase::Denied), "{what}");
        let denied = t
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == DENIED)
            .unwrap();
        assert_eq!(denied.reason, "NoMatchingPolicy", "{what}");
        assert!(
            denied.message.contains(message),
            "{what}: {}",
            denied.message
        );
        assert_eq!(t.note.unwrap().type_, EventType::Warning, "{what}");
    }
}

#[test]
fn a_request_judged_under_a_policy_is_denied_at_once_when_that_policy_goes() {
    let mut w = World::new(1);
    w.now = T0 + 1;
    w.policies = vec![policy("other", 1)];
    let t = written(w.decide(&request(T0, Some(pending_status()))));
    assert_eq!(t.status.phase, Some(Phase::Denied));
    assert_eq!(
        ready(&t).1,
        "AccessPolicy oncall, which governed this request, no longer exists"
    );
}

#[test]
fn unapproved_requests_expire_after_the_pending_ttl() {
    let mut w = World::new(1);
    w.now = T0 + 24 * 3600;
    let t = written(w.decide(&request(T0, Some(pending_status()))));
    assert_eq!(t.status.phase, Some(Phase::Expired));
    assert_eq!(
        ready(&t),
        ("Expired", "not approved within the pending TTL of 24h")
    );
    assert_eq!(t.note.unwrap().type_, EventType::Normal);
}

/// Issued for a Direct HostGroup (hosts trust the certificate itself).
fn issued_direct(valid_before: i64) -> AccessRequestStatus {
    AccessRequestStatus {
        principals: vec!["gatehouse:team/db:ubuntu".into()],
        ..issued_status(Some(valid_before))
    }
}

#[test]
fn revoking_a_direct_certificate_lists_its_serial() {
    let mut w = World::new(1);
    w.decisions.revoked = Some(record(DecisionKind::Revoke, "alice", "t", Some("done")));
    let t = written(w.decide(&request(T0, Some(issued_direct(T0 + 3600)))));
    assert_eq!(t.status.phase, Some(Phase::Revoked));
    assert_eq!(ready(&t), ("Revoked", "revoked by alice: done"));
    let entry = t
        .revoke
        .expect("the certificate goes on the revocation list");
    assert_eq!((entry.namespace.as_str(), entry.serial), ("team", 77));
    assert_eq!(entry.valid_before, at(T0 + 3600));
    assert_eq!(
        t.status.serial.as_deref(),
        Some("77"),
        "kept for the audit trail"
    );

    // A proxied certificate needs no list entry: the proxy refuses it on the status alone.
    let t = written(w.decide(&request(T0, Some(issued_status(Some(T0 + 3600))))));
    assert_eq!(t.status.phase, Some(Phase::Revoked));
    assert_eq!(t.revoke, None);

    // Revoking a request that never got a certificate has nothing to publish.
    let t = written(w.decide(&request(T0, Some(pending_status()))));
    assert_eq!(t.status.phase, Some(Phase::Revoked));
    assert_eq!(t.revoke, None);
}

#[test]
fn a_denial_ends_the_request() {
    let mut w = World::new(1);
    w.decisions.denied = Some(record(DecisionKind::Deny, "bob", "t", None));
    let t = written(w.decide(&request(T0, Some(pending_status()))));
    assert_eq!(t.status.phase, Some(Phase::Denied));
    assert_eq!(ready(&t).1, "denied by bob: no reason given");
    let denied = t
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == DENIED)
        .unwrap();
    assert_eq!(denied.reason, "DeniedByApprover");
}

#[test]
fn issued_requests_wait_for_expiry_then_expire() {
    let mut w = World::new(1);
    let live = request(T0, Some(issued_status(Some(T0 + 3600))));
    assert_eq!(
        w.decide(&live),
        Decision::Wait(Some(Duration::from_secs(3600 - 60 + 1)))
    );
    w.now = T0 + 3600;
    let t = written(w.decide(&live));
    assert_eq!(t.status.phase, Some(Phase::Expired));
    assert_eq!(t.revoke, None, "an expired certificate needs no revocation");

    let broken = request(T0, Some(issued_status(None)));
    let t = written(w.decide(&broken));
    assert_eq!(t.status.phase, Some(Phase::Failed));
    assert_eq!(ready(&t).1, "Issued without validBefore");
}

#[test]
fn an_unusable_public_key_fails_instead_of_issuing() {
    let w = World::new(0);
    let mut r = request(T0, None);
    r.spec.public_key = RSA_KEY.into();
    let t = written(w.decide(&r));
    assert_eq!(t.status.phase, Some(Phase::Failed));
    assert!(
        ready(&t).1.contains("ssh-rsa keys are not accepted"),
        "{}",
        ready(&t).1
    );
}

#[test]
fn deletion_revokes_an_issued_request_and_releases_any() {
    let w = World::new(1);
    let mut issued = request(T0, Some(issued_direct(T0 + 3600)));
    issued.metadata.deletion_timestamp = Some(Time(at(T0 + 30)));
    let Decision::Release {
        transition: Some(t),
        revoke: Some(entry),
    } = w.decide(&issued)
    else {
        panic!("an Issued request is revoked and listed before it goes");
    };
    assert_eq!(t.status.phase, Some(Phase::Revoked));
    assert_eq!(ready(&t).1, "AccessRequest deleted");
    assert_eq!(entry.serial, 77);

    // Already Revoked (a retry after the status write): still listed before it goes.
    let mut revoked = request(
        T0,
        Some(AccessRequestStatus {
            phase: Some(Phase::Revoked),
            ..issued_direct(T0 + 3600)
        }),
    );
    revoked.metadata.deletion_timestamp = Some(Time(at(T0 + 30)));
    assert!(matches!(
        w.decide(&revoked),
        Decision::Release {
            transition: None,
            revoke: Some(Revoked { serial: 77, .. })
        }
    ));

    let mut pending = request(T0, Some(pending_status()));
    pending.metadata.deletion_timestamp = Some(Time(at(T0 + 30)));
    assert_eq!(
        w.decide(&pending),
        Decision::Release {
            transition: None,
            revoke: None
        }
    );
}

#[test]
fn terminal_requests_take_no_further_decisions() {
    let mut w = World::new(0);
    w.decisions.revoked = Some(record(DecisionKind::Revoke, "alice", "t", None));
    for phase in [Phase::Denied, Phase::Expired, Phase::Revoked, Phase::Failed] {
        let status = AccessRequestStatus {
            phase: Some(phase),
            ..AccessRequestStatus::default()
        };
        assert_eq!(
            w.decide(&request(T0, Some(status))),
            Decision::Wait(None),
            "{phase:?}"
        );
    }
}

#[test]
fn a_signed_certificate_becomes_the_issued_status() {
    let mut w = World::new(1);
    w.decisions = approvals(&[("bob", "2026-11-22T10:00:30Z")]);
    let r = request(T0, Some(pending_status()));
    let Decision::Issue(issuance) = w.decide(&r) else {
        panic!("expected an issuance");
    };
    let t = issued(
        &r,
        &issuance,
        42,
        "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
        at(w.now),
    );
    assert_eq!(t.status.phase, Some(Phase::Issued));
    assert_eq!(t.status.serial.as_deref(), Some("42"));
    assert_eq!(
        t.status.certificate.as_deref(),
        Some("ssh-ed25519-cert-v01@openssh.com AAAA")
    );
    assert_eq!(t.status.principals, ["gatehouse-proxy:team/r1"]);
    assert_eq!(t.status.valid_before, Some(Time(at(w.now + 3600))));
    assert_eq!(ready(&t).0, "Issued");
    let note = t.note.unwrap();
    assert_eq!(note.reason, "Issued");
    assert_eq!(
        note.message,
        "certificate serial 42 issued for 1h, principals [gatehouse-proxy:team/r1]"
    );
    assert_eq!(t.requeue, Some(Duration::from_secs(3601)));
}

#[test]
fn removing_access_in_git_revokes_the_grant_naming_the_change() {
    type Change = Box<dyn Fn(&mut World, &mut AccessRequest)>;
    let cases: [(Change, &str); 6] = [
        (
            Box::new(|w, _| w.policies.clear()),
            "AccessPolicy team/oncall was deleted",
        ),
        (
            Box::new(|w, _| w.host_group = None),
            "HostGroup team/db was deleted",
        ),
        (
            Box::new(|w, _| w.policies[0].spec.logins = vec!["postgres".into()]),
            "AccessPolicy team/oncall no longer allows login ubuntu",
        ),
        (
            Box::new(|w, _| w.policies[0].spec.subjects[0].name = "ops".into()),
            "AccessPolicy team/oncall no longer names alice among its subjects",
        ),
        (
            Box::new(|w, _| {
                w.host_group.as_mut().unwrap().metadata.labels =
                    Some([("env".to_owned(), "staging".to_owned())].into())
            }),
            "AccessPolicy team/oncall no longer selects HostGroup db",
        ),
        (
            Box::new(|_, r| r.spec.target.host = Some("db7".into())),
            "host db7 was removed from HostGroup team/db",
        ),
    ];
    for (change, message) in cases {
        let mut w = World::new(1);
        let mut r = request(T0, Some(issued_direct(T0 + 3600)));
        change(&mut w, &mut r);
        let t = written(w.decide(&r));
        assert_eq!(t.status.phase, Some(Phase::Revoked), "{message}");
        assert_eq!(ready(&t).1, format!("access withdrawn: {message}"));
        assert_eq!(
            t.revoke.map(|e| e.serial),
            Some(77),
            "{message}: listed for Direct hosts"
        );
    }
    // An edit that still covers the request changes nothing.
    let mut w = World::new(1);
    w.policies[0].spec.max_duration = "10m".into();
    w.policies[0].spec.logins.push("postgres".into());
    assert!(matches!(
        w.decide(&request(T0, Some(issued_direct(T0 + 3600)))),
        Decision::Wait(Some(_))
    ));
}

#[test]
fn a_namespace_that_revoked_too_many_direct_certificates_waits_for_them_to_expire() {
    let mut w = World::new(0);
    w.host_group = Some(host_group(gatehouse_crds::HostGroupMode::Direct));
    w.revoked_in_namespace = 1000;
    let t = written(w.decide(&request(T0, None)));
    assert_eq!(t.status.phase, Some(Phase::Pending));
    assert!(
        ready(&t)
            .1
            .contains("holds 1000 revoked Direct certificates"),
        "{}",
        ready(&t).1
    );
    assert_eq!(t.requeue, Some(Duration::from_secs(30)));
    // Proxied certificates are never listed, so they are never held back.
    w.host_group = Some(host_group(gatehouse_crds::HostGroupMode::Proxied));
    assert!(matches!(w.decide(&request(T0, None)), Decision::Issue(_)));
}
