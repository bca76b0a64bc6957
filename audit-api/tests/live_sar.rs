//! The SubjectAccessReview and ConfigMap calls against a real API server (the test control
//! plane: run under `tests/scripts/control-plane.sh run DIR -- cargo test -p
//! gatehouse-audit-api --test live_sar`); skipped when no plane is named by GATEHOUSE_CP_DIR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_audit_api::{
    authn::UserInfo,
    authz::{Authorizer, Route, SubjectAccessReviewer},
    server::read_front_proxy,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

async fn admin() -> Option<Client> {
    let dir = std::env::var("GATEHOUSE_CP_DIR").ok()?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(format!("{dir}/kubeconfigs/admin.kubeconfig")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Some(Client::try_from(config).unwrap())
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ..UserInfo::default()
    }
}

fn attributes(route: Route) -> k8s_openapi::api::authorization::v1::ResourceAttributes {
    route.attributes().unwrap()
}

#[tokio::test]
async fn reviews_follow_rbac_and_fail_closed() {
    let Some(client) = admin().await else {
        eprintln!("GATEHOUSE_CP_DIR unset: no control plane, skipped");
        return;
    };
    let reviewer = SubjectAccessReviewer::new(client.clone());
    let recording = attributes(Route::Recording {
        namespace: "team".into(),
        name: "s1".into(),
    });
    let list = attributes(Route::Sessions {
        namespace: Some("team".into()),
    });
    let all = attributes(Route::AuditEvents { namespace: None });
    let alice = user("alice", &["dev", "system:authenticated"]);
    assert!(!reviewer.allowed(&alice, &recording).await.unwrap());
    let admin = user("gatehouse-admin", &["system:masters"]);
    assert!(reviewer.allowed(&admin, &all).await.unwrap());

    // alice may read recordings in team, and nothing else.
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some("audit-api-test-recordings".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["audit.gatehouse.dev".into()]),
            resources: Some(vec!["sessions/recording".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let _ = roles.create(&PostParams::default(), &role).await;
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("audit-api-test-alice".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "audit-api-test-recordings".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "alice".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    let _ = bindings.create(&PostParams::default(), &binding).await;
    let in_default = attributes(Route::Recording {
        namespace: "default".into(),
        name: "s1".into(),
    });
    let mut allowed = false;
    for _ in 0..50 {
        allowed = reviewer.allowed(&alice, &in_default).await.unwrap();
        if allowed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        allowed,
        "the RoleBinding grants sessions/recording in default"
    );
    assert!(
        !reviewer.allowed(&alice, &recording).await.unwrap(),
        "not in team"
    );
    let list_default = attributes(Route::Sessions {
        namespace: Some("default".into()),
    });
    assert!(
        !reviewer.allowed(&alice, &list_default).await.unwrap(),
        "not list"
    );
    assert!(!reviewer.allowed(&alice, &list).await.unwrap());
    // The same name without the group binding nothing: mallory.
    assert!(
        !reviewer
            .allowed(&user("mallory", &[]), &in_default)
            .await
            .unwrap()
    );

    // No API server: an error, never an answer (the handler turns it into a 503).
    let mut dead = Config::new("https://127.0.0.1:9".parse().unwrap());
    dead.connect_timeout = Some(std::time::Duration::from_secs(1));
    let dead = SubjectAccessReviewer::new(Client::try_from(dead).unwrap());
    assert!(dead.allowed(&alice, &in_default).await.is_err());

    // The requestheader settings are read from the real ConfigMap (present once the plane
    // runs with the aggregation layer; without it the server refuses to start).
    match read_front_proxy(&client).await {
        Ok(front_proxy) => assert!(!front_proxy.config().username_headers.is_empty()),
        Err(error) => assert!(
            error.to_string().contains("requestheader-client-ca-file"),
            "{error}"
        ),
    }
}
