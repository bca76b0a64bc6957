//! Admission of AccessRequests against the real API server: who asked, who may approve, deny
//! or revoke, and that decision records cannot be forged. Each refusal is asserted as the API
//! server returns it to the user's own `kubectl`, next to the allowed way of doing the same.

use std::time::{Duration, Instant};

use gatehouse_crds::{
    AccessRequest, Phase,
    contract::annotations::{APPROVE, DECISIONS, DENY, REVOKE},
    rules,
};
use gatehouse_tests::{
    CmdOutput, Subject, User, control_plane,
    scenario::{self, POLICY, Scenario, Setup, condition, public_key},
    wait_for,
};
use serde_json::{Value, json};

/// How the API server prefixes a refusal of the Gatehouse mutating webhook.
const WEBHOOK_DENIED: &str =
    "admission webhook \"mutate.accessrequests.gatehouse.dev\" denied the request: ";

/// The full refusal line for a webhook `message`.
fn denied(message: &str) -> String {
    format!("{WEBHOOK_DENIED}{message}")
}

/// The refusal for a caller whose SubjectAccessReview for verb `approve` on `policy` failed.
fn not_an_approver(user: &str, verb: &str, ns: &str, policy: &str) -> String {
    denied(&format!(
        "{user} may not {verb} this request: that needs verb \"approve\" on accesspolicies.gatehouse.dev \
         \"{policy}\" in namespace \"{ns}\" (the policy that governs it)"
    ))
}

/// The refusal of any write to the decisions annotation.
fn decisions_written() -> String {
    denied(&format!(
        "metadata.annotations[{DECISIONS}] is written by Gatehouse admission only and cannot be set, \
         changed or removed: annotate with {APPROVE}, {DENY} or {REVOKE} instead"
    ))
}

/// Alice requests `name` and the operator puts it in Pending under [`POLICY`].
async fn pending_request(s: &Scenario, name: &str, public: &str) -> AccessRequest {
    let cp = control_plane();
    s.apply(cp, User::Alice, &scenario::request(name, "ubuntu", public))
        .ok();
    let pending = s
        .wait_phase(name, Phase::Pending, Duration::from_secs(10))
        .await;
    assert_eq!(
        pending.status.as_ref().and_then(|st| st.policy.as_deref()),
        Some(POLICY)
    );
    pending
}

/// `kubectl patch accessrequest NAME --type=merge -p PATCH` as `user`.
fn merge_patch(s: &Scenario, user: User, name: &str, patch: &Value) -> CmdOutput {
    control_plane()
        .kubectl(user)
        .args(["-n", s.ns.as_str(), "patch", "accessrequest", name])
        .args(["--type=merge", "-p", &patch.to_string()])
        .run()
}

fn approver_users(request: &AccessRequest) -> Vec<String> {
    request
        .status
        .as_ref()
        .map(|st| st.approvals.iter().map(|a| a.user.clone()).collect())
        .unwrap_or_default()
}

fn phase(request: &AccessRequest) -> Option<Phase> {
    request.status.as_ref().and_then(|st| st.phase)
}

