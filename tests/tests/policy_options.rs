//! Policy options of issue 20: a per-requester cap on open requests (admission, real kubectl as
//! alice and bob), SFTP file content kept in the recording when the policy asks (real `sftp`
//! through the proxy to a real `sshd`), and the API server refusing a policy that grants port
//! forwards it cannot record (CEL on the CRD), with ratcheting for policies stored before.

use std::time::Duration;

use base64::Engine as _;
use gatehouse_crds::{Phase, rules};
use gatehouse_tests::{
    Subject, User, control_plane,
    proxied_world::ProxiedWorld,
    repo_root,
    scenario::{self, POLICY, Scenario, Setup},
    ssh_client::Client,
    unique_name, wait_for,
};
use serde_json::{Value, json};

#[tokio::test]
async fn a_requester_at_the_policys_open_request_cap_is_refused_and_others_are_not() {
    let cp = control_plane();
    let setup = Setup {
        policy_extra: json!({
            "subjects": [{"kind": "Group", "name": "dev"}, {"kind": "User", "name": "bob"}],
            "maxOpenRequestsPerRequester": 2,
        }),
        ..Setup::default()
    };
    let s = Scenario::new(cp, "open-cap", &setup).await;
    let key = scenario::public_key();
    let ask = |name: &str| scenario::request(name, "ubuntu", &key);
    s.apply(cp, User::Alice, &ask("alice-1")).ok();
    s.apply(cp, User::Alice, &ask("alice-2")).ok();
    for name in ["alice-1", "alice-2"] {
        s.wait_phase(name, Phase::Pending, Duration::from_secs(10))
            .await;
    }
    // The third open request of alice's under the policy is refused by admission, naming the
    // policy, the field and the limit (the webhook's cache saw the first two within a moment).
    let refused = wait_for(
        Duration::from_secs(10),
        "alice's third request refused",
        || async {
            let out = s.apply(cp, User::Alice, &ask("alice-3"));
            (!out.success).then_some(out)
        },
    )
    .await;
    refused.fails_with(&[
        &format!("AccessPolicy {}/{POLICY}", s.ns),
        "spec.maxOpenRequestsPerRequester: 2",
        "alice already has 2 (alice-1, alice-2)",
    ]);
    // bob, in the same namespace under the same policy, is not affected.
    s.apply(cp, User::Bob, &ask("bob-1")).ok();
    s.wait_phase("bob-1", Phase::Pending, Duration::from_secs(10))
        .await;
    // Once alice withdraws one, she may ask again.
    s.annotate(
        cp,
        User::Alice,
        "alice-1",
        "gatehouse.dev/revoke",
        "not needed",
    )
    .ok();
    s.wait_phase("alice-1", Phase::Revoked, Duration::from_secs(10))
        .await;
    wait_for(
        Duration::from_secs(10),
        "alice's third request accepted",
        || async {
            s.apply(cp, User::Alice, &ask("alice-3"))
                .success
                .then_some(())
        },
    )
    .await;
    s.wait_phase("alice-3", Phase::Pending, Duration::from_secs(10))
        .await;
}

fn forwarding_policy(name: &str, recording: Value) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "subjects": [{"kind": "Group", "name": "dev"}],
            "hostSelector": {"matchLabels": {"env": "prod"}},
            "logins": ["ubuntu"],
            "certificate": {"extensions": ["permit-pty", "permit-port-forwarding"]},
            "recording": recording,
        }
    })
}

