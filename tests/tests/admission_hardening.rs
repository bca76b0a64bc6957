//! Admission's own boundaries: the webhook answers only the API server (client-certificate
//! authentication, as `control-plane.sh`'s AdmissionConfiguration sets up), the decision
//! seal key rotates without a single approval being lost, and whatever mutates a new request
//! after Gatehouse's webhook cannot change who asked or what Gatehouse owns (the validating
//! webhook sees the final object).

use std::time::Duration;

use gatehouse_crds::{
    Phase,
    contract::{self, annotations, secrets},
};
use gatehouse_tests::{
    Cmd, SYSTEM_NAMESPACE, User, control_plane,
    scenario::{self, Scenario, Setup},
    wait_for,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

/// A forged AdmissionReview asking the webhook to seal bob's approval of a made-up request.
fn forged_review() -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "forged", "operation": "UPDATE", "namespace": "team", "name": "r1",
            "kind": {"group": "gatehouse.dev", "version": "v1alpha1", "kind": "AccessRequest"},
            "resource": {"group": "gatehouse.dev", "version": "v1alpha1", "resource": "accessrequests"},
            "userInfo": {"username": "bob", "groups": ["sre-leads"]},
            "object": {"apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": "r1", "namespace": "team", "uid": "u1",
                             "annotations": {annotations::APPROVE: "forged"}},
                "spec": {"target": {"hostGroup": "db"}, "login": "ubuntu", "publicKey": "k",
                         "requester": {"username": "alice"}},
                "status": {"phase": "Pending", "policy": "oncall"}},
            "oldObject": {"apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": "r1", "namespace": "team", "uid": "u1"},
                "spec": {"target": {"hostGroup": "db"}, "login": "ubuntu", "publicKey": "k",
                         "requester": {"username": "alice"}},
                "status": {"phase": "Pending", "policy": "oncall"}},
        }
    })
    .to_string()
}

