//! The audit API (`audit.gatehouse.dev/v1alpha1`, issue 15) behind the real aggregation layer:
//! the plane's kube-apiserver runs with a front-proxy CA and endpoint routing, the chart (the
//! shared release upgraded with `auditApi.enabled`) brings the APIService, its serving
//! certificate, the Service and RBAC, and the real `gatehouse-audit-api` serves it as the
//! chart's ServiceAccount. Users are real kubectl users; attackers are real kubectl and curl.
//!
//! - the API server publishes the requestheader configuration aggregated servers trust;
//! - the APIService is Available and its discovery lists what the contract says;
//! - `helm upgrade` keeps the serving certificate and the caBundle;
//! - straight at the server, past the API server: no front-proxy certificate, a certificate of
//!   the users' CA, or one of the front-proxy CA with another name: 401 even with forged
//!   X-Remote-User headers; with the front-proxy certificate, the server's own
//!   SubjectAccessReview decides (403 for a user without the role);
//! - through the API server, a user without gatehouse-auditor is Forbidden from every endpoint;
//! - after an approved, recorded session (the proxy's durable audit batches in the store the API
//!   reads), an auditor lists it with `kubectl get sessions` (field selectors too) and reads its
//!   events in order; the recording comes back byte for byte, its sha256 the request status's;
//!   the web player page and its files come through the API server (Forbidden without the
//!   role); `kubectl gatehouse audit --user alice --from --to` gives exactly the story, in order.

use std::time::Duration;

use gatehouse_crds::{Phase, SessionRecord, contract::annotations};
use gatehouse_tests::{
    SYSTEM_NAMESPACE, Subject, User,
    audit_api::{API_SERVICE, AUDIT_API_SERVICE_ACCOUNT, GROUP_VERSION_PATH, SharedAuditApi},
    command::Cmd,
    control_plane,
    proxied_world::ProxiedWorld,
    proxy::Storage,
    sha256_hex, unique_name, wait_for,
};
use serde_json::{Value, json};

/// The body and the status code of a `curl -w '\n%{http_code}'`.
fn split_status(out: &gatehouse_tests::CmdOutput) -> (String, u16) {
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status code from curl: {out:?}"));
    (body.to_owned(), code)
}

#[tokio::test]
async fn the_api_server_publishes_the_requestheader_configuration() {
    let cp = control_plane();
    let data = cp
        .kubectl(User::Admin)
        .args([
            "get",
            "configmap",
            "extension-apiserver-authentication",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data}",
        ])
        .run();
    let data: Value = serde_json::from_str(data.ok()).unwrap();
    let front_proxy_ca = std::fs::read_to_string(cp.dir().join("pki/front-proxy-ca.crt")).unwrap();
    assert_eq!(
        data["requestheader-client-ca-file"].as_str().map(str::trim),
        Some(front_proxy_ca.trim()),
        "{data}"
    );
    // The front-proxy CA is not the users' CA: a user's client certificate is no front proxy.
    let users_ca = std::fs::read_to_string(cp.dir().join("pki/ca.crt")).unwrap();
    assert_ne!(front_proxy_ca.trim(), users_ca.trim());
    for (key, value) in [
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        (
            "requestheader-extra-headers-prefix",
            r#"["X-Remote-Extra-"]"#,
        ),
    ] {
        assert_eq!(data[key], value, "{key}: {data}");
    }
}

