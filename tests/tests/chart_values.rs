//! The chart's values: the schema refuses bad ones naming the field and the rule; the S3
//! settings the chart renders are the ones the real proxy binary understands (a session
//! recorded through a proxy started with exactly the rendered arguments lands in MinIO, and is
//! locked there with the objectLock values); the Grafana dashboard queries only metrics the
//! code registers; the audit API's objects render only when enabled, with a serving
//! certificate its APIService's caBundle verifies and least privilege (read-only store, its
//! own S3 credentials when given, `view` only on request).

use std::collections::BTreeSet;

use gatehouse_tests::{
    SYSTEM_NAMESPACE, User, control_plane,
    minio::{ACCESS_KEY, Minio, SECRET_KEY},
    proxied_world::ProxiedWorld,
    proxy::Storage,
    repo_root, sha256_hex,
};
use serde_json::{Value, json};

/// `helm template` of the chart with `--set` values, as admin's helm.
fn template(sets: &[&str]) -> gatehouse_tests::CmdOutput {
    let mut helm = control_plane()
        .helm()
        .args(["template", "gatehouse"])
        .args([repo_root().join("charts/gatehouse")])
        .args(["-n", SYSTEM_NAMESPACE]);
    for set in sets {
        helm = helm.args(["--set", set]);
    }
    helm.run()
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_field_and_the_rule() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["operator.replicas=-1"],
            &["/operator/replicas", "minimum: got -1, want 0"],
        ),
        (
            &["proxy.replicas=-3"],
            &["/proxy/replicas", "minimum: got -3, want 0"],
        ),
        (
            &["recording.storage.type=nfs"],
            &[
                "/recording/storage/type",
                "value must be one of 's3', 'volume'",
            ],
        ),
        (
            &["recording.storage.type=s3"],
            &[
                "/recording/storage/s3/bucket",
                "minLength: got 0, want 1",
                "/recording/storage/s3/credentialsSecret/name",
            ],
        ),
        (
            &[
                "recording.storage.type=s3",
                "recording.storage.s3.credentialsSecret.name=s3-keys",
            ],
            &["/recording/storage/s3/bucket", "minLength: got 0, want 1"],
        ),
        (
            &["proxy.service.type=External"],
            &[
                "/proxy/service/type",
                "'ClusterIP', 'NodePort', 'LoadBalancer'",
            ],
        ),
        (
            &["proxy.service.nodePort=2222"],
            &["/proxy/service/nodePort", "minimum: got 2,222, want 30,000"],
        ),
        (
            &["proxy.authBlock=five minutes"],
            &["/proxy/authBlock", "does not match pattern"],
        ),
        (
            &["recording.storage.s3.endpoint=minio:9000"],
            &["/recording/storage/s3/endpoint", "does not match pattern"],
        ),
        (
            &["proxy.replica=2"],
            &["/proxy", "additional properties 'replica' not allowed"],
        ),
        (
            &["recording.storage.s3.objectLock.mode=legal-hold"],
            &[
                "/recording/storage/s3/objectLock/mode",
                "value must be one of 'none', 'governance', 'compliance'",
            ],
        ),
        (
            &["recording.storage.s3.objectLock.retention=1y"],
            &[
                "/recording/storage/s3/objectLock/retention",
                "does not match pattern",
            ],
        ),
    ];
    for (sets, needles) in cases {
        let mut all = vec!["values don't meet the specifications of the schema"];
        all.extend(*needles);
        template(sets).fails_with(&all);
    }

    // The same S3 choice, complete, renders; so do the optional parts.
    let rendered = template(&[
        "recording.storage.type=s3",
        "recording.storage.s3.bucket=ssh-recordings",
        "recording.storage.s3.credentialsSecret.name=s3-keys",
        "networkPolicy.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "proxy.service.type=NodePort",
        "proxy.service.nodePort=32222",
    ]);
    let kinds: BTreeSet<String> = documents(rendered.ok())
        .iter()
        .filter_map(|d| {
            Some(format!(
                "{}/{}",
                d["kind"].as_str()?,
                d["metadata"]["name"].as_str()?
            ))
        })
        .collect();
    for expected in [
        "Deployment/gatehouse-proxy",
        "Service/gatehouse-proxy",
        "Service/gatehouse-proxy-metrics",
        "Service/gatehouse-operator-metrics",
        "PodDisruptionBudget/gatehouse-proxy",
        "PodDisruptionBudget/gatehouse-operator",
        "NetworkPolicy/gatehouse-proxy",
        "NetworkPolicy/gatehouse-operator",
        "ServiceMonitor/gatehouse",
        "ConfigMap/gatehouse-dashboard",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} missing from {kinds:?}"
        );
    }
    // Object Lock: off by default (no envs); on, the proxy gets the mode and retention; on
    // with a volume (which cannot lock), the chart refuses to render.
    let s3 = [
        "recording.storage.type=s3",
        "recording.storage.s3.bucket=ssh-recordings",
        "recording.storage.s3.credentialsSecret.name=s3-keys",
    ];
    let (_, env) = rendered_proxy_plain(template(&s3).ok());
    assert!(
        !env.iter()
            .any(|(n, _)| n.starts_with("GATEHOUSE_S3_OBJECT_LOCK")),
        "{env:?}"
    );
    let mut locked = s3.to_vec();
    locked.extend([
        "recording.storage.s3.objectLock.mode=compliance",
        "recording.storage.s3.objectLock.retention=365d",
    ]);
    let (_, env) = rendered_proxy_plain(template(&locked).ok());
    for (name, value) in [
        ("GATEHOUSE_S3_OBJECT_LOCK_MODE", "compliance"),
        ("GATEHOUSE_S3_OBJECT_LOCK_RETENTION", "365d"),
    ] {
        assert!(
            env.contains(&(name.to_owned(), value.to_owned())),
            "{name}={value} not in {env:?}"
        );
    }
    template(&["recording.storage.s3.objectLock.mode=governance"]).fails_with(&[
        "recording.storage.s3.objectLock.mode governance needs recording.storage.type s3",
    ]);

    // One replica: no budget (it would block every drain).
    let single = template(&["proxy.replicas=1", "operator.replicas=1"]);
    assert!(!single.ok().contains("kind: PodDisruptionBudget"));
}