#[tokio::test]
async fn a_policy_granting_forwards_it_cannot_record_is_refused_with_what_to_change() {
    let cp = control_plane();
    cp.install_gatehouse();
    let ns = cp.namespace("fwd-policy").await;
    // The policy author: carol, with the chart's gatehouse-admin role in the namespace.
    cp.bind(&ns, "gatehouse-admin", Subject::User("carol"));
    for (what, recording) in [
        ("recording by default", json!({})),
        ("recording.required: true", json!({"required": true})),
        (
            "allowForwards: false",
            json!({"required": true, "allowForwards": false}),
        ),
    ] {
        let out = cp.apply_as(User::Carol, &ns, &forwarding_policy("fwd", recording));
        assert!(!out.success, "{what}: accepted\n{}", out.stdout);
        out.fails_with(&[
            "spec.certificate.extensions",
            rules::FORWARDS_RECORDED_MESSAGE,
        ]);
    }
    for (name, recording) in [
        ("fwd-allowed", json!({"allowForwards": true})),
        ("fwd-unrecorded", json!({"required": false})),
    ] {
        cp.apply_as(User::Carol, &ns, &forwarding_policy(name, recording))
            .ok();
    }
}

/// The chart's AccessPolicy CRD (or `yaml`) moved to API group `group`, so a test can swap its
/// versions without touching the real one every other test uses.
fn crd_in_group(yaml: &str, group: &str) -> Value {
    let mut crd: Value =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("the CRD does not parse: {e}"));
    crd["metadata"]["name"] = json!(format!("accesspolicies.{group}"));
    crd["spec"]["group"] = json!(group);
    crd
}

#[tokio::test]
async fn policies_stored_before_the_forwards_rule_stay_readable_and_updatable() {
    let cp = control_plane();
    let ns = cp.namespace("ratchet").await;
    let group = format!("{}.test.gatehouse.dev", unique_name("ratchet"));
    let before = std::fs::read_to_string(
        repo_root().join("tests/fixtures/accesspolicies-before-forwards-rule.yaml"),
    )
    .expect("the CRD before the rule");
    let after = std::fs::read_to_string(
        repo_root().join("charts/gatehouse/crds/accesspolicies.gatehouse.dev.yaml"),
    )
    .expect("the chart's CRD");
    let install = |yaml: &str| {
        cp.kubectl(User::Admin)
            .args(["apply", "-f", "-"])
            .stdin(crd_in_group(yaml, &group).to_string())
            .run()
            .ok();
        cp.kubectl(User::Admin)
            .args(["wait", "--for=condition=Established", "--timeout=30s"])
            .arg(format!("crd/accesspolicies.{group}"))
            .run()
            .ok();
    };
    let in_group = |mut policy: Value| {
        policy["apiVersion"] = json!(format!("{group}/v1alpha1"));
        policy
    };
    let kubectl = |args: &[&str]| {
        cp.kubectl(User::Admin)
            .args(["-n", &ns])
            .args(args.iter().copied())
            .run()
    };
    let resource = format!("accesspolicies.{group}");
    install(&before);
    cp.apply_as(
        User::Admin,
        &ns,
        &in_group(forwarding_policy("old", json!({}))),
    )
    .ok();
    install(&after);
    // The new rule is in force once a new such policy is refused.
    wait_for(Duration::from_secs(15), "the new CRD in force", || async {
        let out = cp.apply_as(
            User::Admin,
            &ns,
            &in_group(forwarding_policy("new", json!({}))),
        );
        (!out.success && out.stderr.contains(rules::FORWARDS_RECORDED_MESSAGE)).then_some(())
    })
    .await;
    // The stored one reads, and takes a metadata change (ratcheting) and an unrelated spec
    // change (the rule's oldSelf clause: certificate and recording are as they were).
    kubectl(&["get", &resource, "old", "-o", "name"]).ok();
    kubectl(&["label", &resource, "old", "team=db"]).ok();
    kubectl(&[
        "patch",
        &resource,
        "old",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxDuration":"2h"}}"#,
    ])
    .ok();
    // Fixed, it cannot go back: an edit that introduces the breach is refused.
    kubectl(&[
        "patch",
        &resource,
        "old",
        "--type=merge",
        "-p",
        r#"{"spec":{"recording":{"allowForwards":true}}}"#,
    ])
    .ok();
    kubectl(&[
        "patch",
        &resource,
        "old",
        "--type=merge",
        "-p",
        r#"{"spec":{"recording":{"allowForwards":false}}}"#,
    ])
    .fails_with(&[rules::FORWARDS_RECORDED_MESSAGE]);
    cp.kubectl(User::Admin)
        .args(["delete", "crd", &format!("accesspolicies.{group}")])
        .run();
}

