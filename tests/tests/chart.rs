//! `helm install` of charts/gatehouse against the real API server, and what its user
//! ClusterRoles grant, proven with `kubectl auth can-i` run by each real user.

use gatehouse_crds::contract::{published, secrets};
use gatehouse_tests::{
    GATEHOUSE_CRDS, RELEASE, SYSTEM_NAMESPACE, User, control_plane,
    install::{OPERATOR_SERVICE_ACCOUNT as OPERATOR, PROXY_SERVICE_ACCOUNT as PROXY},
    repo_root,
};
use serde_json::json;

#[tokio::test]
async fn helm_installs_and_upgrades_the_chart() {
    let cp = control_plane();
    let install = cp.install_gatehouse();
    assert!(install.success, "{install:?}");

    let status = cp
        .helm()
        .args(["status", RELEASE, "-n", SYSTEM_NAMESPACE, "-o", "json"])
        .run();
    let status: serde_json::Value = serde_json::from_str(status.ok()).unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");

    // The CRDs Helm installed are exactly the generated ones, and established.
    for crd in GATEHOUSE_CRDS {
        let established = cp
            .kubectl(User::Admin)
            .args([
                "get",
                "crd",
                crd,
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
            ])
            .run();
        assert_eq!(established.ok(), "True", "{crd}");
    }
    for role in [
        "gatehouse-requester",
        "gatehouse-approver",
        "gatehouse-admin",
    ] {
        cp.kubectl(User::Admin)
            .args(["get", "clusterrole", role])
            .run()
            .ok();
    }

    // `helm upgrade` of the same chart succeeds and bumps the revision; values are checked by
    // the chart's schema.
    let chart = repo_root().join("charts/gatehouse");
    cp.helm()
        .args(["upgrade", RELEASE])
        .args([&chart])
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            // Keep admission.url (the shared operator's webhook) from the install.
            "--reuse-values",
            "--set",
            "rbac.aggregateToDefaultRoles=true",
        ])
        .run()
        .ok();
    let history = cp
        .helm()
        .args(["history", RELEASE, "-n", SYSTEM_NAMESPACE, "-o", "json"])
        .run();
    let history: serde_json::Value = serde_json::from_str(history.ok()).unwrap();
    assert!(
        history.as_array().is_some_and(|h| h.len() >= 2),
        "{history}"
    );

    cp.helm()
        .args(["upgrade", RELEASE])
        .args([&chart])
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "--reuse-values",
            "--set",
            "rbac.aggregateToDefaultRoles=maybe",
        ])
        .run()
        .fails_with(&["aggregateToDefaultRoles", "boolean"]);
}

#[tokio::test]
async fn helm_lint_and_server_dry_run_pass() {
    let cp = control_plane();
    cp.install_gatehouse();
    let chart = repo_root().join("charts/gatehouse");
    cp.helm()
        .args(["lint", "--strict"])
        .args([&chart])
        .run()
        .ok();
    // The values the harness installed with (the webhooks call the shared operator by URL),
    // then every optional part the API server knows (a ServiceMonitor needs the Prometheus
    // Operator's CRDs, which this API server lacks) with S3 storage, a NodePort and the audit
    // API (its APIService, serving certificate and RBAC).
    let url = format!(
        "admission.url=https://127.0.0.1:{}",
        cp.shared_operator().webhook_port
    );
    let everything = [
        url.as_str(),
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        "recording.storage.type=s3",
        "recording.storage.s3.bucket=ssh-recordings",
        "recording.storage.s3.credentialsSecret.name=s3-keys",
        "proxy.service.type=NodePort",
        "proxy.service.nodePort=32222",
        "auditApi.enabled=true",
        "auditApi.storage.s3.credentialsSecret.name=s3-read-only",
    ];
    for sets in [&everything[..1], &everything[..]] {
        let mut helm = cp
            .helm()
            .args(["template", "gatehouse"])
            .args([&chart])
            .args(["--include-crds", "-n", SYSTEM_NAMESPACE]);
        for set in sets {
            helm = helm.args(["--set", set]);
        }
        let rendered = helm.run();
        cp.kubectl(User::Admin)
            .args(["apply", "--dry-run=server", "-f", "-"])
            .stdin(rendered.ok())
            .run()
            .ok();
    }
}

/// `kubectl auth can-i` as `user`: true when allowed.
/// `resource` may be `plural/status` (the subresource, as RBAC writes it) or `plural/NAME`.
fn can_i(user: User, ns: &str, verb: &str, resource: &str) -> bool {
    ask_can_i(user, None, ns, verb, resource)
}