/// The documents of a multi-document YAML stream, empty ones dropped.
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

/// The rendered proxy container's arguments and plain (`value:`) environment variables.
fn rendered_proxy_plain(yaml: &str) -> (Vec<String>, Vec<(String, String)>) {
    let docs = documents(yaml);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "gatehouse-proxy")
        .unwrap_or_else(|| panic!("no proxy Deployment in\n{yaml}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    (args, env)
}

/// The rendered proxy container's arguments and environment, with Secret references read
/// from the API server the way the kubelet would. Listen addresses and the spool paths are
/// the harness's (the pod's are fixed); everything about storage is the chart's.
fn rendered_proxy(yaml: &str) -> (Vec<String>, Vec<(String, String)>) {
    let docs = documents(yaml);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "gatehouse-proxy")
        .unwrap_or_else(|| panic!("no proxy Deployment in\n{yaml}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|a| {
            ![
                "--listen=",
                "--metrics-addr=",
                "--spool-dir=",
                "--audit-spool-dir=",
            ]
            .iter()
            .any(|p| a.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        if let Some(value) = var["value"].as_str() {
            env.push((name, value.to_owned()));
        } else if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_object() {
            let (secret, key) = (secret["name"].as_str(), secret["key"].as_str());
            let (Some(secret), Some(key)) = (secret, key) else {
                panic!("incomplete secretKeyRef in {var}");
            };
            let value = control_plane()
                .kubectl(User::Admin)
                .args(["get", "secret", secret, "-n", SYSTEM_NAMESPACE])
                .args([
                    "-o",
                    &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
                ])
                .run();
            env.push((name, value.ok().to_owned()));
        }
        // fieldRef (pod name and namespace) the harness sets itself.
    }
    (args, env)
}

#[tokio::test]
async fn the_proxy_runs_with_the_s3_settings_the_chart_renders() {
    let cp = control_plane();
    cp.install_gatehouse();
    // The user's Secret, with the chart's default key names.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "chart-values-s3", "namespace": SYSTEM_NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    });
    cp.kubectl(User::Admin)
        .args(["apply", "-f", "-"])
        .stdin(secret.to_string())
        .run()
        .ok();
    let mut minio = None;
    let w = ProxiedWorld::start(
        "chart-s3",
        |dir| {
            let server = Minio::start(dir);
            server.create_bucket("team-recordings");
            let endpoint = format!("recording.storage.s3.endpoint={}", server.endpoint());
            let rendered = template(&[
                "recording.storage.type=s3",
                &endpoint,
                "recording.storage.s3.bucket=team-recordings",
                "recording.storage.s3.pathStyle=true",
                "recording.storage.s3.prefix=team-a/",
                "recording.storage.s3.region=us-east-1",
                "recording.storage.s3.credentialsSecret.name=chart-values-s3",
            ]);
            let (args, env) = rendered_proxy(rendered.ok());
            assert!(args.contains(&"--storage=s3".to_owned()), "{args:?}");
            minio = Some(server);
            Storage::Configured { args, env }
        },
        json!({}),
    )
    .await;
    let minio = minio.expect("no MinIO");
    let cert = w.issue(w.request("chart")).await;
    let out = w
        .ssh(
            &cert,
            &format!("{}@db1", w.login),
            &["echo via-chart-settings"],
        )
        .run();
    assert!(out.success, "{}\n{}", out.stderr, w.proxy.log_tail());
    let sessions = w
        .recorded("chart", 1, std::time::Duration::from_secs(30))
        .await;
    let recording = sessions[0]
        .recording
        .clone()
        .unwrap_or_else(|| panic!("no recording in {sessions:?}"));
    let object = minio
        .get("team-recordings", &format!("team-a/{}", recording.key))
        .unwrap_or_else(|| panic!("team-a/{} is not in the bucket", recording.key));
    assert_eq!(sha256_hex(&object), recording.sha256);
    assert!(String::from_utf8_lossy(&object).contains("via-chart-settings"));
}

#[tokio::test]
async fn the_proxy_locks_recordings_with_the_object_lock_values_the_chart_renders() {
    let cp = control_plane();
    cp.install_gatehouse();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "chart-values-s3-lock", "namespace": SYSTEM_NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    });
    cp.kubectl(User::Admin)
        .args(["apply", "-f", "-"])
        .stdin(secret.to_string())
        .run()
        .ok();
    let mut minio = None;
    let w = ProxiedWorld::start(
        "chart-lock",
        |dir| {
            let server = Minio::start(dir);
            server.create_locked_bucket("locked-team-recordings");
            let endpoint = format!("recording.storage.s3.endpoint={}", server.endpoint());
            let rendered = template(&[
                "recording.storage.type=s3",
                &endpoint,
                "recording.storage.s3.bucket=locked-team-recordings",
                "recording.storage.s3.pathStyle=true",
                "recording.storage.s3.credentialsSecret.name=chart-values-s3-lock",
                "recording.storage.s3.objectLock.mode=governance",
                "recording.storage.s3.objectLock.retention=2h",
            ]);
            let (args, env) = rendered_proxy(rendered.ok());
            minio = Some(server);
            Storage::Configured { args, env }
        },
        json!({}),
    )
    .await;
    let minio = minio.expect("no MinIO");
    let cert = w.issue(w.request("chart-lock")).await;
    let out = w
        .ssh(&cert, &format!("{}@db1", w.login), &["echo via-chart-lock"])
        .run();
    assert!(out.success, "{}\n{}", out.stderr, w.proxy.log_tail());
    let sessions = w
        .recorded("chart-lock", 1, std::time::Duration::from_secs(30))
        .await;
    let recording = sessions[0]
        .recording
        .clone()
        .unwrap_or_else(|| panic!("no recording in {sessions:?}"));
    let retention = minio.s3_request(
        "GET",
        &format!("locked-team-recordings/{}?retention=", recording.key),
        &[],
        None,
    );
    assert!(
        retention.stdout.contains("<Mode>GOVERNANCE</Mode>"),
        "{}{}",
        retention.stdout,
        retention.stderr
    );
}

