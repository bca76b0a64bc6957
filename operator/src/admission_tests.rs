use super::*;
use crate::decisions::SealKey;
use gatehouse_crds::{AccessRequestSpec, AccessRequestStatus, Phase, Target};
use kube::api::ObjectMeta;

fn key() -> SealKeys {
    SealKeys::single(SealKey::new(vec![3; SealKey::LEN]))
}

fn caller(name: &str) -> Caller {
    Caller {
        username: name.to_owned(),
        uid: Some(format!("uid-{name}")),
        groups: vec!["sre-leads".to_owned()],
        operator: false,
    }
}

fn request(
    annotations: &[(&str, &str)],
    phase: Option<Phase>,
    policy: Option<&str>,
) -> AccessRequest {
    AccessRequest {
        metadata: ObjectMeta {
            name: Some("r1".into()),
            namespace: Some("team".into()),
            uid: Some("req-uid".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: AccessRequestSpec {
            target: Target {
                host_group: "db".into(),
                host: None,
            },
            login: "ubuntu".into(),
            duration: "1h".into(),
            reason: None,
            public_key: "ssh-ed25519 AAAA".into(),
            requester: Some(caller("alice").as_requester()),
        },
        status: Some(AccessRequestStatus {
            phase,
            policy: policy.map(str::to_owned),
            ..Default::default()
        }),
    }
}

fn approved_by(users: &[&str]) -> AccessRequest {
    let mut object = request(&[], Some(Phase::Pending), Some("oncall"));
    for user in users {
        object = record_decision(
            &object,
            &caller(user),
            DecisionKind::Approve,
            None,
            "2026-11-22T10:00:00Z",
            &key(),
        );
    }
    object
}

fn with_annotation(object: &AccessRequest, key_: &str, value: &str) -> AccessRequest {
    let mut out = object.clone();
    out.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key_.to_owned(), value.to_owned());
    out
}

fn denial(plan: Plan) -> String {
    match plan {
        Plan::Deny(message) => message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn create_stamps_the_caller_and_refuses_a_forged_requester() {
    let mut object = request(&[], None, None);
    object.spec.requester = None;
    assert_eq!(
        plan_create(&caller("alice"), &object),
        Plan::StampRequester(caller("alice").as_requester())
    );
    object.spec.requester = Some(caller("bob").as_requester());
    let message = denial(plan_create(&caller("alice"), &object));
    assert!(
        message.starts_with("spec.requester is set by admission"),
        "{message}"
    );
    assert!(
        message.contains("\"bob\"") && message.contains("\"alice\""),
        "{message}"
    );
    object.spec.requester = Some(caller("alice").as_requester());
    assert_eq!(
        plan_create(&caller("alice"), &object),
        Plan::StampRequester(caller("alice").as_requester()),
        "an exact self-stamp is accepted (and stamped again, with the finalizer)"
    );
    let mut stamped = object.clone();
    add_revocation_finalizer(&mut stamped);
    add_revocation_finalizer(&mut stamped);
    assert_eq!(
        stamped.metadata.finalizers,
        Some(vec!["gatehouse.dev/revocation".to_owned()])
    );
    // What the mutating stage produced passes the validating stage.
    assert_eq!(validate(&caller("alice"), None, &stamped, &key()), None);
}

#[test]
fn create_refuses_smuggled_decisions() {
    for annotation in [
        "gatehouse.dev/approve",
        "gatehouse.dev/deny",
        "gatehouse.dev/revoke",
        DECISIONS,
    ] {
        let mut object = request(&[(annotation, "x")], None, None);
        object.spec.requester = None;
        let message = denial(plan_create(&caller("alice"), &object));
        assert!(
            message.contains(&format!("metadata.annotations[{annotation}] cannot be set")),
            "{message}"
        );
    }
}

#[test]
fn approve_needs_the_policy_approver_and_records_a_sealed_decision() {
    let old = request(&[], Some(Phase::Pending), Some("oncall"));
    let new = with_annotation(&old, "gatehouse.dev/approve", "looks fine");
    let plan = plan_update(&caller("bob"), &old, &new, &key());
    assert_eq!(
        plan,
        Plan::Decide {
            kind: DecisionKind::Approve,
            message: Some("looks fine".into()),
            authority: Authority::ApproverOf {
                policy: "oncall".into()
            }
        }
    );
    let out = record_decision(
        &new,
        &caller("bob"),
        DecisionKind::Approve,
        Some("looks fine"),
        "2026-11-22T10:00:00Z",
        &key(),
    );
    let annotations = out.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key("gatehouse.dev/approve"),
        "the trigger is consumed"
    );
    let tally = decisions::tally(
        &key(),
        "req-uid",
        Some("alice"),
        annotations.get(DECISIONS).map(String::as_str),
    );
    assert_eq!(tally.approvals.len(), 1);
    assert_eq!(tally.approvals[0].user, "bob");
    assert_eq!(tally.approvals[0].message.as_deref(), Some("looks fine"));
    assert_eq!(validate(&caller("bob"), Some(&old), &out, &key()), None);
    assert!(
        validate(&caller("carol"), Some(&old), &out, &key()).is_some(),
        "record names another user"
    );
}

#[test]
fn self_approval_and_self_denial_are_refused_but_self_revoke_is_allowed() {
    let old = request(&[], Some(Phase::Pending), Some("oncall"));
    for (annotation, verb) in [
        ("gatehouse.dev/approve", "approve"),
        ("gatehouse.dev/deny", "deny"),
    ] {
        let message = denial(plan_update(
            &caller("alice"),
            &old,
            &with_annotation(&old, annotation, ""),
            &key(),
        ));
        assert_eq!(
            message,
            format!(
                "alice requested AccessRequest team/r1 and cannot {verb} it: another approver must (four-eyes)"
            )
        );
    }
    let plan = plan_update(
        &caller("alice"),
        &old,
        &with_annotation(&old, "gatehouse.dev/revoke", "done"),
        &key(),
    );
    assert_eq!(
        plan,
        Plan::Decide {
            kind: DecisionKind::Revoke,
            message: Some("done".into()),
            authority: Authority::None
        }
    );
    let plan = plan_update(
        &caller("bob"),
        &old,
        &with_annotation(&old, "gatehouse.dev/revoke", ""),
        &key(),
    );
    assert_eq!(
        plan,
        Plan::Decide {
            kind: DecisionKind::Revoke,
            message: None,
            authority: Authority::ApproverOf {
                policy: "oncall".into()
            }
        }
    );
}

#[test]
fn issued_requests_take_only_revocation() {
    let old = request(&[], Some(Phase::Issued), Some("oncall"));
    for (annotation, verb) in [
        ("gatehouse.dev/approve", "approve"),
        ("gatehouse.dev/deny", "deny"),
    ] {
        let message = denial(plan_update(
            &caller("bob"),
            &old,
            &with_annotation(&old, annotation, ""),
            &key(),
        ));
        assert_eq!(
            message,
            format!(
                "AccessRequest team/r1 is already Issued: it takes no further {verb}; use gatehouse.dev/revoke to end it"
            )
        );
    }
    let revoke = plan_update(
        &caller("bob"),
        &old,
        &with_annotation(&old, "gatehouse.dev/revoke", "x"),
        &key(),
    );
    assert!(
        matches!(
            revoke,
            Plan::Decide {
                kind: DecisionKind::Revoke,
                ..
            }
        ),
        "{revoke:?}"
    );
}

#[test]
fn double_approval_is_refused() {
    let old = approved_by(&["bob"]);
    let message = denial(plan_update(
        &caller("bob"),
        &old,
        &with_annotation(&old, "gatehouse.dev/approve", ""),
        &key(),
    ));
    assert!(
        message.starts_with("bob has already approved AccessRequest team/r1"),
        "{message}"
    );
    assert!(matches!(
        plan_update(
            &caller("carol"),
            &old,
            &with_annotation(&old, "gatehouse.dev/approve", ""),
            &key()
        ),
        Plan::Decide { .. }
    ));
}

#[test]
fn forged_or_removed_records_are_refused() {
    let old = approved_by(&["bob"]);
    let forged = with_annotation(&old, DECISIONS, "[]");
    let message = denial(plan_update(&caller("carol"), &old, &forged, &key()));
    assert!(message.starts_with(
        "metadata.annotations[gatehouse.dev/decisions] is written by Gatehouse admission only"
    ));
    let mut removed = old.clone();
    removed.metadata.annotations = None;
    assert!(matches!(
        plan_update(&caller("carol"), &old, &removed, &key()),
        Plan::Deny(_)
    ));
    // The validating stage catches a record another mutating webhook could have slipped in.
    let fake = record_decision(
        &old,
        &caller("carol"),
        DecisionKind::Approve,
        None,
        "t",
        &SealKeys::single(SealKey::new(vec![9; 32])),
    );
    assert!(validate(&caller("carol"), Some(&old), &fake, &key()).is_some());
}

#[test]
fn ended_requests_accept_no_more_decisions() {
    for phase in [Phase::Denied, Phase::Expired, Phase::Revoked, Phase::Failed] {
        let old = request(&[], Some(phase), Some("oncall"));
        let message = denial(plan_update(
            &caller("bob"),
            &old,
            &with_annotation(&old, "gatehouse.dev/approve", ""),
            &key(),
        ));
        assert_eq!(
            message,
            format!(
                "AccessRequest team/r1 is already {phase:?}: it accepts no further approve (create a new AccessRequest)"
            )
        );
    }
    // A sealed deny ends it at once, before the operator has written the phase.
    let pending = request(&[], Some(Phase::Pending), Some("oncall"));
    let denied = record_decision(
        &pending,
        &caller("bob"),
        DecisionKind::Deny,
        Some("no"),
        "t",
        &key(),
    );
    let message = denial(plan_update(
        &caller("carol"),
        &denied,
        &with_annotation(&denied, "gatehouse.dev/approve", ""),
        &key(),
    ));
    assert!(message.contains("is already Denied"), "{message}");
}

#[test]
fn unrelated_updates_pass_and_odd_triggers_are_explained() {
    let old = approved_by(&["bob"]);
    assert_eq!(
        plan_update(
            &caller("alice"),
            &old,
            &with_annotation(&old, "team", "x"),
            &key()
        ),
        Plan::Allow
    );
    let both = with_annotation(
        &with_annotation(&old, "gatehouse.dev/approve", ""),
        "gatehouse.dev/deny",
        "",
    );
    assert!(
        denial(plan_update(&caller("carol"), &old, &both, &key())).starts_with("set only one of")
    );
    let long = "x".repeat(MAX_MESSAGE_LEN + 1);
    let message = denial(plan_update(
        &caller("carol"),
        &old,
        &with_annotation(&old, "gatehouse.dev/approve", &long),
        &key(),
    ));
    assert_eq!(
        message,
        "metadata.annotations[gatehouse.dev/approve] must be at most 1024 characters"
    );
    let no_policy = request(&[], None, None);
    let message = denial(plan_update(
        &caller("bob"),
        &no_policy,
        &with_annotation(&no_policy, "gatehouse.dev/approve", ""),
        &key(),
    ));
    assert!(
        message.contains("has no governing policy yet (status.policy is empty)"),
        "{message}"
    );
}

#[test]
fn validate_checks_the_stamped_requester_on_create() {
    let mut object = request(&[], None, None);
    add_revocation_finalizer(&mut object);
    assert_eq!(validate(&caller("alice"), None, &object, &key()), None);
    assert!(validate(&caller("bob"), None, &object, &key()).is_some_and(|m| m.contains("\"bob\"")));
}

/// What a mutating step after Gatehouse's may have done to a new request, and the words
/// validation refuses it with (`None`: stored).
#[test]
fn validate_refuses_what_a_later_mutation_did_on_create() {
    let mut stamped = request(&[], None, None);
    add_revocation_finalizer(&mut stamped);
    let with = |change: fn(&mut AccessRequest)| {
        let mut object = stamped.clone();
        change(&mut object);
        validate(&caller("alice"), None, &object, &key())
    };
    type Case = (&'static str, fn(&mut AccessRequest), Option<&'static str>);
    let cases: [Case; 9] = [
        ("unchanged", |_| {}, None),
        (
            "a user label",
            |o| {
                o.metadata.labels = Some([("team".to_owned(), "db".to_owned())].into());
            },
            None,
        ),
        (
            "another requester",
            |o| {
                o.spec.requester = Some(caller("bob").as_requester());
            },
            Some("spec.requester must be the authenticated user \"alice\""),
        ),
        (
            "the requester removed",
            |o| o.spec.requester = None,
            Some("spec.requester must be the authenticated user"),
        ),
        (
            "the finalizer removed",
            |o| o.metadata.finalizers = None,
            Some(
                "metadata.finalizers of a new AccessRequest team/r1 must be exactly [gatehouse.dev/revocation]",
            ),
        ),
        (
            "another finalizer added",
            |o| {
                o.metadata
                    .finalizers
                    .get_or_insert_with(Vec::new)
                    .push("example.com/keep".to_owned());
            },
            Some("metadata.finalizers of AccessRequest team/r1 are managed by Gatehouse only"),
        ),
        (
            "a decisions record",
            |o| {
                o.metadata.annotations = Some([(DECISIONS.to_owned(), "[]".to_owned())].into());
            },
            Some(
                "metadata.annotations[gatehouse.dev/decisions] cannot be set when an AccessRequest is created",
            ),
        ),
        (
            "an approve trigger",
            |o| {
                o.metadata.annotations =
                    Some([("gatehouse.dev/approve".to_owned(), "ok".to_owned())].into());
            },
            Some("metadata.annotations[gatehouse.dev/approve] cannot be set"),
        ),
        (
            "a gatehouse.dev/ label",
            |o| {
                o.metadata.labels =
                    Some([("gatehouse.dev/approved".to_owned(), "true".to_owned())].into());
            },
            Some("metadata.labels with prefix gatehouse.dev/"),
        ),
    ];
    for (what, change, want) in cases {
        let got = with(change);
        match want {
            None => assert_eq!(got, None, "{what}"),
            Some(want) => assert!(
                got.as_deref().is_some_and(|m| m.contains(want)),
                "{what}: {got:?} lacks {want:?}"
            ),
        }
    }
}

#[test]
fn a_request_belongs_to_its_requester_its_approvers_and_the_operator() {
    let old = approved_by(&["bob"]);
    let labelled = {
        let mut r = old.clone();
        r.metadata.labels = Some([("owner".to_owned(), "alice".to_owned())].into());
        r
    };
    // The requester may keep their own labels; anyone else must be an approver of the policy.
    assert_eq!(
        plan_update(&caller("alice"), &old, &labelled, &key()),
        Plan::Allow
    );
    assert_eq!(
        plan_update(&caller("dave"), &old, &labelled, &key()),
        Plan::AllowIf(Authority::ApproverOf {
            policy: "oncall".into()
        })
    );
    let message = not_yours(&caller("dave"), &old, "oncall");
    assert!(
        message.starts_with(
            "dave may not change AccessRequest team/r1: only its requester, its approvers"
        ),
        "{message}"
    );

    // Nobody but the operator touches the lifecycle metadata, not even the requester.
    let mut finalized = old.clone();
    finalized.metadata.finalizers = Some(vec!["gatehouse.dev/revocation".into()]);
    let message = denial(plan_update(&caller("alice"), &old, &finalized, &key()));
    assert!(
        message.starts_with("metadata.finalizers of AccessRequest team/r1"),
        "{message}"
    );
    let operator = Caller {
        operator: true,
        ..caller("system:serviceaccount:gatehouse-system:gatehouse-operator")
    };
    assert_eq!(
        plan_update(&operator, &old, &finalized, &key()),
        Plan::Allow
    );

    // The validating webhook holds the same line for the final object.
    assert!(
        validate(&caller("alice"), Some(&old), &finalized, &key())
            .is_some_and(|m| m.contains("metadata.finalizers"))
    );
    assert_eq!(validate(&operator, Some(&old), &finalized, &key()), None);
}

#[test]
fn the_operator_is_recognised_by_its_authenticated_name_only() {
    let info = UserInfo {
        username: Some("system:serviceaccount:gatehouse-system:gatehouse-operator".into()),
        ..Default::default()
    };
    assert!(
        Caller::from_user_info(
            &info,
            "system:serviceaccount:gatehouse-system:gatehouse-operator"
        )
        .operator
    );
    assert!(
        !Caller::from_user_info(&info, "system:serviceaccount:other:gatehouse-operator").operator
    );
    assert!(
        !Caller::from_user_info(&UserInfo::default(), "").operator,
        "an empty name is nobody"
    );
}

#[path = "admission_cap_tests.rs"]
mod cap;