/// The decision records admission wrote: (kind, user, message).
fn decision_records(request: &AccessRequest) -> Vec<(String, String, Option<String>)> {
    let Some(text) = request
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DECISIONS))
    else {
        return Vec::new();
    };
    let list: Vec<Value> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{DECISIONS} is not JSON: {e}"));
    list.iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_owned(),
                r["user"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn has_annotation(request: &AccessRequest, key: &str) -> bool {
    request
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

fn condition_message(request: &AccessRequest, type_: &str) -> Option<(String, String, String)> {
    condition(request, type_).map(|c| (c.status, c.reason, c.message))
}

/// After refused decisions, request `name` is still Pending with nothing recorded; then
/// `approver` approves it and it is Issued, approved by them alone.
async fn refused_then_approved_by(s: &Scenario, name: &str, approver: User) {
    let unchanged = s.get(name).await;
    assert_eq!(phase(&unchanged), Some(Phase::Pending));
    assert!(decision_records(&unchanged).is_empty());
    s.annotate(control_plane(), approver, name, APPROVE, "ok")
        .ok();
    let issued = s
        .wait_phase(name, Phase::Issued, Duration::from_secs(5))
        .await;
    assert_eq!(approver_users(&issued), [approver.username()]);
}

#[tokio::test]
async fn a_forged_requester_is_refused_and_admission_stamps_the_caller() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-forge", &Setup::default()).await;
    let public = public_key();

    let mut forged = scenario::request("forged", "ubuntu", &public);
    forged["spec"]["requester"] = json!({
        "username": "bob", "uid": "uid-bob", "groups": ["sre-leads", "system:authenticated"],
    });
    s.apply(cp, User::Alice, &forged).fails_with(&[&denied(
        "spec.requester is set by admission from the authenticated user and must be left empty: \
         it says \"bob\" but you are \"alice\"",
    )]);
    let stored = s.requests.get_opt("forged").await.unwrap();
    assert!(
        stored.is_none(),
        "the forged request was stored: {stored:?}"
    );

    // The same manifest without a requester is created, and the requester is alice as
    // authenticated (token file: user alice, uid uid-alice, group dev).
    s.apply(
        cp,
        User::Alice,
        &scenario::request("honest", "ubuntu", &public),
    )
    .ok();
    let created = s.get("honest").await;
    let requester = created
        .spec
        .requester
        .clone()
        .expect("spec.requester was not stamped");
    assert_eq!(requester.username, "alice");
    assert_eq!(requester.uid.as_deref(), Some("uid-alice"));
    for group in ["dev", "system:authenticated"] {
        assert!(
            requester.groups.iter().any(|g| g == group),
            "groups {:?} lack {group}",
            requester.groups
        );
    }
    s.wait_phase("honest", Phase::Pending, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn the_requester_cannot_be_edited_after_creation() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-immutable", &Setup::default()).await;
    pending_request(&s, "r1", &public_key()).await;

    for (user, patch) in [
        (
            User::Admin,
            json!({"spec": {"requester": {"username": "mallory"}}}),
        ),
        (
            User::Alice,
            json!({"spec": {"requester": {"username": "carol", "uid": "uid-carol", "groups": ["sre-leads"]}}}),
        ),
        (
            User::Alice,
            json!({"spec": {"requester": {"groups": ["dev", "system:masters"]}}}),
        ),
    ] {
        merge_patch(&s, user, "r1", &patch)
            .fails_with(&["spec: Invalid value", rules::IMMUTABLE_SPEC_MESSAGE]);
    }
    // What may change still does: alice labels her request.
    cp.kubectl(User::Alice)
        .args([
            "-n",
            s.ns.as_str(),
            "label",
            "accessrequest",
            "r1",
            "team=db",
        ])
        .run()
        .ok();
    let after = s.get("r1").await;
    let requester = after.spec.requester.expect("requester");
    assert_eq!(requester.username, "alice");
    assert_eq!(requester.uid.as_deref(), Some("uid-alice"));
    assert!(!requester.groups.iter().any(|g| g == "system:masters"));
}

#[tokio::test]
async fn the_requester_cannot_approve_or_deny_but_can_revoke() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-self", &Setup::default()).await;
    pending_request(&s, "r1", &public_key()).await;

    for (key, verb) in [(APPROVE, "approve"), (DENY, "deny")] {
        s.annotate(cp, User::Alice, "r1", key, "trust me")
            .fails_with(&[&denied(&format!(
                "alice requested AccessRequest {}/r1 and cannot {verb} it: another approver must (four-eyes)",
                s.ns
            ))]);
    }
    let unchanged = s.get("r1").await;
    assert_eq!(phase(&unchanged), Some(Phase::Pending));
    assert!(approver_users(&unchanged).is_empty());
    assert!(decision_records(&unchanged).is_empty());

    s.annotate(cp, User::Alice, "r1", REVOKE, "not needed any more")
        .ok();
    let revoked = s
        .wait_phase("r1", Phase::Revoked, Duration::from_secs(5))
        .await;
    assert_eq!(
        decision_records(&revoked),
        [(
            "revoke".to_owned(),
            "alice".to_owned(),
            Some("not needed any more".to_owned())
        )]
    );
    assert!(
        !has_annotation(&revoked, REVOKE),
        "admission left the revoke trigger annotation in place"
    );
    assert_eq!(
        condition_message(&revoked, "Ready").map(|(_, _, m)| m),
        Some("revoked by alice: not needed any more".to_owned())
    );
    assert!(approver_users(&revoked).is_empty());
}

#[tokio::test]
async fn a_user_without_the_approve_verb_cannot_approve_or_deny() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-noverb", &Setup::default()).await;
    // dave may create and patch AccessRequests here, but approve nothing.
    cp.bind(&s.ns, "gatehouse-requester", Subject::Group("dba-leads"));
    pending_request(&s, "r1", &public_key()).await;

    for (key, verb) in [(APPROVE, "approve"), (DENY, "deny")] {
        s.annotate(cp, User::Dave, "r1", key, "looks fine")
            .fails_with(&[&not_an_approver("dave", verb, &s.ns, POLICY)]);
    }
    // An approver of the policy can.
    refused_then_approved_by(&s, "r1", User::Bob).await;
}