/// Metric names in a PromQL expression: `gatehouse_…` identifiers.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("gatehouse_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_metrics_the_code_exports() {
    let path = repo_root().join("charts/gatehouse/dashboards/gatehouse.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let operator = gatehouse_operator::metrics::Metrics::new().unwrap();
    let proxy = gatehouse_proxy::metrics::Metrics::new().unwrap();
    let exported: BTreeSet<&str> = operator
        .names()
        .iter()
        .chain(proxy.names())
        .map(String::as_str)
        .collect();

    let mut queried = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        titles.push(panel["title"].as_str().unwrap_or_default().to_owned());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.is_empty(),
                "a target without expr in {}",
                panel["title"]
            );
            queried.extend(metric_names(expr));
        }
    }
    let unknown: Vec<&String> = queried
        .iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| exported.contains(f)))
                .unwrap_or(name);
            !exported.contains(family)
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no code exports: {unknown:?}\nexported: {exported:?}"
    );
    // The panels the dashboard promises, each backed by its metric.
    for (title, metric) in [
        ("Active sessions", "gatehouse_proxy_sessions_active"),
        ("Login rate", "gatehouse_proxy_logins_total"),
        ("Certificates issued", "gatehouse_certificates_issued_total"),
        (
            "Approval latency",
            "gatehouse_approval_to_issue_seconds_bucket",
        ),
        ("Upload failures", "gatehouse_proxy_upload_failures_total"),
        (
            "Admission webhook HTTP latency",
            "gatehouse_admission_duration_seconds_bucket",
        ),
    ] {
        assert!(
            titles.iter().any(|t| t == title),
            "no panel {title:?} in {titles:?}"
        );
        assert!(queried.contains(metric), "{metric} is not queried");
    }
}