#[tokio::test]
async fn the_webhook_answers_only_the_api_server() {
    let cp = control_plane();
    let operator = cp.shared_operator();
    let url = format!("https://127.0.0.1:{}/mutate", operator.webhook_port);
    let pki = cp.dir().join("pki");
    let post = |extra: &[&str]| {
        Cmd::new("curl")
            .args([
                "-sS",
                "--insecure",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .args(extra)
            .args(["--data-binary", &forged_review(), &url])
            .run()
    };
    // Anyone who merely reaches the port: no client certificate, no answer, no sealed record.
    let anonymous = post(&[]);
    assert!(!anonymous.success, "{anonymous:?}");
    assert!(!anonymous.stdout.contains("patch"), "{anonymous:?}");
    // A certificate from another CA (the cluster admin's own) is no better.
    let admin = pki.join("admin.crt").display().to_string();
    let admin_key = pki.join("admin.key").display().to_string();
    let other = post(&["--cert", &admin, "--key", &admin_key]);
    assert!(!other.success, "{other:?}");
    assert!(!other.stdout.contains("patch"), "{other:?}");
    // The API server's webhook client certificate is answered (and the forgery is still only a
    // request: admission would check bob against RBAC, then the record seals only for uid u1).
    let apiserver = pki.join("webhook-client.crt").display().to_string();
    let apiserver_key = pki.join("webhook-client.key").display().to_string();
    let answered = post(&["--cert", &apiserver, "--key", &apiserver_key]);
    assert!(answered.stdout.contains("\"response\""), "{answered:?}");
}

#[tokio::test]
async fn rotating_the_seal_key_loses_no_approval() {
    let cp = control_plane();
    let s = Scenario::new(
        cp,
        "seal-rotation",
        &Setup {
            approvals: 2,
            ..Setup::default()
        },
    )
    .await;
    s.apply(
        cp,
        User::Alice,
        &scenario::request("r1", "ubuntu", &scenario::public_key()),
    )
    .ok();
    s.wait_phase("r1", Phase::Pending, Duration::from_secs(10))
        .await;
    s.annotate(cp, User::Bob, "r1", annotations::APPROVE, "before")
        .ok();

    // Ask for a rotation; the leader makes a new key version and retires the old one.
    let secrets_api: Api<Secret> = Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    let before = secrets_api.get(secrets::ADMISSION).await.unwrap();
    let versions = |s: &Secret| -> Vec<String> {
        let mut keys: Vec<String> = s
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .filter(|k| k.starts_with("seal.key"))
            .collect();
        keys.sort();
        keys
    };
    let old_versions = versions(&before);
    let ask = json!({"metadata": {"annotations": {"gatehouse.dev/rotate-seal-key": "test"}}});
    secrets_api
        .patch(
            secrets::ADMISSION,
            &PatchParams::default(),
            &Patch::Merge(&ask),
        )
        .await
        .unwrap();
    let rotated = wait_for(
        Duration::from_secs(30),
        "the seal key to rotate",
        || async {
            let secret = secrets_api.get(secrets::ADMISSION).await.ok()?;
            let asked = secret
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("gatehouse.dev/rotate-seal-key"));
            (!asked && versions(&secret).len() > old_versions.len()).then_some(secret)
        },
    )
    .await;
    let newest = versions(&rotated).into_iter().max_by_key(|k| {
        k.rsplit('v')
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1)
    });

    // Carol approves with the new key; bob's approval under the old one still counts.
    s.annotate(cp, User::Carol, "r1", annotations::APPROVE, "after")
        .ok();
    let issued = s
        .wait_phase("r1", Phase::Issued, Duration::from_secs(10))
        .await;
    let approvers: Vec<String> = issued
        .status
        .clone()
        .unwrap_or_default()
        .approvals
        .into_iter()
        .map(|a| a.user)
        .collect();
    assert_eq!(approvers, ["bob", "carol"]);
    let records: Value = serde_json::from_str(
        &issued.metadata.annotations.unwrap_or_default()[annotations::DECISIONS],
    )
    .unwrap();
    let carol = &records[1];
    assert_eq!(carol["user"], "carol");
    let version = newest.and_then(|k| k.rsplit('v').next().and_then(|v| v.parse::<u64>().ok()));
    assert_eq!(carol["keyVersion"].as_u64(), version, "{records}");
    assert_ne!(
        records[0]["keyVersion"], records[1]["keyVersion"],
        "{records}"
    );
}

/// How the API server prefixes a refusal of the Gatehouse validating webhook.
const VALIDATING_DENIED: &str =
    "admission webhook \"validate.accessrequests.gatehouse.dev\" denied the request: ";

/// A MutatingAdmissionPolicy that, in namespace `ns` only, rewrites a new AccessRequest after
/// Gatehouse's webhook has stamped it (`reinvocationPolicy: IfNeeded`: the API server calls it
/// again once a later step, the webhook, has changed the object), as its `attack` label says:
/// another requester, no finalizer, or a decisions annotation. A cluster's own policy engine, or
/// a compromised one, in the place every mutating step after Gatehouse's has.
fn later_mutator(name: &str, ns: &str) -> (Value, Value) {
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["gatehouse.dev"], "apiVersions": ["*"],
                "resources": ["accessrequests"], "operations": ["CREATE"],
            }]},
            "matchConditions": [{
                "name": "labelled-in-this-namespace",
                "expression": format!(
                    "request.namespace == '{ns}' && \
                     has(object.metadata.labels) && 'attack' in object.metadata.labels"
                ),
            }],
            "mutations": [{
                "patchType": "JSONPatch",
                // Nothing on its first call (before Gatehouse's webhook has stamped the request),
                // so that the API server calls it again afterwards.
                "jsonPatch": {"expression": "\
                    !has(object.spec.requester) ? [] : \
                    object.metadata.labels['attack'] == 'requester' ? \
                      [JSONPatch{op: 'replace', path: '/spec/requester/username', value: 'bob'}] : \
                    object.metadata.labels['attack'] == 'finalizer' ? \
                      (has(object.metadata.finalizers) ? [JSONPatch{op: 'remove', path: '/metadata/finalizers'}] : []) : \
                    object.metadata.labels['attack'] == 'decisions' ? \
                      [JSONPatch{op: 'add', path: '/metadata/annotations', value: {'gatehouse.dev/decisions': '[]'}}] : \
                    []"},
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name},
    });
    (policy, binding)
}