#[tokio::test]
async fn approve_rights_on_another_policy_do_not_count() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-otherpolicy", &Setup::default()).await;
    let other = json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "other"},
        "spec": {
            "subjects": [{"kind": "Group", "name": "dba-leads"}],
            "hostSelector": {"matchLabels": {"env": "staging"}},
            "logins": ["postgres"],
            "maxDuration": "1h",
            "approval": {"required": 1},
        },
    });
    s.apply(cp, User::Admin, &other).ok();
    cp.allow_approve(&s.ns, "other", Subject::User("dave"));
    // RBAC itself agrees: dave holds approve on "other" and not on "oncall".
    let can_i = |policy: &str| {
        cp.kubectl(User::Dave)
            .args(["-n", s.ns.as_str(), "auth", "can-i", "approve"])
            .args([format!("accesspolicies.gatehouse.dev/{policy}")])
            .run()
    };
    assert_eq!(can_i("other").ok().trim(), "yes");
    let oncall = can_i(POLICY);
    assert_eq!(
        (oncall.success, oncall.stdout.trim()),
        (false, "no"),
        "{oncall:?}"
    );

    pending_request(&s, "r1", &public_key()).await;
    s.annotate(cp, User::Dave, "r1", APPROVE, "I approve policy other")
        .fails_with(&[&not_an_approver("dave", "approve", &s.ns, POLICY)]);
    refused_then_approved_by(&s, "r1", User::Carol).await;
}