/// The document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

#[tokio::test]
async fn the_audit_api_renders_only_when_enabled_with_its_certificate_and_least_privilege() {
    // Off by default: nothing of it, and the approver role is as before.
    let off = documents(template(&[]).ok());
    assert!(
        !off.iter().any(|d| {
            d["kind"] == "APIService"
                || d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("audit"))
        }),
        "auditApi is off by default"
    );
    let approver = find(&off, "ClusterRole", "gatehouse-approver");
    assert!(!approver.to_string().contains("audit.gatehouse.dev"));

    // On a volume the API needs the proxy's claim (an emptyDir is the proxy's pod's alone).
    template(&["auditApi.enabled=true"]).fails_with(&["recording.storage.volume.existingClaim"]);
    template(&["auditApi.refresh=soon"]).fails_with(&["/auditApi/refresh"]);

    let on = template(&[
        "auditApi.enabled=true",
        "recording.storage.volume.existingClaim=recordings",
    ]);
    let docs = documents(on.ok());
    let api_service = find(&docs, "APIService", "v1alpha1.audit.gatehouse.dev");
    let spec = &api_service["spec"];
    assert_eq!(spec["group"], "audit.gatehouse.dev");
    assert_eq!(spec["version"], "v1alpha1");
    assert_eq!(spec["groupPriorityMinimum"], 1000);
    assert_eq!(spec["versionPriority"], 15);
    assert_eq!(spec["service"]["name"], "gatehouse-audit-api");
    assert_eq!(spec["service"]["namespace"], SYSTEM_NAMESPACE);
    assert!(spec.get("insecureSkipTLSVerify").is_none());
    // The caBundle is the CA of the Secret the server serves with, for the Service's name.
    let secret = find(&docs, "Secret", "gatehouse-audit-api-tls");
    assert_eq!(spec["caBundle"], secret["data"]["ca.crt"]);
    let dir = tempfile::tempdir().unwrap();
    for key in ["ca.crt", "tls.crt"] {
        let pem = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            secret["data"][key].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join(key), pem).unwrap();
    }
    gatehouse_tests::Cmd::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.path().join("ca.crt"))
        .arg(dir.path().join("tls.crt"))
        .run()
        .ok();
    let san = gatehouse_tests::Cmd::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.path().join("tls.crt"))
        .run();
    assert!(
        san.ok()
            .contains(&format!("DNS:gatehouse-audit-api.{SYSTEM_NAMESPACE}.svc")),
        "{san:?}"
    );

    // The server reads the store read-only and runs locked down like the others.
    let deployment = find(&docs, "Deployment", "gatehouse-audit-api");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "gatehouse-audit-api");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["readOnly"] == true), "{mounts:?}");
    let recordings = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "recordings")
        .unwrap();
    assert_eq!(
        recordings["persistentVolumeClaim"]["claimName"],
        "recordings"
    );
    assert_eq!(recordings["persistentVolumeClaim"]["readOnly"], true);

    // RBAC: delegated authn/authz and the requestheader ConfigMap; the auditor role is not in
    // `view` unless asked; approvers read sessions, not recordings.
    let delegator = find(
        &docs,
        "ClusterRoleBinding",
        "gatehouse-audit-api:system:auth-delegator",
    );
    assert_eq!(delegator["roleRef"]["name"], "system:auth-delegator");
    let reader = find(
        &docs,
        "RoleBinding",
        "gatehouse-audit-api:extension-apiserver-authentication-reader",
    );
    assert_eq!(reader["metadata"]["namespace"], "kube-system");
    assert_eq!(
        reader["roleRef"]["name"],
        "extension-apiserver-authentication-reader"
    );
    let auditor = find(&docs, "ClusterRole", "gatehouse-auditor");
    assert!(
        auditor["metadata"]["labels"]
            .get("rbac.authorization.k8s.io/aggregate-to-view")
            .is_none()
    );
    let approver = find(&docs, "ClusterRole", "gatehouse-approver").to_string();
    assert!(approver.contains("audit.gatehouse.dev") && !approver.contains("sessions/recording"));
    let view = documents(
        template(&[
            "auditApi.enabled=true",
            "auditApi.aggregateToView=true",
            "recording.storage.volume.existingClaim=recordings",
        ])
        .ok(),
    );
    let policies = documents(
        template(&[
            "auditApi.enabled=true",
            "networkPolicy.enabled=true",
            "recording.storage.volume.existingClaim=recordings",
        ])
        .ok(),
    );
    find(&policies, "NetworkPolicy", "gatehouse-audit-api");
    assert_eq!(
        find(&view, "ClusterRole", "gatehouse-auditor")["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );

    // S3: the same bucket settings as the proxy, with credentials of its own when given.
    let s3 = [
        "auditApi.enabled=true",
        "recording.storage.type=s3",
        "recording.storage.s3.bucket=ssh-recordings",
        "recording.storage.s3.credentialsSecret.name=proxy-keys",
    ];
    let secret_of = |sets: &[&str]| {
        let docs = documents(template(sets).ok());
        let deployment = find(&docs, "Deployment", "gatehouse-audit-api");
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        let names: Vec<String> = env
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| {
                v["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert!(env.to_string().contains("ssh-recordings"), "{env}");
        names
    };
    assert_eq!(secret_of(&s3), ["proxy-keys", "proxy-keys"]);
    let mut read_only = s3.to_vec();
    read_only.push("auditApi.storage.s3.credentialsSecret.name=audit-read-only");
    assert_eq!(
        secret_of(&read_only),
        ["audit-read-only", "audit-read-only"]
    );
}
