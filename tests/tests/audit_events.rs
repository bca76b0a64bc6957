//! Audit events in the logs (issue 15, first slice), end to end: alice creates a request
//! with real kubectl, bob approves it, the real operator issues it, a real `ssh` session goes
//! through the real `gatehouse-proxy` to a real `sshd`, alice revokes it. The operator's and
//! the proxy's JSON logs carry one `gatehouse::audit` line per fact, each with the event's
//! JSON whole in its `event` field: requestCreated (alice), approved (bob), issued, revoked
//! (alice); loginAccepted, sessionStarted, sessionEnded for the request. A login with a
//! certificate from a CA of the attacker's own is a loginRefused naming the rule and the
//! source address.

use std::time::Duration;

use gatehouse_crds::{
    Phase,
    audit::LOG_TARGET,
    contract::{annotations, identity},
};
use gatehouse_tests::{
    User,
    proxied_world::ProxiedWorld,
    sshd::{CertSpec, generate_key},
    wait_for,
};
use serde_json::{Value, json};

/// The audit events in a JSON log, parsed from each `gatehouse::audit` line's `event` field.
fn audit_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == LOG_TARGET)
        .map(|line| {
            let text = line["event"].as_str().unwrap_or_default().to_owned();
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the event field is not one JSON event ({e}): {line}"))
        })
        .collect()
}

/// The events of request `name` in namespace `ns`.
fn of_request(events: &[Value], ns: &str, name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["namespace"] == ns && e["request"]["name"] == name)
        .cloned()
        .collect()
}

/// (type, actor user) of each event.
fn story(events: &[Value]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["actor"]["user"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn pair(t: &str, user: Option<&str>) -> (String, Option<String>) {
    (t.to_owned(), user.map(str::to_owned))
}

#[tokio::test]
async fn a_request_story_and_a_refused_login_are_audit_events_in_the_logs() {
    let w = ProxiedWorld::start(
        "audit",
        ProxiedWorld::local_storage,
        json!({"approval": {"required": 1}}),
    )
    .await;
    let ns = w.s.ns.clone();
    let operator_log = w.cp.dir().join("operator.log");

    w.s.apply(w.cp, User::Alice, &w.request("story")).ok();
    w.s.wait_phase("story", Phase::Pending, Duration::from_secs(10))
        .await;
    w.s.annotate(w.cp, User::Bob, "story", annotations::APPROVE, "lgtm")
        .ok();
    let issued =
        w.s.wait_phase("story", Phase::Issued, Duration::from_secs(10))
            .await;
    let status = issued.status.clone().unwrap_or_default();
    let uid = issued.metadata.uid.clone().unwrap_or_default();
    let cert = w.dir.path().join("story-cert.pub");
    std::fs::write(&cert, status.certificate.clone().unwrap_or_default()).unwrap();

    let user = format!("{}@db1", w.login);
    let out = w.ssh(&cert, &user, &["echo audit-hello; exit 3"]).run();
    assert_eq!(out.stdout.trim(), "audit-hello", "{out:?}");
    assert_eq!(out.code, Some(3), "{out:?}");

    w.s.annotate(w.cp, User::Alice, "story", annotations::REVOKE, "done")
        .ok();
    w.s.wait_phase("story", Phase::Revoked, Duration::from_secs(10))
        .await;

    // The operator's story, in order, with who did what.
    let operator = wait_for(
        Duration::from_secs(10),
        "the operator's audit events of the story",
        || async {
            let log = std::fs::read_to_string(&operator_log).unwrap_or_default();
            let events = of_request(&audit_events(&log), &ns, "story");
            (events.len() >= 4).then_some(events)
        },
    )
    .await;
    assert_eq!(
        story(&operator),
        vec![
            pair("requestCreated", Some("alice")),
            pair("approved", Some("bob")),
            pair("issued", None),
            pair("revoked", Some("alice")),
        ],
        "{operator:#?}"
    );
    for event in &operator {
        assert_eq!(event["request"]["uid"], uid.as_str(), "{event}");
        assert!(
            event["time"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "time is not RFC 3339: {event}"
        );
    }
    assert_eq!(operator[0]["actor"]["kind"], "kubernetes");
    assert!(
        operator[0]["actor"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "dev")),
        "{}",
        operator[0]
    );
    assert_eq!(operator[1]["message"], "lgtm");
    assert_eq!(operator[3]["outcome"], "Revoked");

    // The proxy's: the login for the request, the session with its exit status and bytes.
    let proxy = wait_for(
        Duration::from_secs(10),
        "the proxy's audit events of the session",
        || async {
            let events = of_request(&audit_events(&w.proxy.log_text()), &ns, "story");
            events
                .iter()
                .any(|e| e["type"] == "sessionEnded")
                .then_some(events)
        },
    )
    .await;
    assert_eq!(
        story(&proxy),
        vec![
            pair("loginAccepted", Some("alice")),
            pair("sessionStarted", Some("alice")),
            pair("sessionEnded", Some("alice")),
        ],
        "{proxy:#?}"
    );
    let login = &proxy[0];
    assert_eq!(login["actor"]["kind"], "ssh");
    assert!(
        login["actor"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{login}"
    );
    assert!(
        login["sourceAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{login}"
    );
    assert_eq!(login["request"]["uid"], uid.as_str());
    assert_eq!(login["host"], "db1");
    assert_eq!(login["login"], w.login.as_str());
    let ended = &proxy[2];
    assert_eq!(ended["sessionId"], proxy[1]["sessionId"]);
    assert_eq!(ended["outcome"], "exit 3", "{ended}");
    let message = ended["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("12 bytes to the client"),
        "`audit-hello\\n` is 12 bytes: {message}"
    );

    // An attacker's own CA: refused, with the rule and where it came from.
    let (rogue_ca, _) = generate_key(w.dir.path(), "rogue-ca");
    let principal = identity::proxied_principal(&ns, "story");
    let rogue = w.certificate_from(
        &rogue_ca,
        "rogue",
        &CertSpec {
            key_id: status.key_id.as_deref().unwrap_or_default(),
            principals: &[&principal],
            validity: "-5m:+1h",
            serial: 1,
        },
    );
    let out = w.ssh(&rogue, &user, &["true"]).run();
    assert_eq!(out.code, Some(255), "{out:?}");
    let refused = wait_for(Duration::from_secs(10), "a loginRefused event", || async {
        audit_events(&w.proxy.log_text())
            .into_iter()
            .find(|e| e["type"] == "loginRefused" && e["actor"]["user"] == user.as_str())
    })
    .await;
    assert!(
        refused["sourceAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{refused}"
    );
    assert!(
        refused["outcome"].as_str().is_some_and(|o| !o.is_empty()),
        "the rule is named: {refused}"
    );
    assert!(
        refused["actor"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{refused}"
    );
    assert!(refused.get("request").is_none(), "{refused}");
}
