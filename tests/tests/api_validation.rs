//! The API server, with the chart's CRDs installed, accepts good Gatehouse objects and rejects
//! bad ones with messages that name the field and the rule.

use gatehouse_crds::rules;
use std::time::Duration;

use gatehouse_tests::{Subject, User, control_plane, wait_for};
use serde_json::{Value, json};

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIISa1AY8mpx0OMvpQM9rRmi9MFzv63hBz+TstwkC/lzx alice@laptop";
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBjMjrTwM1TVoZFKhZqYp/GfWQxyJsn6n6Dtdx1U3FvW root@db1";
const RSA_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7vbqajDhA alice@old-laptop";
const ECDSA_KEY: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBPXbKAXACuaeUP9BRc7xsQsuF2tB25Ey9i9knvXAOWHpex/gyp90TW+ooIlKTg5KGdPHK6VnCGL1DIOZmvh7rBZm97GKq4PwNAsB1Sc8TqJvrFkhbvG/U06APYAZynRgoA== bob@yubikey";

fn host_group(name: &str) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "HostGroup",
        "metadata": {"name": name, "labels": {"env": "prod"}},
        "spec": {"hosts": [{"name": "db1", "address": "10.0.0.1", "hostKeys": [HOST_KEY]}]}
    })
}

fn policy(name: &str) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "subjects": [{"kind": "Group", "name": "dev"}],
            "hostSelector": {"matchLabels": {"env": "prod"}},
            "logins": ["ubuntu"],
            "maxDuration": "2h"
        }
    })
}

fn request(name: &str) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": name},
        "spec": {
            "target": {"hostGroup": "prod"},
            "login": "ubuntu",
            "duration": "30m",
            "reason": "INC-1",
            "publicKey": ALICE_KEY
        }
    })
}

/// Set the JSON value at a `/`-separated path, creating objects on the way.
fn set(mut obj: Value, path: &str, value: Value) -> Value {
    let mut cursor = &mut obj;
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cursor = match cursor {
            Value::Array(items) => {
                let index: usize = part.parse().unwrap_or_else(|_| panic!("index {part}"));
                &mut items[index]
            }
            Value::Object(map) => {
                if last {
                    map.insert((*part).to_owned(), value);
                    return obj;
                }
                map.entry((*part).to_owned()).or_insert_with(|| json!({}))
            }
            other => panic!("cannot descend into {other} at {part}"),
        };
        if last {
            *cursor = value;
            return obj;
        }
    }
    obj
}

fn create(ns: &str, obj: &Value) -> gatehouse_tests::CmdOutput {
    control_plane()
        .kubectl(User::Admin)
        .args(["create", "-n", ns, "-f", "-"])
        .stdin(obj.to_string())
        .run()
}

#[tokio::test]
async fn good_objects_are_accepted_and_defaulted() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("valid").await;
    for obj in [
        host_group("prod"),
        policy("p"),
        request("r"),
        set(request("ecdsa"), "spec/publicKey", json!(ECDSA_KEY)),
        // No reason is fine at the schema level (policies decide whether one is required).
        {
            let mut r = request("no-reason");
            r["spec"].as_object_mut().map(|s| s.remove("reason"));
            r
        },
        set(request("edge-5m"), "spec/duration", json!("5m")),
        set(request("edge-24h"), "spec/duration", json!("24h")),
        set(request("mixed"), "spec/duration", json!("1h30m")),
    ] {
        create(&ns, &obj).ok();
    }
    // Defaults come from the schema, so every client sees the same object.
    let client = cp.client(User::Admin).await;
    let groups: kube::Api<gatehouse_crds::HostGroup> = kube::Api::namespaced(client.clone(), &ns);
    let hg = groups.get("prod").await.unwrap();
    assert_eq!(hg.spec.mode, gatehouse_crds::HostGroupMode::Proxied);
    assert_eq!(hg.spec.hosts[0].port, 22);
    let policies: kube::Api<gatehouse_crds::AccessPolicy> = kube::Api::namespaced(client, &ns);
    let p = policies.get("p").await.unwrap();
    assert_eq!(p.spec.approval.required, 1);
    assert!(!p.spec.require_reason);
    assert!(
        p.spec.recording.required,
        "recording fails closed by default"
    );
    assert_eq!(
        p.spec.certificate.extensions,
        vec![gatehouse_crds::CertificateExtension::PermitPty]
    );
}