#[tokio::test]
async fn the_api_service_is_available_and_discovery_lists_the_resources() {
    let cp = control_plane();
    cp.audit_api();
    let (status, reason, message) = cp.api_service_available();
    assert_eq!(status, "True", "{reason}: {message}");

    let discovery = cp
        .kubectl(User::Mallory)
        .args(["get", "--raw", GROUP_VERSION_PATH])
        .run();
    let discovery: Value = serde_json::from_str(discovery.ok()).unwrap();
    assert_eq!(discovery["kind"], "APIResourceList", "{discovery}");
    assert_eq!(discovery["groupVersion"], "audit.gatehouse.dev/v1alpha1");
    let resource = |name: &str| {
        discovery["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} missing from {discovery}"))
    };
    let verbs = |r: &Value| -> Vec<String> {
        let mut v: Vec<String> = r["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    let sessions = resource("sessions");
    assert_eq!(sessions["namespaced"], true);
    assert_eq!(sessions["kind"], "Session");
    assert_eq!(verbs(&sessions), ["get", "list"]);
    assert_eq!(verbs(&resource("sessions/recording")), ["get"]);
    assert_eq!(verbs(&resource("sessions/events")), ["get"]);
    let events = resource("auditevents");
    assert_eq!(events["namespaced"], true);
    assert_eq!(events["kind"], "AuditEvent");
    assert_eq!(verbs(&events), ["list"]);

    // kubectl's own discovery finds the group (what `kubectl get sessions` relies on).
    let resources = cp
        .kubectl(User::Admin)
        .args([
            "api-resources",
            "--api-group=audit.gatehouse.dev",
            "-o",
            "name",
        ])
        .run();
    assert!(
        resources
            .ok()
            .lines()
            .any(|l| l == "sessions.audit.gatehouse.dev"),
        "{resources:?}"
    );
}

#[tokio::test]
async fn helm_upgrade_keeps_the_serving_certificate_and_the_ca_bundle() {
    let cp = control_plane();
    let api = cp.audit_api();
    let ca_bundle = || {
        cp.kubectl(User::Admin)
            .args([
                "get",
                "apiservice",
                API_SERVICE,
                "-o",
                "jsonpath={.spec.caBundle}",
            ])
            .run()
            .ok()
            .to_owned()
    };
    let before = (
        ca_bundle(),
        cp.audit_api_tls("tls.crt"),
        cp.audit_api_tls("ca.crt"),
    );
    assert!(!before.0.is_empty(), "no caBundle");
    // The caBundle is the CA that signed the serving certificate, for the Service's name.
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, &before.1).unwrap();
    Cmd::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&api.serving_ca)
        .arg(&cert)
        .run()
        .ok();
    let san = Cmd::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .run();
    assert!(
        san.ok()
            .contains(&format!("DNS:{}", SharedAuditApi::server_name())),
        "{san:?}"
    );

    cp.upgrade_gatehouse(&[]).ok();
    let after = (
        ca_bundle(),
        cp.audit_api_tls("tls.crt"),
        cp.audit_api_tls("ca.crt"),
    );
    assert_eq!(
        before, after,
        "helm upgrade replaced the serving certificate"
    );
    // The running server (with the certificate it started with) is still trusted.
    let (status, reason, message) = cp.api_service_available();
    assert_eq!(status, "True", "{reason}: {message}");
    cp.kubectl(User::Admin)
        .args(["get", "--raw", GROUP_VERSION_PATH])
        .run()
        .ok();
}

