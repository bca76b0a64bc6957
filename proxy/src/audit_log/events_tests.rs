use serde_json::{Value, json};

use super::*;
use crate::audit_log::tests::grant;

fn scope() -> Scope {
    let origin = Origin {
        peer: "192.0.2.1:50000".parse().unwrap(),
        fingerprint: "SHA256:k".into(),
    };
    Scope::of_grant(&grant(), Some(&origin)).in_session("s1")
}

fn json_of(event: &AuditEvent) -> Value {
    let mut v: Value = serde_json::from_str(&event.to_line()).unwrap();
    v.as_object_mut().unwrap().remove("time");
    v
}

/// The fields every event of [`scope`] carries, plus `more`.
fn with_scope(more: Value) -> Value {
    let mut v = json!({
        "actor": {"kind": "ssh", "user": "alice", "fingerprint": "SHA256:k"},
        "namespace": "team", "request": {"name": "r1", "uid": "u-1"}, "host": "db1",
        "login": "ubuntu", "sourceAddress": "192.0.2.1:50000", "sessionId": "s1",
    });
    for (k, x) in more.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn commands_and_forwards_are_events_of_their_session() {
    let cases: Vec<(AuditEvent, Value)> = vec![
        (
            command_event(&scope(), "echo hi", true),
            with_scope(
                json!({"type": "command", "outcome": "exec", "message": "exec echo hi",
                "command": {"line": "echo hi", "exact": true}}),
            ),
        ),
        (
            command_event(&scope(), "echo one", false),
            with_scope(json!({"type": "command", "outcome": "typed",
                "message": "typed (rebuilt from the recorded input, best effort): echo one",
                "command": {"line": "echo one", "exact": false}})),
        ),
        (
            forward_opened_event(&scope(), "127.0.0.1", 8080),
            with_scope(json!({"type": "forwardOpened", "outcome": "opened",
                "message": "local port forward to 127.0.0.1:8080 opened",
                "forward": {"direction": "local", "host": "127.0.0.1", "port": 8080}})),
        ),
        (
            forward_closed_event(&scope(), "127.0.0.1", 8080, (3, 40), "peer"),
            with_scope(json!({"type": "forwardClosed", "outcome": "ended by peer",
                "message": "local port forward to 127.0.0.1:8080 closed by peer; 3 bytes to the target, 40 bytes to the client",
                "forward": {"direction": "local", "host": "127.0.0.1", "port": 8080,
                    "bytesToTarget": 3, "bytesToClient": 40}})),
        ),
    ];
    for (event, want) in cases {
        assert_eq!(json_of(&event), want);
    }
}

#[test]
fn an_unknown_origin_leaves_the_address_and_key_out() {
    let got = json_of(&command_event(
        &Scope::of_grant(&grant(), None).in_session("s2"),
        "id",
        true,
    ));
    assert_eq!(got["actor"], json!({"kind": "ssh", "user": "alice"}));
    assert_eq!(got.get("sourceAddress"), None);
    assert_eq!(got["sessionId"], "s2");
}

#[test]
fn each_sftp_operation_is_one_file_event_and_content_is_none() {
    use sftp::{AuditEvent as Op, Direction};
    let s = |v: &str| v.to_owned();
    // (sftp audit event, file detail; null: no event)
    let cases = [
        (
            Op::Open {
                path: s("/tmp/a"),
                flags: s("write,create,truncate"),
            },
            json!({"operation": "open", "path": "/tmp/a"}),
        ),
        (
            Op::Close {
                path: s("/tmp/a"),
                read: 2,
                written: 10,
            },
            json!({"operation": "close", "path": "/tmp/a", "bytes": 12}),
        ),
        (
            Op::Remove { path: s("/tmp/b") },
            json!({"operation": "remove", "path": "/tmp/b"}),
        ),
        (
            Op::Rename {
                from: s("/tmp/a"),
                to: s("/tmp/b"),
            },
            json!({"operation": "rename", "path": "/tmp/a", "targetPath": "/tmp/b"}),
        ),
        (
            Op::Mkdir { path: s("/d") },
            json!({"operation": "mkdir", "path": "/d"}),
        ),
        (
            Op::Rmdir { path: s("/d") },
            json!({"operation": "rmdir", "path": "/d"}),
        ),
        (
            Op::Setstat { path: s("/d") },
            json!({"operation": "setstat", "path": "/d"}),
        ),
        (
            Op::Hardlink {
                from: s("/a"),
                to: s("/b"),
            },
            json!({"operation": "hardlink", "path": "/a", "targetPath": "/b"}),
        ),
        (
            Op::Symlink {
                first: s("/a"),
                second: s("/b"),
            },
            json!({"operation": "symlink", "path": "/a", "targetPath": "/b"}),
        ),
        (
            Op::Content {
                direction: Direction::Write,
                path: s("/a"),
                offset: 0,
                data: b"secret".to_vec(),
            },
            Value::Null,
        ),
        (
            Op::ContentCut {
                direction: Direction::Read,
                path: s("/a"),
                kept: 5,
            },
            Value::Null,
        ),
    ];
    for (op, want) in cases {
        let got = file_operation_event(&scope(), &op).map(|e| json_of(&e));
        if want.is_null() {
            assert_eq!(got, None, "{op:?}");
            continue;
        }
        let operation = want["operation"].clone();
        assert_eq!(
            got,
            Some(with_scope(
                json!({"type": "fileOperation", "outcome": operation,
                "message": op.describe(), "file": want})
            )),
            "{op:?}"
        );
    }
}

#[test]
fn a_file_path_is_bounded() {
    let op = sftp::AuditEvent::Remove {
        path: "/x".repeat(10_000),
    };
    let got = json_of(&file_operation_event(&scope(), &op).unwrap());
    let path = got["file"]["path"].as_str().unwrap();
    assert!(
        path.len() <= gatehouse_crds::audit::MAX_MESSAGE_BYTES,
        "{}",
        path.len()
    );
    assert!(path.ends_with(gatehouse_crds::audit::TRUNCATED));
}

#[test]
fn a_stored_recording_names_the_store_key_of_its_session() {
    let meta = crate::recording::tests::meta("00112233aabbccdd");
    let stored = StoredRecording {
        key: meta.object_key(),
        sha256: "ab".repeat(32),
        bytes: 1234,
        location: "s3://bucket/prefix/recordings/x.cast".into(),
    };
    let got = json_of(&recording_stored_event(&meta, &stored));
    assert_eq!(
        got,
        json!({"type": "recordingStored",
            "actor": {"kind": "ssh", "user": "oidc:alice@example.com"},
            "namespace": "team-a",
            "request": {"name": "req-1", "uid": "0b6c2f4e-1111-2222-3333-444455556666"},
            "host": "prod-db-01", "login": "ubuntu", "sessionId": "00112233aabbccdd",
            "outcome": "stored",
            "message": format!("recording {} (1234 bytes, sha256 {})", stored.key, stored.sha256),
            "recording": {"key": "recordings/2024-03-09/oidc-alice-example.com_prod-db-01_00112233aabbccdd.cast",
                "sha256": "ab".repeat(32), "bytes": 1234}})
    );
}
