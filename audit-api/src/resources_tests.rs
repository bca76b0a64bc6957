#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_crds::audit::{Actor, EventType, RecordingDetail, RequestRef};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use std::sync::Arc;

use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn sample() -> Session {
    Session {
        id: "0a1b2c3d4e5f6071".into(),
        namespace: "team".into(),
        request: Some(RequestRef {
            name: "alice-db".into(),
            uid: "u1".into(),
        }),
        user: Some("alice".into()),
        host: Some("prod-db-01".into()),
        login: Some("root".into()),
        kind: Some("shell".into()),
        start: Some(ts("2026-12-03T10:00:00.123456Z")),
        end: Some(ts("2026-12-03T10:05:00Z")),
        bytes_to_target: Some(1),
        bytes_to_client: Some(2),
        exit_status: Some(0),
        recording: Some(RecordingDetail {
            key: "k.cast".into(),
            sha256: "ab".into(),
            bytes: 3,
        }),
        commands: 4,
        file_operations: 5,
        forwards: 6,
        first_seen: ts("2026-12-03T09:59:59Z"),
    }
}

#[test]
fn a_session_renders_as_the_contract_says() {
    assert_eq!(
        session(&sample()),
        json!({
            "apiVersion": "audit.gatehouse.dev/v1alpha1",
            "kind": "Session",
            "metadata": {
                "name": "0a1b2c3d4e5f6071",
                "namespace": "team",
                "creationTimestamp": "2026-12-03T10:00:00Z",
            },
            "spec": {
                "request": {"name": "alice-db", "uid": "u1"},
                "user": "alice", "host": "prod-db-01", "login": "root", "sessionKind": "shell",
            },
            "status": {
                "start": "2026-12-03T10:00:00.123456Z", "end": "2026-12-03T10:05:00.000000Z",
                "bytesToTarget": 1, "bytesToClient": 2, "exitStatus": 0,
                "recording": {"key": "k.cast", "sha256": "ab", "bytes": 3},
                "commands": 4, "fileOperations": 5, "forwards": 6,
            },
        })
    );
    // A session still running (or whose start was dropped): what is unknown is left out.
    let mut running = sample();
    running.start = None;
    running.end = None;
    running.exit_status = None;
    running.bytes_to_client = None;
    running.bytes_to_target = None;
    running.recording = None;
    running.request = None;
    running.kind = None;
    let value = session(&running);
    assert_eq!(
        value["metadata"]["creationTimestamp"],
        "2026-12-03T09:59:59Z"
    );
    assert_eq!(
        value["status"],
        json!({"commands": 4, "fileOperations": 5, "forwards": 6})
    );
    assert_eq!(
        value["spec"],
        json!({"user": "alice", "host": "prod-db-01", "login": "root"})
    );
    let list = session_list(&[&sample()]);
    assert_eq!(list["kind"], "SessionList");
    assert_eq!(list["apiVersion"], "audit.gatehouse.dev/v1alpha1");
    assert_eq!(list["items"][0], session(&sample()));
    assert_eq!(session_list(&[])["items"], json!([]));
}

#[test]
fn audit_events_carry_their_fields_kind_and_name() {
    let mut event = AuditEvent::new(MicroTime(ts("2026-12-03T10:00:00Z")), EventType::Approved);
    event.namespace = Some("team".into());
    event.actor = Some(Actor::kubernetes("bob", &["approvers".to_owned()]));
    let key = EventKey {
        time: event.time.0,
        writer: Arc::from("gatehouse-operator-1"),
        sequence: 7,
        index: 2,
    };
    let list = audit_event_list(&[(&key, &event)], None);
    assert_eq!(
        list,
        json!({
            "apiVersion": "audit.gatehouse.dev/v1alpha1",
            "kind": "AuditEventList",
            "metadata": {},
            "items": [{
                "apiVersion": "audit.gatehouse.dev/v1alpha1",
                "kind": "AuditEvent",
                "metadata": {
                    "name": "gatehouse-operator-1.7.2",
                    "namespace": "team",
                    "creationTimestamp": "2026-12-03T10:00:00Z",
                },
                "time": "2026-12-03T10:00:00.000000Z",
                "type": "approved",
                "actor": {"kind": "kubernetes", "user": "bob", "groups": ["approvers"]},
                "namespace": "team",
            }],
        })
    );
    assert_eq!(
        audit_event_list(&[], Some("t"))["metadata"],
        json!({"continue": "t"})
    );
    let refused = AuditEvent::new(
        MicroTime(ts("2026-12-03T10:00:00Z")),
        EventType::LoginRefused,
    );
    assert_eq!(
        audit_event(&key, &refused)["metadata"],
        json!({"name": "gatehouse-operator-1.7.2", "creationTimestamp": "2026-12-03T10:00:00Z"})
    );
    let table = audit_event_table(&[(&key, &event)], Some("t"));
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["metadata"]["continue"], "t");
    assert_eq!(
        table["rows"][0]["cells"],
        json!([
            "gatehouse-operator-1.7.2",
            "2026-12-03T10:00:00.000000Z",
            "approved",
            "bob",
            "",
            ""
        ])
    );
}

#[test]
fn discovery_documents_list_the_group_and_its_resources() {
    let version = json!({"groupVersion": "audit.gatehouse.dev/v1alpha1", "version": "v1alpha1"});
    let group = json!({
        "apiVersion": "v1", "kind": "APIGroup", "name": "audit.gatehouse.dev",
        "versions": [version], "preferredVersion": version,
    });
    assert_eq!(api_group_value(), group);
    assert_eq!(
        api_group_list(),
        json!({"apiVersion": "v1", "kind": "APIGroupList", "groups": [group]})
    );
    assert_eq!(
        api_resource_list(),
        json!({
            "apiVersion": "v1", "kind": "APIResourceList",
            "groupVersion": "audit.gatehouse.dev/v1alpha1",
            "resources": [
                {"name": "sessions", "singularName": "session", "namespaced": true,
                 "kind": "Session", "verbs": ["get", "list"]},
                {"name": "sessions/recording", "singularName": "", "namespaced": true,
                 "kind": "Session", "verbs": ["get"]},
                {"name": "sessions/events", "singularName": "", "namespaced": true,
                 "kind": "AuditEvent", "verbs": ["get"]},
                {"name": "auditevents", "singularName": "auditevent", "namespaced": true,
                 "kind": "AuditEvent", "verbs": ["list"]},
            ],
        })
    );
}

#[test]
fn errors_are_metav1_statuses() {
    assert_eq!(
        status(403, "Forbidden", "no"),
        json!({
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": "no", "reason": "Forbidden", "code": 403,
        })
    );
}

#[test]
fn kubectl_gets_a_table_of_sessions() {
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    assert!(wants_table(kubectl));
    assert!(wants_table(
        "application/json; as=Table; g=meta.k8s.io; v=v1"
    ));
    assert!(!wants_table("application/json"));
    assert!(!wants_table("application/json;as=Table;v=v2;g=meta.k8s.io"));
    assert!(!wants_table(
        "application/json;as=Tablex;v=v1;g=meta.k8s.io"
    ));
    let table = session_table(&[&sample()]);
    assert_eq!(table["kind"], "Table");
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "User", "Host", "Start"]);
    assert_eq!(
        table["rows"][0]["cells"],
        json!([
            "0a1b2c3d4e5f6071",
            "alice",
            "prod-db-01",
            "2026-12-03T10:00:00.123456Z"
        ])
    );
    assert_eq!(
        table["rows"][0]["object"]["metadata"],
        session(&sample())["metadata"]
    );
}
