//! The harness's control plane is the real thing: the pinned apiserver version, users with the
//! groups the tests rely on, RBAC enforced, ServiceAccount tokens issued, examples applying.

use gatehouse_tests::{User, control_plane, repo_root};

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let cp = control_plane();
    let version = cp
        .kubectl(User::Admin)
        .args(["version", "-o", "json"])
        .run();
    let version: serde_json::Value = serde_json::from_str(version.ok()).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        cp.kubernetes_version(),
        "{version}"
    );
    assert_eq!(
        version["clientVersion"]["gitVersion"],
        cp.kubernetes_version(),
        "{version}"
    );
    // And k8s-openapi 0.29 supports it (1.33–1.37).
    let minor: u32 = version["serverVersion"]["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .unwrap_or_else(|| panic!("{version}"));
    assert!((33..=37).contains(&minor), "{version}");
}

#[tokio::test]
async fn users_authenticate_with_their_groups() {
    let cp = control_plane();
    for user in User::ALL {
        let groups = user.groups();
        let whoami = cp
            .kubectl(user)
            .args(["auth", "whoami", "-o", "json"])
            .run();
        let review: serde_json::Value = serde_json::from_str(whoami.ok()).unwrap();
        let info = &review["status"]["userInfo"];
        assert_eq!(info["username"], user.username(), "{review}");
        let got: Vec<&str> = info["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for group in &groups {
            assert!(
                got.contains(group),
                "{} lacks group {group}: {got:?}",
                user.username()
            );
        }
        assert!(got.contains(&"system:authenticated"), "{got:?}");
    }
}

#[tokio::test]
async fn rbac_is_enforced() {
    let cp = control_plane();
    cp.kubectl(User::Mallory)
        .args(["get", "namespaces"])
        .run()
        .fails_with(&[
            "Forbidden",
            r#"User "mallory" cannot list resource "namespaces""#,
        ]);
    cp.kubectl(User::Admin)
        .args(["get", "namespaces"])
        .run()
        .ok();
}

#[tokio::test]
async fn service_accounts_get_tokens_without_a_controller_manager() {
    let cp = control_plane();
    let ns = cp.namespace("sa").await;
    cp.kubectl(User::Admin)
        .args(["create", "serviceaccount", "deployer", "-n", &ns])
        .run()
        .ok();
    let token = cp
        .kubectl(User::Admin)
        .args(["create", "token", "deployer", "-n", &ns, "--duration=10m"])
        .run();
    let token = token.ok().trim().to_owned();
    let sa_kubeconfig = cp.service_account_kubeconfig(&ns, "deployer", &token);
    let who = cp
        .kubectl_with(&sa_kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .run();
    assert_eq!(who.ok(), format!("system:serviceaccount:{ns}:deployer"));
    // Granted nothing yet, so RBAC refuses it like any other user.
    cp.kubectl_with(&sa_kubeconfig)
        .args(["get", "secrets", "-n", &ns])
        .run()
        .fails_with(&["Forbidden"]);
}

#[tokio::test]
async fn examples_apply_with_client_and_server_side_apply() {
    let cp = control_plane();
    cp.install_gatehouse();
    let examples = repo_root().join("examples");
    let client_side = cp.namespace("examples-csa").await;
    for file in ["hostgroup.yaml", "policy.yaml", "request.yaml", "rbac.yaml"] {
        cp.kubectl(User::Admin)
            .args(["apply", "-n", &client_side, "-f"])
            .args([examples.join(file)])
            .run()
            .ok();
    }
    let server_side = cp.namespace("examples-ssa").await;
    let out = cp
        .kubectl(User::Admin)
        .args(["apply", "--server-side", "-n", &server_side, "-f"])
        .args([&examples])
        .run();
    assert!(
        out.ok()
            .contains("accessrequest.gatehouse.dev/alice-prod-db-01 serverside-applied"),
        "{out:?}"
    );
    // Re-applying unchanged manifests server-side is a no-op, not a conflict with the spec rule.
    cp.kubectl(User::Admin)
        .args(["apply", "--server-side", "-n", &server_side, "-f"])
        .args([&examples])
        .run()
        .ok();
    // And the typed Rust API reads what kubectl wrote.
    let client = cp.client(User::Admin).await;
    let requests: kube::Api<gatehouse_crds::AccessRequest> =
        kube::Api::namespaced(client, &server_side);
    let request = requests.get("alice-prod-db-01").await.unwrap();
    assert_eq!(request.spec.login, "ubuntu");
    assert_eq!(request.spec.target.host.as_deref(), Some("prod-db-01"));
    assert_eq!(
        gatehouse_crds::duration::parse(&request.spec.duration),
        Ok(std::time::Duration::from_secs(1800))
    );
}