#[tokio::test]
async fn the_same_approver_cannot_approve_twice() {
    let cp = control_plane();
    let setup = Setup {
        approvals: 2,
        ..Setup::default()
    };
    let s = Scenario::new(cp, "adm-twice", &setup).await;
    pending_request(&s, "r1", &public_key()).await;

    s.annotate(cp, User::Bob, "r1", APPROVE, "first").ok();
    s.annotate(cp, User::Bob, "r1", APPROVE, "and again")
        .fails_with(&[&denied(&format!(
            "bob has already approved AccessRequest {}/r1; each approval must come from a different approver",
            s.ns
        ))]);
    wait_for(
        Duration::from_secs(5),
        "status.approvals to list bob",
        || async {
            let r = s.requests.get("r1").await.ok()?;
            (approver_users(&r) == ["bob"]).then_some(())
        },
    )
    .await;
    // Retried later, still refused; the request stays Pending with one approval.
    s.annotate(cp, User::Bob, "r1", APPROVE, "third time")
        .fails_with(&[&denied(&format!(
            "bob has already approved AccessRequest {}/r1",
            s.ns
        ))]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = s.get("r1").await;
    assert_eq!(phase(&still), Some(Phase::Pending));
    assert_eq!(approver_users(&still), ["bob"]);
    assert_eq!(
        decision_records(&still),
        [(
            "approve".to_owned(),
            "bob".to_owned(),
            Some("first".to_owned())
        )]
    );
    assert!(still.status.and_then(|st| st.certificate).is_none());
}

#[tokio::test]
async fn decision_records_cannot_be_forged_removed_or_brought_along_at_create() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-records", &Setup::default()).await;
    let public = public_key();
    pending_request(&s, "r1", &public).await;

    let forged =
        r#"[{"kind":"approve","user":"carol","time":"2026-01-01T00:00:00Z","seal":"AAAA"}]"#;
    let annotate_forged = |user: User| {
        cp.kubectl(user)
            .args([
                "-n",
                s.ns.as_str(),
                "annotate",
                "--overwrite",
                "accessrequest",
            ])
            .args(["r1", &format!("{DECISIONS}={forged}")])
            .run()
    };
    // An approver cannot write a record, not even while none exists.
    annotate_forged(User::Bob).fails_with(&[&decisions_written()]);
    let untouched = s.get("r1").await;
    assert!(!has_annotation(&untouched, DECISIONS));
    assert_eq!(phase(&untouched), Some(Phase::Pending));

    // The allowed way: the approve annotation, which admission turns into a sealed record.
    s.annotate(cp, User::Bob, "r1", APPROVE, "lgtm").ok();
    let issued = s
        .wait_phase("r1", Phase::Issued, Duration::from_secs(5))
        .await;
    assert_eq!(
        decision_records(&issued),
        [(
            "approve".to_owned(),
            "bob".to_owned(),
            Some("lgtm".to_owned())
        )]
    );
    assert!(!has_annotation(&issued, APPROVE));

    // Replacing or removing the existing record is refused, for the cluster admin too.
    annotate_forged(User::Bob).fails_with(&[&decisions_written()]);
    annotate_forged(User::Admin).fails_with(&[&decisions_written()]);
    let remove = json!({"metadata": {"annotations": {DECISIONS: null}}});
    merge_patch(&s, User::Bob, "r1", &remove).fails_with(&[&decisions_written()]);
    merge_patch(&s, User::Admin, "r1", &remove).fails_with(&[&decisions_written()]);
    cp.kubectl(User::Bob)
        .args(["-n", s.ns.as_str(), "annotate", "accessrequest", "r1"])
        .args([format!("{DECISIONS}-")])
        .run()
        .fails_with(&[&decisions_written()]);
    assert_eq!(
        decision_records(&s.get("r1").await),
        decision_records(&issued)
    );

    // Decisions cannot come with the object at create.
    for key in [APPROVE, DENY, REVOKE, DECISIONS] {
        let name = format!("smuggled-{}", key.trim_start_matches("gatehouse.dev/"));
        let mut smuggled = scenario::request(&name, "ubuntu", &public);
        smuggled["metadata"]["annotations"] =
            json!({ key: if key == DECISIONS { forged } else { "self" } });
        s.apply(cp, User::Alice, &smuggled).fails_with(&[&denied(&format!(
            "metadata.annotations[{key}] cannot be set when an AccessRequest is created: \
             approvals, denials and revocations are recorded after it exists, by someone with the right to make them"
        ))]);
        let stored = s.requests.get_opt(&name).await.unwrap();
        assert!(stored.is_none(), "{name} was stored");
    }
}