#[tokio::test]
async fn past_the_api_server_forged_user_headers_get_401_and_the_server_authorizes_itself() {
    let cp = control_plane();
    let api = cp.audit_api();
    let ns = cp.namespace("audit-authn").await;
    cp.bind(&ns, "gatehouse-auditor", Subject::User("dave"));
    let path = format!("{GROUP_VERSION_PATH}/namespaces/{ns}/sessions");
    let forged = |cmd: Cmd, user: &str| {
        cmd.args(["-H", &format!("X-Remote-User: {user}")])
            .args(["-H", "X-Remote-Group: system:masters"])
            .args(["-H", "X-Remote-Group: system:authenticated"])
    };

    // No client certificate at all.
    let (body, code) = split_status(&forged(api.curl(&path), "gatehouse-admin").run());
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains(r#""kind":"Status""#) || body.contains("\"Status\""),
        "{body}"
    );

    // A certificate the API server itself trusts for users (the admin's), not a front proxy's.
    let pki = cp.dir().join("pki");
    let admin = forged(api.curl(&path), "gatehouse-admin")
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"));
    let (body, code) = split_status(&admin.run());
    assert_eq!(code, 401, "the users' CA is no front proxy: {body}");

    // A certificate of the front-proxy CA, but not for an allowed name.
    let dir = tempfile::tempdir().unwrap();
    let (key, csr, crt, ext) = (
        dir.path().join("intruder.key"),
        dir.path().join("intruder.csr"),
        dir.path().join("intruder.crt"),
        dir.path().join("client.ext"),
    );
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    Cmd::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", "/CN=intruder"])
        .run()
        .ok();
    Cmd::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki.join("front-proxy-ca.crt"))
        .arg("-CAkey")
        .arg(pki.join("front-proxy-ca.key"))
        .arg("-CAcreateserial")
        .arg("-CAserial")
        .arg(dir.path().join("ca.srl"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt)
        .run()
        .ok();
    let intruder = forged(api.curl(&path), "gatehouse-admin")
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(&key);
    let (body, code) = split_status(&intruder.run());
    assert_eq!(
        code, 401,
        "CN=intruder is not in requestheader-allowed-names: {body}"
    );

    // The front proxy's own certificate: the headers are believed, and the server asks the
    // API server (SubjectAccessReview) whether that user may: mallory may not, dave may.
    let as_front_proxy = |user: &str| {
        api.curl(&path)
            .args(["-H", &format!("X-Remote-User: {user}")])
            .args(["-H", "X-Remote-Group: system:authenticated"])
            .arg("--cert")
            .arg(pki.join("front-proxy-client.crt"))
            .arg("--key")
            .arg(pki.join("front-proxy-client.key"))
            .run()
    };
    let (body, code) = split_status(&as_front_proxy("mallory"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Forbidden"), "{body}");
    let (body, code) = split_status(&as_front_proxy("dave"));
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "SessionList", "{list}");
}

#[tokio::test]
async fn a_user_without_the_auditor_role_is_forbidden_from_every_endpoint() {
    let cp = control_plane();
    cp.audit_api();
    let ns = cp.namespace("audit-authz").await;
    // Mallory may request access here, and still reads no session.
    cp.bind(&ns, "gatehouse-requester", Subject::User("mallory"));
    cp.bind(&ns, "gatehouse-auditor", Subject::User("dave"));
    let base = format!("{GROUP_VERSION_PATH}/namespaces/{ns}");
    let raw_paths = [
        format!("{base}/sessions"),
        format!("{base}/sessions/some-session"),
        format!("{base}/sessions/some-session/recording"),
        format!("{base}/sessions/some-session/events"),
        format!("{base}/auditevents"),
        format!("{GROUP_VERSION_PATH}/sessions"),
        format!("{GROUP_VERSION_PATH}/auditevents"),
    ];
    for path in &raw_paths {
        cp.kubectl(User::Mallory)
            .args(["get", "--raw", path])
            .run()
            .fails_with(&["Forbidden"]);
    }
    cp.kubectl(User::Mallory)
        .args(["get", "sessions", "-n", &ns])
        .run()
        .fails_with(&["Forbidden", "sessions.audit.gatehouse.dev"]);
    cp.kubectl(User::Mallory)
        .args(["get", "sessions", "--all-namespaces"])
        .run()
        .fails_with(&["Forbidden"]);

    // The auditor lists sessions in the namespace it is bound in, and nowhere else.
    cp.kubectl(User::Dave)
        .args(["get", "sessions", "-n", &ns, "-o", "json"])
        .run()
        .ok();
    cp.kubectl(User::Dave)
        .args(["get", "--raw", &format!("{base}/auditevents")])
        .run()
        .ok();
    cp.kubectl(User::Dave)
        .args(["get", "sessions", "-n", "default"])
        .run()
        .fails_with(&["Forbidden"]);
    cp.kubectl(User::Dave)
        .args(["get", "--raw", &format!("{GROUP_VERSION_PATH}/auditevents")])
        .run()
        .fails_with(&["Forbidden"]);
}

/// (who, namespace, verb, group, resource, subresource, name, allowed?)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    bool,
);

/// Whether the API server's authorizer allows `who` (a user, or a ServiceAccount with its
/// groups) the request: a SubjectAccessReview as the admin, exactly what the audit API asks.
fn allowed(case: &Case<'_>) -> bool {
    let (who, ns, verb, group, resource, subresource, name, _) = *case;
    let mut groups = vec!["system:authenticated".to_owned()];
    if let Some(rest) = who.strip_prefix("system:serviceaccount:") {
        let sa_ns = rest.split(':').next().unwrap_or_default();
        groups.push("system:serviceaccounts".to_owned());
        groups.push(format!("system:serviceaccounts:{sa_ns}"));
    }
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": who, "groups": groups, "resourceAttributes": {
            "namespace": ns, "verb": verb, "group": group, "resource": resource,
            "subresource": subresource, "name": name,
        }},
    });
    let out = control_plane()
        .kubectl(User::Admin)
        .args(["create", "-o", "json", "-f", "-"])
        .stdin(review.to_string())
        .run();
    let review: Value = serde_json::from_str(out.ok())
        .unwrap_or_else(|e| panic!("a SubjectAccessReview back ({e}): {out:?}"));
    review["status"]["allowed"] == true
}