#[tokio::test]
async fn bad_input_is_rejected_with_a_message_naming_the_field() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("invalid").await;
    let long_reason = "x".repeat(1025);
    let mut truncated_key = ALICE_KEY.replace(" alice@laptop", "");
    truncated_key.truncate(truncated_key.len() - 4);
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "duration below 5m",
            set(request("a"), "spec/duration", json!("4m")),
            vec![
                r#"spec.duration: Invalid value: "4m""#,
                rules::DURATION_BOUNDS_MESSAGE,
            ],
        ),
        (
            "duration above 24h",
            set(request("a"), "spec/duration", json!("25h")),
            vec![
                r#"spec.duration: Invalid value: "25h""#,
                rules::DURATION_BOUNDS_MESSAGE,
            ],
        ),
        (
            "duration not a Go duration",
            set(request("a"), "spec/duration", json!("1d")),
            vec![
                r#"spec.duration: Invalid value: "1d""#,
                rules::DURATION_BOUNDS_MESSAGE,
            ],
        ),
        (
            "negative duration",
            set(request("a"), "spec/duration", json!("-30m")),
            vec![
                "spec.duration: Invalid value",
                rules::DURATION_BOUNDS_MESSAGE,
            ],
        ),
        (
            "maxDuration above 24h",
            set(policy("a"), "spec/maxDuration", json!("48h")),
            vec![
                r#"spec.maxDuration: Invalid value: "48h""#,
                rules::DURATION_BOUNDS_MESSAGE,
            ],
        ),
        (
            "maxDuration below 5m",
            set(policy("a"), "spec/maxDuration", json!("60s")),
            vec![
                r#"spec.maxDuration: Invalid value: "60s""#,
                rules::DURATION_BOUNDS_MESSAGE,
            ],
        ),
        (
            "empty reason",
            set(request("a"), "spec/reason", json!("")),
            vec![
                r#"spec.reason: Invalid value: """#,
                rules::NON_BLANK_MESSAGE,
            ],
        ),
        (
            "blank reason",
            set(request("a"), "spec/reason", json!("  \t ")),
            vec!["spec.reason: Invalid value", rules::NON_BLANK_MESSAGE],
        ),
        (
            "reason over 1 KiB",
            set(request("a"), "spec/reason", json!(long_reason)),
            vec!["spec.reason: Too long: may not be more than 1024"],
        ),
        (
            "public key garbage",
            set(
                request("a"),
                "spec/publicKey",
                json!("ssh-ed25519 AAAAnotakey"),
            ),
            vec![
                r#"spec.publicKey: Invalid value: "ssh-ed25519 AAAAnotakey""#,
                rules::USER_PUBLIC_KEY_MESSAGE,
            ],
        ),
        (
            "public key truncated",
            set(request("a"), "spec/publicKey", json!(truncated_key)),
            vec![
                "spec.publicKey: Invalid value",
                rules::USER_PUBLIC_KEY_MESSAGE,
            ],
        ),
        (
            "RSA public key",
            set(request("a"), "spec/publicKey", json!(RSA_KEY)),
            vec![
                "spec.publicKey: Invalid value",
                "RSA and DSA keys are not accepted",
            ],
        ),
        (
            "two keys in one field",
            set(
                request("a"),
                "spec/publicKey",
                json!(format!("{ALICE_KEY}\n{ALICE_KEY}")),
            ),
            vec![
                "spec.publicKey: Invalid value",
                rules::USER_PUBLIC_KEY_MESSAGE,
            ],
        ),
        (
            "private key pasted",
            set(
                request("a"),
                "spec/publicKey",
                json!("-----BEGIN OPENSSH PRIVATE KEY-----"),
            ),
            vec![
                "spec.publicKey: Invalid value",
                rules::USER_PUBLIC_KEY_MESSAGE,
            ],
        ),
        (
            "login with capitals",
            set(request("a"), "spec/login", json!("Root!")),
            vec![r#"spec.login: Invalid value: "Root!""#, "should match"],
        ),
        (
            "missing target host group",
            set(request("a"), "spec/target", json!({"host": "db1"})),
            vec!["spec.target.hostGroup: Required value"],
        ),
        (
            "unknown mode",
            set(host_group("a"), "spec/mode", json!("Sideways")),
            vec![
                r#"spec.mode: Unsupported value: "Sideways""#,
                r#"supported values: "Proxied", "Direct""#,
            ],
        ),
        (
            "port 0",
            set(host_group("a"), "spec/hosts/0/port", json!(0)),
            vec![
                "spec.hosts[0].port: Invalid value: 0",
                "greater than or equal to 1",
            ],
        ),
        (
            "port 65536",
            set(host_group("a"), "spec/hosts/0/port", json!(65536)),
            vec![
                "spec.hosts[0].port: Invalid value: 65536",
                "less than or equal to 65535",
            ],
        ),
        (
            "host without pinned keys or CA",
            set(host_group("a"), "spec/hosts/0/hostKeys", json!([])),
            vec!["spec: Invalid value", rules::HOST_TRUST_MESSAGE],
        ),
        (
            "address with a port",
            set(
                host_group("a"),
                "spec/hosts/0/address",
                json!("10.0.0.1:22"),
            ),
            vec![
                r#"spec.hosts[0].address: Invalid value: "10.0.0.1:22""#,
                rules::ADDRESS_MESSAGE,
            ],
        ),
        (
            "address with a scheme",
            set(host_group("a"), "spec/hosts/0/address", json!("ssh://db1")),
            vec![
                "spec.hosts[0].address: Invalid value",
                rules::ADDRESS_MESSAGE,
            ],
        ),
        (
            "no hosts",
            set(host_group("a"), "spec/hosts", json!([])),
            vec!["spec.hosts: Invalid value", "at least 1 items"],
        ),
        (
            "duplicate host names",
            set(
                host_group("a"),
                "spec/hosts",
                json!([{"name": "db1", "address": "a", "hostKeys": [HOST_KEY]}, {"name": "db1", "address": "b", "hostKeys": [HOST_KEY]}]),
            ),
            vec!["spec.hosts[1]: Duplicate value"],
        ),
        (
            "unknown subject kind",
            set(policy("a"), "spec/subjects/0/kind", json!("Robot")),
            vec![
                r#"spec.subjects[0].kind: Unsupported value: "Robot""#,
                r#""User", "Group", "ServiceAccount""#,
            ],
        ),
        (
            "namespace on a User subject",
            set(
                policy("a"),
                "spec/subjects/0",
                json!({"kind": "User", "name": "alice", "namespace": "team"}),
            ),
            vec![
                "spec.subjects[0]: Invalid value",
                rules::SUBJECT_NAMESPACE_MESSAGE,
            ],
        ),
        (
            "unknown certificate extension",
            set(
                policy("a"),
                "spec/certificate/extensions",
                json!(["permit-everything"]),
            ),
            vec![r#"spec.certificate.extensions[0]: Unsupported value: "permit-everything""#],
        ),
        (
            "bad source address",
            set(
                policy("a"),
                "spec/certificate/sourceAddresses",
                json!(["10.0.0.0/8", "the office"]),
            ),
            vec![
                "spec.certificate.sourceAddresses: Invalid value",
                rules::SOURCE_ADDRESS_MESSAGE,
            ],
        ),
        (
            "too many approvals",
            set(policy("a"), "spec/approval/required", json!(6)),
            vec![
                "spec.approval.required: Invalid value: 6",
                "less than or equal to 5",
            ],
        ),
        (
            "no logins",
            set(policy("a"), "spec/logins", json!([])),
            vec!["spec.logins: Invalid value", "at least 1 items"],
        ),
        (
            "no subjects",
            set(policy("a"), "spec/subjects", json!([])),
            vec!["spec.subjects: Invalid value", "at least 1 items"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, obj, needles) in &cases {
        let out = create(&ns, obj);
        let missing: Vec<&&str> = needles
            .iter()
            .filter(|n| !out.stderr.contains(**n))
            .collect();
        if out.success || !missing.is_empty() {
            failures.push(format!(
                "{what}: success={} missing={missing:?}\n  stderr: {}",
                out.success,
                out.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn access_request_spec_is_immutable_but_metadata_and_status_are_not() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("immutable").await;
    cp.bind(&ns, "gatehouse-requester", Subject::Group("dev"));
    // Created by alice: admission stamps spec.requester from her identity.
    let forged = request("r");
    cp.apply_as(User::Alice, &ns, &forged).ok();
    let kubectl = || cp.kubectl(User::Admin).args(["-n", ns.as_str()]);
    for patch in [
        json!({"spec": {"login": "root"}}),
        json!({"spec": {"duration": "2h"}}),
        json!({"spec": {"target": {"hostGroup": "other"}}}),
        json!({"spec": {"requester": {"username": "mallory"}}}),
        json!({"spec": {"requester": {"groups": ["system:masters"]}}}),
    ] {
        kubectl()
            .args([
                "patch",
                "accessrequest",
                "r",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ])
            .run()
            .fails_with(&["spec: Invalid value", rules::IMMUTABLE_SPEC_MESSAGE]);
    }
    // `kubectl apply` of an edited manifest is refused the same way.
    let edited = set(
        set(forged.clone(), "spec/duration", json!("8h")),
        "spec/requester",
        json!({"username": "alice", "uid": "uid-alice", "groups": ["dev", "system:authenticated"]}),
    );
    kubectl()
        .args(["apply", "-f", "-"])
        .stdin(edited.to_string())
        .run()
        .fails_with(&[rules::IMMUTABLE_SPEC_MESSAGE]);
    // Labels, annotations and status remain writable.
    // Labels and annotations stay writable by the request's owner (admission keeps everyone
    // else out, see trust_boundaries.rs), and status by whoever may write it.
    let alice = || cp.kubectl(User::Alice).args(["-n", ns.as_str()]);
    alice()
        .args(["label", "accessrequest", "r", "team=db"])
        .run()
        .ok();
    alice()
        .args(["annotate", "accessrequest", "r", "note=hello"])
        .run()
        .ok();
    kubectl()
        .args([
            "patch",
            "accessrequest",
            "r",
            "--subresource=status",
            "--type=merge",
        ])
        .args(["-p", r#"{"status":{"phase":"Pending"}}"#])
        .run()
        .ok();
    let spec = kubectl()
        .args([
            "get",
            "accessrequest",
            "r",
            "-o",
            "jsonpath={.spec.login} {.spec.requester.username}",
        ])
        .run();
    assert_eq!(spec.ok(), "ubuntu alice");
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("columns").await;
    cp.bind(&ns, "gatehouse-requester", Subject::Group("dev"));
    create(&ns, &host_group("prod")).ok();
    // Auto-approved, so the operator issues at once and the columns show real status.
    create(
        &ns,
        &set(policy("p"), "spec/approval", json!({"required": 0})),
    )
    .ok();
    let req = set(request("alice-db"), "spec/target/host", json!("db1"));
    cp.apply_as(User::Alice, &ns, &req).ok();
    let requests: kube::Api<gatehouse_crds::AccessRequest> =
        kube::Api::namespaced(cp.client(User::Admin).await, &ns);
    let valid_before = wait_for(Duration::from_secs(10), "alice-db to be Issued", || async {
        let r = requests.get("alice-db").await.ok()?;
        let status = r.status?;
        (status.phase == Some(gatehouse_crds::Phase::Issued)).then_some(
            status
                .valid_before?
                .0
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        )
    })
    .await;
    let get = |args: &[&str]| {
        cp.kubectl(User::Admin)
            .args(["-n", &ns, "get"])
            .args(args)
            .run()
            .ok()
            .to_owned()
    };

    let table = get(&["accessrequests"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REQUESTER",
            "TARGET",
            "LOGIN",
            "PHASE",
            "EXPIRES",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..6],
        [
            "alice-db",
            "alice",
            "prod",
            "ubuntu",
            "Issued",
            valid_before.as_str()
        ],
        "{table}"
    );

    let wide = get(&["ar", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or_default().contains("HOST"),
        "{wide}"
    );
    assert!(wide.contains("db1"), "{wide}");

    let groups = get(&["hg"]);
    assert_eq!(
        groups
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "MODE", "HOSTS", "READY", "AGE"]
    );
    assert!(groups.contains("Proxied"), "{groups}");

    let policies = get(&["ap"]);
    assert_eq!(
        policies
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "LOGINS", "MAX", "DURATION", "APPROVALS", "AGE"]
    );
    assert!(
        policies.contains("2h") && policies.contains("[\"ubuntu\"]"),
        "{policies}"
    );

    // The `gatehouse` category lists all three kinds at once.
    let all = get(&["gatehouse", "-o", "name"]);
    for expected in [
        "hostgroup.gatehouse.dev/prod",
        "accesspolicy.gatehouse.dev/p",
        "accessrequest.gatehouse.dev/alice-db",
    ] {
        assert!(
            all.contains(expected),
            "{expected} missing from `kubectl get gatehouse`:\n{all}"
        );
    }
}

#[tokio::test]
async fn kubectl_explain_documents_every_field() {
    let cp = control_plane();
    cp.install_gatehouse();
    // kubectl wraps descriptions: compare on collapsed white space.
    let explain = |path: &str| {
        let out = cp.kubectl(User::Admin).args(["explain", path]).run();
        out.ok().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let cases = [
        ("accessrequest.spec.duration", "from 5m to 24h"),
        ("accessrequest.spec.publicKey", "private key never leaves"),
        (
            "accessrequest.spec.requester",
            "Set by the API server's admission",
        ),
        ("accessrequest.status.conditions", "Approved"),
        ("accessrequest.status.sessions.recording.sha256", "SHA-256"),
        ("accesspolicy.spec.approval.required", "four-eyes"),
        ("accesspolicy.spec.hostSelector", "AND"),
        ("accesspolicy.spec.recording.required", "Fail closed"),
        ("hostgroup.spec.mode", "recording"),
        (
            "hostgroup.spec.hosts.hostKeys",
            "refuses a host presenting any other key",
        ),
    ];
    for (path, needle) in cases {
        let text = explain(path);
        assert!(
            text.contains(needle),
            "`kubectl explain {path}` lacks {needle:?}:\n{text}"
        );
    }
    // Every field has a description: `kubectl explain --recursive` lists fields, and the
    // schema itself must carry a description on every property.
    for crd in gatehouse_crds::crd_manifests().unwrap() {
        let doc: Value = serde_saphyr::from_str(&crd.yaml).unwrap();
        let schema = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut undocumented = Vec::new();
        find_undocumented(schema, "", &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "{}: properties without description: {undocumented:?}",
            crd.file_name
        );
    }
}

fn find_undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            // apiVersion/kind/metadata are Kubernetes' own.
            let standard =
                path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
            if !standard && prop.get("description").is_none() {
                out.push(here.clone());
            }
            find_undocumented(prop, &here, out);
        }
    }
    if let Some(items) = schema.get("items") {
        find_undocumented(items, &format!("{path}[]"), out);
    }
}