#[tokio::test]
async fn no_decision_is_accepted_after_a_denial() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-afterdeny", &Setup::default()).await;
    pending_request(&s, "r1", &public_key()).await;

    s.annotate(cp, User::Bob, "r1", DENY, "change freeze").ok();
    let denied_request = s
        .wait_phase("r1", Phase::Denied, Duration::from_secs(5))
        .await;
    for (user, key, verb) in [
        (User::Carol, APPROVE, "approve"),
        (User::Bob, APPROVE, "approve"),
        (User::Carol, DENY, "deny"),
        (User::Alice, REVOKE, "revoke"),
    ] {
        s.annotate(cp, user, "r1", key, "")
            .fails_with(&[&denied(&format!(
                "AccessRequest {}/r1 is already Denied: it accepts no further {verb} (create a new AccessRequest)",
                s.ns
            ))]);
    }
    let after = s.get("r1").await;
    assert_eq!(phase(&after), Some(Phase::Denied));
    assert!(approver_users(&after).is_empty());
    assert_eq!(decision_records(&after), decision_records(&denied_request));
    assert_eq!(
        decision_records(&after),
        [(
            "deny".to_owned(),
            "bob".to_owned(),
            Some("change freeze".to_owned())
        )]
    );
}

#[tokio::test]
async fn four_eyes_two_different_approvers_issue_the_certificate() {
    let cp = control_plane();
    let setup = Setup {
        approvals: 2,
        ..Setup::default()
    };
    let s = Scenario::new(cp, "adm-foureyes", &setup).await;
    pending_request(&s, "r1", &public_key()).await;

    s.annotate(cp, User::Bob, "r1", APPROVE, "first look").ok();
    wait_for(
        Duration::from_secs(5),
        "status.approvals to list bob",
        || async {
            let r = s.requests.get("r1").await.ok()?;
            (approver_users(&r) == ["bob"]).then_some(())
        },
    )
    .await;
    // One approval of two: the request stays Pending, without a certificate.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1200) {
        let r = s.get("r1").await;
        assert_eq!(phase(&r), Some(Phase::Pending), "{:?}", r.status);
        assert_eq!(approver_users(&r), ["bob"]);
        assert!(r.status.and_then(|st| st.certificate).is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let approved_at = Instant::now();
    s.annotate(cp, User::Carol, "r1", APPROVE, "second look")
        .ok();
    let issued = s
        .wait_phase("r1", Phase::Issued, Duration::from_secs(5))
        .await;
    let latency = approved_at.elapsed();
    assert!(
        latency < Duration::from_secs(3),
        "issued {latency:?} after the second approval"
    );
    let status = issued.status.clone().unwrap_or_default();
    let approvals: Vec<(&str, Option<&str>)> = status
        .approvals
        .iter()
        .map(|a| (a.user.as_str(), a.message.as_deref()))
        .collect();
    assert_eq!(
        approvals,
        [("bob", Some("first look")), ("carol", Some("second look"))]
    );
    assert!(status.certificate.is_some());
    assert_eq!(
        condition_message(&issued, "Approved"),
        Some((
            "True".to_owned(),
            "Approved".to_owned(),
            format!("approved by bob, carol under AccessPolicy {POLICY}")
        ))
    );
}

#[tokio::test]
async fn a_service_account_can_request_access_as_itself() {
    let cp = control_plane();
    let s = Scenario::new(cp, "adm-sa", &Setup::default()).await;
    let ns = s.ns.as_str();
    cp.kubectl(User::Admin)
        .args(["-n", ns, "create", "serviceaccount", "deployer"])
        .run()
        .ok();
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployer-requester"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gatehouse-requester"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}],
    });
    cp.apply_as(User::Admin, ns, &binding).ok();
    let robots = json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "robots"},
        "spec": {
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}],
            "hostSelector": {"matchLabels": {"env": "prod"}},
            "logins": ["ubuntu"],
            "maxDuration": "1h",
            "approval": {"required": 0},
        },
    });
    cp.apply_as(User::Admin, ns, &robots).ok();
    let sa_uid = cp
        .kubectl(User::Admin)
        .args(["-n", ns, "get", "serviceaccount", "deployer"])
        .args(["-o", "jsonpath={.metadata.uid}"])
        .run()
        .ok()
        .trim()
        .to_owned();
    let token = cp
        .kubectl(User::Admin)
        .args(["-n", ns, "create", "token", "deployer"])
        .run()
        .ok()
        .trim()
        .to_owned();
    let kubeconfig = cp.service_account_kubeconfig(ns, "deployer", &token);
    let sa_apply = |object: &Value| {
        cp.kubectl_with(&kubeconfig)
            .args(["apply", "-n", ns, "-f", "-"])
            .stdin(object.to_string())
            .run()
    };
    let username = format!("system:serviceaccount:{ns}:deployer");
    let public = public_key();

    // A ServiceAccount cannot speak for someone else either.
    let mut forged = scenario::request("forged", "ubuntu", &public);
    forged["spec"]["requester"] =
        json!({"username": "alice", "uid": "uid-alice", "groups": ["dev"]});
    sa_apply(&forged).fails_with(&[&denied(&format!(
        "spec.requester is set by admission from the authenticated user and must be left empty: \
         it says \"alice\" but you are \"{username}\""
    ))]);

    sa_apply(&scenario::request("deploy", "ubuntu", &public)).ok();
    let issued = s
        .wait_phase("deploy", Phase::Issued, Duration::from_secs(10))
        .await;
    let requester = issued
        .spec
        .requester
        .clone()
        .expect("spec.requester was not stamped");
    assert_eq!(requester.username, username);
    assert_eq!(requester.uid.as_deref(), Some(sa_uid.as_str()));
    for group in [
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_owned(),
    ] {
        assert!(
            requester.groups.contains(&group),
            "groups {:?} lack {group}",
            requester.groups
        );
    }
    assert_eq!(
        issued.status.as_ref().and_then(|st| st.policy.as_deref()),
        Some("robots")
    );
    assert_eq!(
        condition_message(&issued, "Approved").map(|(_, reason, message)| (reason, message)),
        Some((
            "AutoApproved".to_owned(),
            "AccessPolicy robots requires no approval".to_owned()
        ))
    );
}