#[tokio::test]
async fn the_charts_roles_grant_what_they_say_and_no_more() {
    let cp = control_plane();
    cp.audit_api();
    let ns = cp.namespace("audit-roles").await;
    cp.bind(&ns, "gatehouse-auditor", Subject::User("dave"));
    cp.bind(&ns, "gatehouse-approver", Subject::User("bob"));
    cp.bind(&ns, "gatehouse-approver-sessions", Subject::User("carol"));
    let sa = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{AUDIT_API_SERVICE_ACCOUNT}");
    let audit = "audit.gatehouse.dev";
    let authz = "authorization.k8s.io";
    let authn = "authentication.k8s.io";
    let ar = "gatehouse.dev";
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        // auditor: sessions, recordings, events, audit events; nothing to write
        ("dave", &ns, "list", audit, "sessions", "", "", true),
        ("dave", &ns, "get", audit, "sessions", "recording", "s1", true),
        ("dave", &ns, "get", audit, "sessions", "events", "s1", true),
        ("dave", &ns, "list", audit, "auditevents", "", "", true),
        ("dave", &ns, "delete", audit, "sessions", "", "s1", false),
        ("dave", "default", "list", audit, "sessions", "", "", false),
        ("dave", "", "list", audit, "auditevents", "", "", false),
        // approvers: sessions and their events, not the recordings
        ("bob", &ns, "list", audit, "sessions", "", "", true),
        ("bob", &ns, "get", audit, "sessions", "events", "s1", true),
        ("bob", &ns, "get", audit, "sessions", "recording", "s1", false),
        ("bob", &ns, "list", audit, "auditevents", "", "", false),
        ("carol", &ns, "get", audit, "sessions", "", "s1", true),
        ("carol", &ns, "get", audit, "sessions", "recording", "s1", false),
        // nobody else (and `view` not, unless auditApi.aggregateToView)
        ("mallory", &ns, "list", audit, "sessions", "", "", false),
        ("mallory", &ns, "get", audit, "sessions", "recording", "s1", false),
        // the audit API itself: reviews and the requestheader ConfigMap; no Secrets, no writes
        (&sa, "", "create", authz, "subjectaccessreviews", "", "", true),
        (&sa, "", "create", authn, "tokenreviews", "", "", true),
        (&sa, "kube-system", "get", "", "configmaps", "", "extension-apiserver-authentication", true),
        (&sa, "kube-system", "get", "", "configmaps", "", "kube-root-ca.crt", false),
        (&sa, SYSTEM_NAMESPACE, "get", "", "secrets", "", "gatehouse-audit-api-tls", false),
        (&sa, SYSTEM_NAMESPACE, "list", "", "secrets", "", "", false),
        (&sa, &ns, "list", ar, "accessrequests", "", "", false),
        (&sa, &ns, "create", "", "pods", "", "", false),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|case| allowed(case) != case.7)
        .map(|(who, ns, verb, _, res, sub, name, expected)| {
            format!("{who} {verb} {res}/{sub} {name:?} in {ns:?}: expected {expected}")
        })
        .collect();
    assert!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));
}

/// An approved, recorded story in a fresh namespace whose proxy stores recordings (and its
/// audit batches) where the audit API reads: alice requests, bob approves, alice runs `ssh`.
/// Returns the world (keep it alive), the session from the request's status (with its
/// recording) and the session as `kubectl get sessions -o json` lists it to dave, the auditor.
async fn audited_story() -> (ProxiedWorld, SessionRecord, Value) {
    let cp = control_plane();
    cp.audit_api();
    // Every story's proxy writes its own audit/<writer>/ batches into the one store.
    let w = ProxiedWorld::start_as_writer(
        "audit-api",
        |_| Storage::Local(cp.audit_store()),
        json!({"approval": {"required": 1}}),
        &unique_name("proxy-audited"),
    )
    .await;
    let ns = w.s.ns.clone();
    cp.bind(&ns, "gatehouse-auditor", Subject::User("dave"));
    w.s.apply(cp, User::Alice, &w.request("story")).ok();
    w.s.wait_phase("story", Phase::Pending, Duration::from_secs(10))
        .await;
    w.s.annotate(cp, User::Bob, "story", annotations::APPROVE, "lgtm")
        .ok();
    let issued =
        w.s.wait_phase("story", Phase::Issued, Duration::from_secs(10))
            .await;
    let certificate = issued.status.unwrap_or_default().certificate;
    let cert = w.dir.path().join("story-cert.pub");
    std::fs::write(&cert, certificate.unwrap_or_default())
        .unwrap_or_else(|e| panic!("writing {}: {e}", cert.display()));
    let out = w
        .ssh(&cert, &format!("{}@db1", w.login), &["echo audited-hello"])
        .run();
    assert_eq!(out.stdout.trim(), "audited-hello", "{out:?}");
    let sessions = w.recorded("story", 1, Duration::from_secs(30)).await;
    let session = sessions[0].clone();

    // `kubectl get sessions -n NS`, as the auditor, lists it (the audit API re-reads the store).
    let listed = wait_for(
        Duration::from_secs(30),
        "the session in kubectl get sessions",
        || async {
            let out = cp
                .kubectl(User::Dave)
                .args(["get", "sessions", "-n", &ns, "-o", "json"])
                .run();
            let list: Value = serde_json::from_str(out.ok()).ok()?;
            list["items"]
                .as_array()?
                .iter()
                .find(|s| s["metadata"]["name"] == session.id.as_str())
                .cloned()
        },
    )
    .await;
    (w, session, listed)
}

