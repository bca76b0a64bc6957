//! The per-requester open-request cap (`spec.maxOpenRequestsPerRequester`).

use super::*;
use gatehouse_crds::{AccessPolicy, HostGroup};

fn capped_policy(name: &str, cap: Option<i32>, subject_group: &str) -> AccessPolicy {
    let mut policy: AccessPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "subjects": [{"kind": "Group", "name": subject_group}],
            "hostSelector": {"matchLabels": {"env": "prod"}},
            "logins": ["ubuntu"],
            "approval": {"required": 1},
        },
    }))
    .unwrap();
    policy.spec.max_open_requests_per_requester = cap;
    policy
}

fn prod_group(namespace: &str) -> HostGroup {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "HostGroup",
        "metadata": {"name": "db", "namespace": namespace, "labels": {"env": "prod"}},
        "spec": {"hosts": [{"name": "db1", "address": "10.0.0.1", "hostKeys": ["ssh-ed25519 AAAA"]}]},
    }))
    .unwrap()
}

/// An existing request `name` of `who` in `namespace`, in `phase` under `policy`.
fn existing(
    name: &str,
    who: &str,
    namespace: &str,
    phase: Option<Phase>,
    policy: Option<&str>,
) -> AccessRequest {
    let mut r = request(&[], phase, policy);
    r.metadata.name = Some(name.to_owned());
    r.metadata.namespace = Some(namespace.to_owned());
    r.spec.requester = Some(caller(who).as_requester());
    if let Some(status) = r.status.as_mut() {
        status.certificate = Some("ssh-ed25519-cert-v01@openssh.com AAAA".to_owned());
    }
    r
}

#[test]
fn open_means_not_terminal_and_not_being_deleted() {
    for (phase, deleting, open) in [
        (None, false, true),
        (Some(Phase::Pending), false, true),
        (Some(Phase::Issued), false, true),
        (Some(Phase::Denied), false, false),
        (Some(Phase::Expired), false, false),
        (Some(Phase::Revoked), false, false),
        (Some(Phase::Failed), false, false),
        (Some(Phase::Issued), true, false),
        (Some(Phase::Pending), true, false),
    ] {
        let mut r = existing("r", "alice", "team", phase, Some("oncall"));
        if deleting {
            r.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-11-22T10:00:00Z".parse().unwrap(),
                ));
        }
        assert_eq!(is_open(&r), open, "{phase:?} deleting={deleting}");
        keep_for_open_request_cap(&mut r);
        assert_eq!(
            is_open(&r),
            open,
            "kept for the cap: {phase:?} deleting={deleting}"
        );
    }
}

#[test]
fn the_open_request_cap_counts_the_requesters_open_requests_under_the_governing_policy() {
    use Phase::*;
    let alice = caller("alice").as_requester();
    let new = {
        let mut r = request(&[], None, None);
        r.metadata.name = Some("new".into());
        r.status = None;
        r
    };
    let groups = [prod_group("team")];
    // (cap, existing requests, refused?)
    let cases: Vec<(&str, Option<i32>, Vec<AccessRequest>, bool)> = vec![
        (
            "no cap",
            None,
            vec![existing("a", "alice", "team", Some(Pending), Some("oncall")); 3],
            false,
        ),
        (
            "under the cap",
            Some(2),
            vec![existing("a", "alice", "team", Some(Issued), Some("oncall"))],
            false,
        ),
        (
            "at the cap: Pending and Issued count",
            Some(2),
            vec![
                existing("a", "alice", "team", Some(Pending), Some("oncall")),
                existing("b", "alice", "team", Some(Issued), Some("oncall")),
            ],
            true,
        ),
        (
            "not reconciled yet counts (it may end up under this policy)",
            Some(1),
            vec![existing("a", "alice", "team", None, None)],
            true,
        ),
        (
            "terminal ones do not count",
            Some(1),
            vec![
                existing("a", "alice", "team", Some(Denied), Some("oncall")),
                existing("b", "alice", "team", Some(Expired), Some("oncall")),
                existing("c", "alice", "team", Some(Revoked), Some("oncall")),
                existing("d", "alice", "team", Some(Failed), Some("oncall")),
            ],
            false,
        ),
        (
            "other requesters do not count",
            Some(1),
            vec![existing("a", "bob", "team", Some(Pending), Some("oncall"))],
            false,
        ),
        (
            "other namespaces do not count",
            Some(1),
            vec![existing(
                "a",
                "alice",
                "other",
                Some(Pending),
                Some("oncall"),
            )],
            false,
        ),
        (
            "requests under another policy do not count",
            Some(1),
            vec![existing(
                "a",
                "alice",
                "team",
                Some(Issued),
                Some("break-glass"),
            )],
            false,
        ),
    ];
    for (what, cap, requests, refused) in cases {
        let policies = [capped_policy("oncall", cap, "sre-leads")];
        let verdict = open_request_cap(&alice, &new, &policies, &groups, &requests);
        assert_eq!(verdict.is_some(), refused, "{what}: {verdict:?}");
        // The webhook's cache keeps only what the cap reads: the same verdict, word for word.
        let mut kept = requests.clone();
        kept.iter_mut().for_each(keep_for_open_request_cap);
        assert!(
            kept.iter().all(
                |r| r.status.as_ref().is_none_or(|s| s.certificate.is_none())
                    && r.spec.public_key.is_empty()
            ),
            "{what}: {kept:?}"
        );
        assert_eq!(
            open_request_cap(&alice, &new, &policies, &groups, &kept),
            verdict,
            "{what}: kept for the cap"
        );
        if let Some(message) = verdict {
            assert!(
                message.contains("AccessPolicy team/oncall")
                    && message.contains(&format!(
                        "spec.maxOpenRequestsPerRequester: {}",
                        cap.unwrap()
                    ))
                    && message.contains("alice already has"),
                "{what}: {message}"
            );
        }
    }
}

#[test]
fn the_cap_follows_the_policy_the_operator_would_choose() {
    let alice = caller("alice").as_requester();
    let mut new = request(&[], None, None);
    new.status = None;
    let groups = [prod_group("team")];
    let two = vec![
        existing("a", "alice", "team", Some(Phase::Pending), Some("oncall")),
        existing("b", "alice", "team", Some(Phase::Pending), Some("oncall")),
    ];
    // A policy alice is not a subject of caps nothing for her.
    let not_hers = [capped_policy("oncall", Some(1), "dba")];
    assert_eq!(
        open_request_cap(&alice, &new, &not_hers, &groups, &two),
        None
    );
    // Without the HostGroup no policy governs: the operator denies, admission does not count.
    let hers = [capped_policy("oncall", Some(1), "sre-leads")];
    let none: [HostGroup; 0] = [];
    assert_eq!(open_request_cap(&alice, &new, &hers, &none, &two), None);
    assert_eq!(
        open_request_cap(&alice, &new, &hers, &[prod_group("other")], &two),
        None
    );
    // Several open requests: the message lists them, bounded.
    let many: Vec<AccessRequest> = (0..8)
        .map(|i| {
            existing(
                &format!("r{i}"),
                "alice",
                "team",
                Some(Phase::Pending),
                Some("oncall"),
            )
        })
        .collect();
    let message = open_request_cap(&alice, &new, &hers, &groups, &many).unwrap();
    assert!(
        message.contains("alice already has 8 (r0, r1, r2, r3, r4, and 3 more)"),
        "{message}"
    );
}
