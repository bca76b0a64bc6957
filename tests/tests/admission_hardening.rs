//! Admission's own boundaries: the webhook answers only the API server (client-certificate
//! authentication, as `control-plane.sh`'s AdmissionConfiguration sets up), and the decision
//! seal key rotates without a single approval being lost.

use std::time::Duration;

use gatehouse_crds::{
    Phase,
    contract::{annotations, secrets},
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
use serde_json::json;

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
    let records: serde_json::Value = serde_json::from_str(
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