#[tokio::test]
async fn revoking_needs_the_requester_or_an_approver() {
    let cp = control_plane();
    let setup = Setup {
        approvals: 0,
        ..Setup::default()
    };
    let s = Scenario::new(cp, "adm-revoke", &setup).await;
    // dave may patch AccessRequests here, but he neither asked for this one nor approves.
    cp.bind(&s.ns, "gatehouse-requester", Subject::Group("dba-leads"));
    s.apply(
        cp,
        User::Alice,
        &scenario::request("r1", "ubuntu", &public_key()),
    )
    .ok();
    s.wait_phase("r1", Phase::Issued, Duration::from_secs(10))
        .await;

    s.annotate(cp, User::Dave, "r1", REVOKE, "I do not like it")
        .fails_with(&[&not_an_approver("dave", "revoke", &s.ns, POLICY)]);
    // mallory holds no Gatehouse role: RBAC refuses before admission runs (kubectl reads the
    // object first, so the refusal names get).
    s.annotate(cp, User::Mallory, "r1", REVOKE, "nope").fails_with(&[
        "forbidden",
        "User \"mallory\" cannot get resource \"accessrequests\" in API group \"gatehouse.dev\"",
    ]);
    let still = s.get("r1").await;
    assert_eq!(phase(&still), Some(Phase::Issued));
    assert!(decision_records(&still).is_empty());

    s.annotate(cp, User::Bob, "r1", REVOKE, "incident over")
        .ok();
    let revoked = s
        .wait_phase("r1", Phase::Revoked, Duration::from_secs(5))
        .await;
    assert_eq!(
        decision_records(&revoked),
        [(
            "revoke".to_owned(),
            "bob".to_owned(),
            Some("incident over".to_owned())
        )]
    );
    assert_eq!(
        condition_message(&revoked, "Ready").map(|(_, _, m)| m),
        Some("revoked by bob: incident over".to_owned())
    );
}