#[tokio::test]
async fn an_approved_session_is_listed_by_kubectl_get_sessions_with_its_events() {
    let cp = control_plane();
    let (w, session, listed) = audited_story().await;
    let ns = w.s.ns.clone();
    assert_eq!(listed["kind"], "Session", "{listed}");
    assert_eq!(listed["metadata"]["namespace"], ns.as_str(), "{listed}");
    assert_eq!(listed["spec"]["request"]["name"], "story", "{listed}");
    assert_eq!(listed["spec"]["user"], "alice", "{listed}");
    assert_eq!(listed["spec"]["host"], "db1", "{listed}");
    assert_eq!(listed["spec"]["login"], w.login.as_str(), "{listed}");
    let table = cp
        .kubectl(User::Dave)
        .args(["get", "sessions", "-n", &ns])
        .run();
    assert!(table.ok().contains(&session.id), "{table:?}");
    // Field selectors: by user and by request; another user's selection is empty.
    for (selector, found) in [
        ("spec.user=alice", true),
        ("spec.request=story", true),
        ("spec.user=bob", false),
    ] {
        let out = cp
            .kubectl(User::Dave)
            .args(["get", "sessions", "-n", &ns, "-o", "name"])
            .arg(format!("--field-selector={selector}"))
            .run();
        assert_eq!(out.ok().contains(&session.id), found, "{selector}: {out:?}");
    }

    // The session's events, in time order, from start to end.
    let base = format!(
        "{GROUP_VERSION_PATH}/namespaces/{ns}/sessions/{}",
        session.id
    );
    let events = cp
        .kubectl(User::Dave)
        .args(["get", "--raw", &format!("{base}/events")])
        .run();
    let events: Value = serde_json::from_str(events.ok()).unwrap();
    assert_eq!(events["kind"], "AuditEventList", "{events}");
    let types: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect();
    let started = types.iter().position(|t| *t == "sessionStarted");
    let ended = types.iter().position(|t| *t == "sessionEnded");
    assert!(
        started.is_some() && started < ended,
        "sessionStarted before sessionEnded: {types:?}"
    );

    // The real session, and still nothing for a user without the role.
    for path in [
        base.clone(),
        format!("{base}/events"),
        format!("{base}/recording"),
    ] {
        cp.kubectl(User::Mallory)
            .args(["get", "--raw", &path])
            .run()
            .fails_with(&["Forbidden"]);
    }
}