/// `kubectl auth can-i`, run by `user`, optionally impersonating `as_subject`.
fn ask_can_i(user: User, as_subject: Option<&str>, ns: &str, verb: &str, resource: &str) -> bool {
    let mut args = vec!["auth", "can-i", verb];
    match resource.split_once('/') {
        Some((plural, "status")) => args.extend([plural, "--subresource=status"]),
        _ => args.push(resource),
    }
    let impersonate = as_subject.map(|s| format!("--as={s}"));
    args.extend(impersonate.as_deref());
    let out = control_plane()
        .kubectl(user)
        .args(args)
        .args(["-n", ns])
        .run();
    match out.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("unexpected can-i answer {other:?}: {}", out.stderr),
    }
}

#[tokio::test]
async fn user_cluster_roles_grant_what_they_say_and_no_more() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("rbac").await;
    let other_ns = cp.namespace("rbac-other").await;
    let bind = |name: &str, role: &str, user: &str| {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        });
        cp.kubectl(User::Admin)
            .args(["apply", "-n", &ns, "-f", "-"])
            .stdin(binding.to_string())
            .run()
            .ok();
    };
    bind("alice-requests", "gatehouse-requester", "alice");
    bind("bob-approves", "gatehouse-approver", "bob");
    bind("carol-admin", "gatehouse-admin", "carol");

    let ar = "accessrequests.gatehouse.dev";
    let ap = "accesspolicies.gatehouse.dev";
    let hg = "hostgroups.gatehouse.dev";
    #[rustfmt::skip]
    let expectations: Vec<(User, &str, &str, bool)> = vec![
        // requester: ask, look, and patch (revoking is an annotation; admission refuses the
        // rest: self-approval, decision records; the spec is immutable)
        (User::Alice, "patch", ar, true),
        (User::Alice, "create", ar, true),
        (User::Alice, "get", ar, true),
        (User::Alice, "list", ar, true),
        (User::Alice, "watch", ar, true),
        (User::Alice, "list", ap, true),
        (User::Alice, "list", hg, true),
        (User::Alice, "delete", ar, false),
        (User::Alice, "update", ar, false),
        (User::Alice, "patch", "accessrequests.gatehouse.dev/status", false),
        (User::Alice, "approve", ap, false),
        (User::Alice, "create", ap, false),
        (User::Alice, "create", hg, false),
        (User::Alice, "get", "secrets", false),
        // approver: see, annotate, approve; never write policy or status
        (User::Bob, "approve", ap, true),
        (User::Bob, "patch", ar, true),
        (User::Bob, "list", ar, true),
        (User::Bob, "create", ar, false),
        (User::Bob, "delete", ar, false),
        (User::Bob, "update", ap, false),
        (User::Bob, "patch", "accessrequests.gatehouse.dev/status", false),
        (User::Bob, "create", "rolebindings", false),
        // admin: manage policies and host groups; cannot approve or forge status
        (User::Carol, "create", ap, true),
        (User::Carol, "update", ap, true),
        (User::Carol, "delete", hg, true),
        (User::Carol, "create", hg, true),
        (User::Carol, "delete", ar, true),
        (User::Carol, "approve", ap, false),
        (User::Carol, "create", ar, false),
        (User::Carol, "patch", "accessrequests.gatehouse.dev/status", false),
        (User::Carol, "get", "secrets", false),
        // nobody else
        (User::Mallory, "list", ar, false),
        (User::Mallory, "create", ar, false),
        (User::Dave, "approve", ap, false),
    ];
    let mut wrong = Vec::new();
    for (user, verb, resource, expected) in &expectations {
        if can_i(*user, &ns, verb, resource) != *expected {
            wrong.push(format!(
                "{} {verb} {resource}: expected {expected}",
                user.username()
            ));
        }
        // Bindings are per namespace: nothing leaks to another one.
        if *expected && can_i(*user, &other_ns, verb, resource) {
            wrong.push(format!(
                "{} {verb} {resource} also allowed in {other_ns}",
                user.username()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC differs from the roles' promise:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn approve_can_be_limited_to_one_policy_with_resource_names() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("approve-scope").await;
    let rbac = std::fs::read_to_string(repo_root().join("examples/rbac.yaml")).unwrap();
    cp.kubectl(User::Admin)
        .args(["apply", "-n", &ns, "-f", "-"])
        .stdin(rbac)
        .run()
        .ok();
    // kubectl writes a resource name after the slash.
    assert!(can_i(
        User::Bob,
        &ns,
        "approve",
        "accesspolicies.gatehouse.dev/prod-db-oncall"
    ));
    assert!(can_i(
        User::Carol,
        &ns,
        "approve",
        "accesspolicies.gatehouse.dev/prod-db-oncall"
    ));
    assert!(!can_i(
        User::Bob,
        &ns,
        "approve",
        "accesspolicies.gatehouse.dev/payments-admin"
    ));
    assert!(!can_i(
        User::Dave,
        &ns,
        "approve",
        "accesspolicies.gatehouse.dev/prod-db-oncall"
    ));
    assert!(can_i(
        User::Alice,
        &ns,
        "create",
        "accessrequests.gatehouse.dev"
    ));
    assert!(!can_i(
        User::Alice,
        &ns,
        "approve",
        "accesspolicies.gatehouse.dev/prod-db-oncall"
    ));
}

/// `kubectl auth can-i` as the chart's ServiceAccount `sa` (the admin impersonates it).
fn service_account_can(sa: &str, ns: &str, verb: &str, resource: &str) -> bool {
    let subject = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{sa}");
    ask_can_i(User::Admin, Some(&subject), ns, verb, resource)
}

#[tokio::test]
async fn service_accounts_can_do_their_job_and_cannot_read_other_namespaces_secrets() {
    let cp = control_plane();
    cp.install_gatehouse();
    let other = cp.namespace("sa-rbac").await;
    let own = SYSTEM_NAMESPACE;
    let ar = "accessrequests.gatehouse.dev";
    // The Secrets and ConfigMap the code reads and writes, by the names it uses.
    let user_ca = format!("secrets/{}", secrets::USER_CA);
    let upstream_ca = format!("secrets/{}", secrets::UPSTREAM_CA);
    let host_key = format!("secrets/{}", secrets::PROXY_HOST_KEY);
    let admission = format!("secrets/{}", secrets::ADMISSION);
    let ssh_configmap = format!("configmaps/{}", published::SSH_CONFIGMAP);
    #[rustfmt::skip]
    let expectations: Vec<(&str, &str, &str, &str, bool)> = vec![
        // operator: its CRDs everywhere, its CA Secrets and ConfigMaps here only
        (OPERATOR, &other, "watch", ar, true),
        (OPERATOR, &other, "patch", "accessrequests.gatehouse.dev/status", true),
        (OPERATOR, &other, "patch", "hostgroups.gatehouse.dev/status", true),
        (OPERATOR, &other, "list", "accesspolicies.gatehouse.dev", true),
        (OPERATOR, &other, "create", "events.events.k8s.io", true),
        (OPERATOR, &other, "create", "subjectaccessreviews.authorization.k8s.io", true),
        (OPERATOR, own, "create", "secrets", true),
        (OPERATOR, own, "get", &user_ca, true),
        (OPERATOR, own, "get", &upstream_ca, true),
        (OPERATOR, own, "patch", &ssh_configmap, true),
        (OPERATOR, own, "update", "leases.coordination.k8s.io/gatehouse-operator", true),
        (OPERATOR, own, "list", "secrets", false),
        (OPERATOR, own, "get", "secrets/some-app-password", false),
        (OPERATOR, own, "delete", &user_ca, false),
        (OPERATOR, own, "update", &user_ca, false),
        // Only admission's Secret changes: its decision seal key rotates.
        (OPERATOR, own, "update", &admission, true),
        (OPERATOR, own, "update", &upstream_ca, false),
        (OPERATOR, &other, "get", &user_ca, false),
        (OPERATOR, &other, "list", "secrets", false),
        (OPERATOR, &other, "create", "secrets", false),
        (OPERATOR, &other, "create", "configmaps", false),
        (OPERATOR, &other, "create", "leases.coordination.k8s.io", false),
        (OPERATOR, &other, "create", ar, false),
        (OPERATOR, &other, "create", "pods", false),
        // proxy: read what logins are decided on, write session status, its own Secrets only
        (PROXY, &other, "watch", ar, true),
        (PROXY, &other, "list", "hostgroups.gatehouse.dev", true),
        (PROXY, &other, "list", "accesspolicies.gatehouse.dev", true),
        (PROXY, &other, "patch", "accessrequests.gatehouse.dev/status", true),
        (PROXY, &other, "create", "events.events.k8s.io", true),
        (PROXY, own, "get", &upstream_ca, true),
        (PROXY, own, "get", &host_key, true),
        (PROXY, own, "get", &ssh_configmap, true),
        (PROXY, own, "get", &user_ca, false),
        (PROXY, own, "get", &admission, false),
        (PROXY, own, "list", "secrets", false),
        (PROXY, &other, "get", &upstream_ca, false),
        (PROXY, &other, "list", "secrets", false),
        (PROXY, &other, "patch", ar, false),
        (PROXY, &other, "create", ar, false),
        (PROXY, &other, "update", "hostgroups.gatehouse.dev/status", false),
        (PROXY, own, "update", "leases.coordination.k8s.io/gatehouse-operator", false),
        (PROXY, own, "create", "subjectaccessreviews.authorization.k8s.io", false),
    ];
    let wrong: Vec<String> = expectations
        .iter()
        .filter(|(sa, ns, verb, resource, expected)| {
            service_account_can(sa, ns, verb, resource) != *expected
        })
        .map(|(sa, ns, verb, resource, expected)| {
            format!("{sa} {verb} {resource} in {ns}: expected {expected}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "ServiceAccount RBAC differs from the chart's promise:\n{}",
        wrong.join("\n")
    );
}