#[tokio::test]
async fn a_mutation_after_gatehouse_cannot_change_who_asked() {
    let cp = control_plane();
    let s = Scenario::new(cp, "later-mutator", &Setup::default()).await;
    let name = format!("gatehouse-test-later-mutator-{}", s.ns);
    let (policy, binding) = later_mutator(&name, &s.ns);
    cp.apply_as(User::Admin, &s.ns, &policy).ok();
    cp.apply_as(User::Admin, &s.ns, &binding).ok();
    let key = scenario::public_key();
    let labelled = |request: &str, attack: &str| {
        let mut object = scenario::request(request, "ubuntu", &key);
        object["metadata"]["labels"] = json!({"attack": attack});
        object
    };
    // The policy is compiled and bound asynchronously: until it rewrites a request (and the
    // rewritten request is refused), each try is a new request, removed again.
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let refused = wait_for(
        Duration::from_secs(30),
        "the later mutator to take effect",
        || async {
            let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("as-bob-{n}");
            let out = s.apply(cp, User::Alice, &labelled(&name, "requester"));
            if out.success {
                cp.kubectl(User::Admin)
                    .args([
                        "-n",
                        &s.ns,
                        "delete",
                        "accessrequest",
                        &name,
                        "--wait=false",
                    ])
                    .run()
                    .ok();
                tokio::time::sleep(Duration::from_millis(200)).await;
                return None;
            }
            Some(out)
        },
    )
    .await;
    refused.fails_with(&[
        VALIDATING_DENIED,
        "spec.requester must be the authenticated user \"alice\"",
    ]);
    s.apply(cp, User::Alice, &labelled("no-finalizer", "finalizer"))
        .fails_with(&[
            VALIDATING_DENIED,
            "metadata.finalizers of a new AccessRequest",
            "must be exactly [gatehouse.dev/revocation]",
        ]);
    s.apply(cp, User::Alice, &labelled("forged-decisions", "decisions"))
        .fails_with(&[
            VALIDATING_DENIED,
            "metadata.annotations[gatehouse.dev/decisions] cannot be set when an AccessRequest is created",
        ]);
    // Nothing of the refused requests was stored.
    let attempted = attempts.load(std::sync::atomic::Ordering::Relaxed);
    let refused_name = format!("as-bob-{}", attempted - 1);
    for name in [refused_name.as_str(), "no-finalizer", "forged-decisions"] {
        cp.kubectl(User::Admin)
            .args(["-n", &s.ns, "get", "accessrequest", name])
            .run()
            .fails_with(&["NotFound"]);
    }

    // The same request the mutator leaves alone is created, stamped with alice, with the
    // finalizer, and goes on to Pending.
    s.apply(cp, User::Alice, &labelled("untouched", "none"))
        .ok();
    let pending = s
        .wait_phase("untouched", Phase::Pending, Duration::from_secs(10))
        .await;
    let requester = pending.spec.requester.as_ref().map(|r| r.username.as_str());
    assert_eq!(requester, Some("alice"));
    assert_eq!(
        pending.metadata.finalizers.as_deref(),
        Some(&[contract::REVOCATION_FINALIZER.to_owned()][..])
    );

    for kind in ["mutatingadmissionpolicybinding", "mutatingadmissionpolicy"] {
        cp.kubectl(User::Admin)
            .args(["delete", kind, &name])
            .run()
            .ok();
    }
}