/// The `m` events of a stored recording.
fn marks(cast: &str) -> Vec<String> {
    cast.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "m")
        .map(|e| e[2].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `sftp put` of `files` (name, content) through world `w`; returns the stored recording.
async fn put(w: &ProxiedWorld, files: &[(&str, Vec<u8>)]) -> (String, String) {
    let cert = w.issue(w.request("put")).await;
    let remote = w.dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap_or_else(|e| panic!("{}: {e}", remote.display()));
    let mut batch = String::new();
    for (name, content) in files {
        let local = w.dir.path().join(name);
        std::fs::write(&local, content).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
        batch.push_str(&format!(
            "put {} {}/{name}\n",
            local.display(),
            remote.display()
        ));
    }
    let out = w
        .client(Client::Sftp, &cert, &format!("{}@db1", w.login))
        .stdin(batch)
        .run();
    assert_eq!(
        out.code,
        Some(0),
        "sftp: {}\n{}",
        out.stderr,
        w.proxy.log_tail()
    );
    let sessions = w.recorded("put", 1, Duration::from_secs(30)).await;
    let Some(recording) = sessions[0].recording.clone() else {
        panic!("no recording in {sessions:?}");
    };
    let key = recording.key;
    let cast = std::fs::read_to_string(w.local_store().join(&key))
        .unwrap_or_else(|e| panic!("reading the recording {key}: {e}"));
    (cast, remote.display().to_string())
}

#[tokio::test]
async fn sftp_file_content_is_in_the_recording_only_when_the_policy_keeps_it() {
    let small = b"FILE-CONTENT-KEPT-\x00\x01\xff binary too\n".to_vec();
    let large: Vec<u8> = (0..10_000u32)
        .map(|i| b"0123456789"[(i % 10) as usize])
        .collect();
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);

    let keeping = ProxiedWorld::start(
        "sftp-content",
        ProxiedWorld::local_storage,
        json!({"recording": {"fileContent": {"maxBytesPerFile": 4096}}}),
    )
    .await;
    let (cast, r) = put(
        &keeping,
        &[("small.bin", small.clone()), ("large.txt", large.clone())],
    )
    .await;
    let marks_kept = marks(&cast);
    let want = [
        format!("sftp content write 0 {} {r}/small.bin", b64(&small)),
        format!("sftp content write 0 {} {r}/large.txt", b64(&large[..4096])),
        format!("sftp content-cut write 4096 {r}/large.txt"),
        format!("sftp close {r}/large.txt (read 0 bytes, wrote 10000 bytes)"),
    ];
    for event in &want {
        assert!(
            marks_kept.contains(event),
            "{event:?} not in {marks_kept:#?}"
        );
    }
    // Content stays out of the proxy's log.
    assert!(
        !keeping.proxy.log_text().contains(&b64(&small)),
        "file content in the proxy's log"
    );

    let plain = ProxiedWorld::with_local_store("sftp-no-content").await;
    let (cast, r) = put(&plain, &[("small.bin", small.clone())]).await;
    let marks_plain = marks(&cast);
    assert!(
        marks_plain.contains(&format!(
            "sftp close {r}/small.bin (read 0 bytes, wrote {} bytes)",
            small.len()
        )),
        "{marks_plain:#?}"
    );
    assert!(
        !marks_plain.iter().any(|m| m.starts_with("sftp content")) && !cast.contains(&b64(&small)),
        "content recorded without recording.fileContent: {marks_plain:#?}"
    );
}