#[tokio::test]
async fn an_approved_sessions_recording_is_served_byte_for_byte_and_its_story_is_queryable() {
    let cp = control_plane();
    let from = jiff::Timestamp::now();
    let (w, session, _) = audited_story().await;
    let recording = session.recording.clone().unwrap();
    let ns = w.s.ns.clone();
    let base = format!(
        "{GROUP_VERSION_PATH}/namespaces/{ns}/sessions/{}",
        session.id
    );
    // recordingStored reaches the store after the session's end: wait for the Session to show it.
    let listed = wait_for(
        Duration::from_secs(30),
        "the session's stored recording in the audit API",
        || async {
            let out = cp.kubectl(User::Dave).args(["get", "--raw", &base]).run();
            let session: Value = serde_json::from_str(&out.stdout).ok()?;
            session["status"]["recording"]["sha256"]
                .is_string()
                .then_some(session)
        },
    )
    .await;
    assert_eq!(
        listed["status"]["recording"]["sha256"],
        recording.sha256.as_str(),
        "{listed}"
    );
    assert_eq!(listed["status"]["exitStatus"], 0, "{listed}");
    // The cast, byte for byte as stored: its sha256 is the one in the request's status.
    let raw = cp
        .kubectl(User::Dave)
        .args(["get", "--raw", &format!("{base}/recording")])
        .run();
    assert!(raw.success, "{raw:?}");
    assert_eq!(sha256_hex(&raw.stdout_bytes), recording.sha256);
    let stored = std::fs::read(cp.audit_store().join(&recording.key)).unwrap();
    assert_eq!(raw.stdout_bytes, stored);

    // The web player page and its compiled-in files, through the API server.
    let page = cp
        .kubectl(User::Dave)
        .args(["get", "--raw", &format!("{base}/player")])
        .run();
    assert!(
        page.ok().contains("asciinema-player.min.js") && page.ok().contains("/recording"),
        "{page:?}"
    );
    let js = cp
        .kubectl(User::Dave)
        .args([
            "get",
            "--raw",
            &format!("{base}/player/asciinema-player.min.js"),
        ])
        .run();
    assert_eq!(
        sha256_hex(&js.stdout_bytes),
        sha256_hex(gatehouse_audit_api::player::PLAYER_JS),
        "{:?}",
        js.stderr
    );
    for path in [
        format!("{base}/player"),
        format!("{base}/player/asciinema-player.min.js"),
    ] {
        cp.kubectl(User::Mallory)
            .args(["get", "--raw", &path])
            .run()
            .fails_with(&["Forbidden"]);
    }

    // `kubectl gatehouse audit --user alice --from … --to …`: exactly this story, in order —
    // the operator's half (created, bob's approval, issued) and the proxy's.
    let to = jiff::Timestamp::now();
    let bin = gatehouse_tests::repo_root().join("target/debug");
    let story = wait_for(
        Duration::from_secs(30),
        "alice's story in the audit API",
        || async {
            let out = Cmd::new(cp.kubectl_binary())
                .args([
                    "gatehouse",
                    "audit",
                    "-n",
                    &ns,
                    "--user",
                    "alice",
                    "-o",
                    "json",
                ])
                .arg(format!("--from={from}"))
                .arg(format!("--to={to}"))
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        bin.display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                )
                .env("KUBECONFIG", cp.kubeconfig(User::Dave))
                .run();
            let list: Value = serde_json::from_str(&out.stdout).ok()?;
            let types: Vec<String> = list["items"]
                .as_array()?
                .iter()
                .filter_map(|e| e["type"].as_str().map(str::to_owned))
                .collect();
            types
                .contains(&"recordingStored".to_owned())
                .then_some(types)
        },
    )
    .await;
    assert_eq!(
        story,
        [
            "requestCreated",
            "approved",
            "issued",
            "loginAccepted",
            "sessionStarted",
            "command",
            "sessionEnded",
            "recordingStored"
        ],
        "alice's story"
    );

    // `kubectl gatehouse replay --web` as dave: the page through a kubectl proxy on loopback,
    // played in headless Chromium until the recorded text shows.
    let mut web = std::process::Command::new(cp.kubectl_binary())
        .args(["gatehouse", "replay", "--web", "-n", &ns, &session.id])
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KUBECONFIG", cp.kubeconfig(User::Dave))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(web.stdout.take().unwrap()),
        &mut url,
    )
    .unwrap();
    let url = url.trim().to_owned();
    let profile = tempfile::tempdir().unwrap();
    let mut last = String::new();
    let dom = (1..=3).find_map(|attempt| {
        let out = Cmd::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--virtual-time-budget=5000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join(attempt.to_string()).display()
            ))
            .arg("--dump-dom")
            .arg(&url)
            .kill_after(Duration::from_secs(90))
            .run();
        last = format!("{}\n{}", out.stdout, out.stderr);
        out.stdout.contains("audited-hello").then_some(out.stdout)
    });
    let through_proxy = Cmd::new("curl").args(["-sS", "-i", &url]).run();
    // SIGINT: the plugin stops its kubectl proxy on the way out.
    Cmd::new("kill").args(["-INT", &web.id().to_string()]).run();
    let _ = web.wait();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/player"),
        "{url}"
    );
    assert!(
        dom.is_some(),
        "the player page at {url} never showed the recording:\n{last}\n{}",
        through_proxy.stdout
    );
}
