//! Table tests of the audit event JSON, its bounds and the batch chain.

use super::*;

fn at(second: i64) -> MicroTime {
    MicroTime(jiff::Timestamp::from_second(second).unwrap())
}

fn event(second: i64, type_: EventType, user: &str) -> AuditEvent {
    let mut e = AuditEvent::new(at(second), type_);
    e.actor = Some(Actor::kubernetes(user, &["dev".to_owned()]));
    e.namespace = Some("team".into());
    e.request = Some(RequestRef {
        name: "r1".into(),
        uid: "u-1".into(),
    });
    e
}

#[test]
fn events_are_camel_case_json_without_empty_fields() {
    let mut login = AuditEvent::new(at(0), EventType::LoginRefused);
    login.actor = Some(Actor::ssh(Some("SHA256:abc"), Some("ubuntu@db1")));
    login.source_address = Some("10.0.0.1:5000".into());
    login.outcome = Some("untrusted_ca".into());
    login.host = Some(String::new());
    let cases: Vec<(AuditEvent, serde_json::Value)> = vec![
        (
            event(0, EventType::RequestCreated, "alice"),
            serde_json::json!({
                "time": "1970-01-01T00:00:00.000000Z", "type": "requestCreated",
                "actor": {"kind": "kubernetes", "user": "alice", "groups": ["dev"]},
                "namespace": "team", "request": {"name": "r1", "uid": "u-1"},
            }),
        ),
        (
            login,
            serde_json::json!({
                "time": "1970-01-01T00:00:00.000000Z", "type": "loginRefused",
                "actor": {"kind": "ssh", "user": "ubuntu@db1", "fingerprint": "SHA256:abc"},
                "sourceAddress": "10.0.0.1:5000", "outcome": "untrusted_ca",
            }),
        ),
        (
            AuditEvent::new(at(60), EventType::ForwardClosed),
            serde_json::json!({"time": "1970-01-01T00:01:00.000000Z", "type": "forwardClosed"}),
        ),
    ];
    for (event, want) in cases {
        let line = event.to_line();
        assert!(!line.contains('\n'));
        let got: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(got, want, "{line}");
        let back: AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back.type_, event.type_);
    }
}

#[test]
fn outsider_strings_are_bounded_with_a_marker() {
    let long = "é".repeat(4000);
    let cases: Vec<(&str, usize, usize)> = vec![
        // (value, max, expected length at most)
        ("short", 10, 5),
        (&long, MAX_FIELD_BYTES, MAX_FIELD_BYTES),
        (&long, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES),
    ];
    for (value, max, most) in cases {
        let cut = truncate(value.to_owned(), max);
        assert!(cut.len() <= most, "{} > {most}", cut.len());
        assert_eq!(cut.ends_with(TRUNCATED), value.len() > max);
    }
    let mut e = event(0, EventType::SessionStarted, &long);
    e.message = Some(long.clone());
    e.login = Some(long.clone());
    e.actor.as_mut().unwrap().groups = vec!["g".into(); 500];
    let b = e.bounded();
    let actor = b.actor.unwrap();
    assert!(actor.user.unwrap().len() <= MAX_FIELD_BYTES);
    assert_eq!(actor.groups.len(), MAX_GROUPS);
    assert!(b.login.unwrap().ends_with(TRUNCATED));
    assert!(b.message.unwrap().len() <= MAX_MESSAGE_BYTES);
}

/// Three batches of writer `w`, chained.
fn chain() -> Vec<String> {
    let mut out = Vec::new();
    let mut previous = String::new();
    for sequence in 0..3u64 {
        let events: Vec<AuditEvent> = (0..3)
            .map(|i| event(i, EventType::Approved, &format!("u{sequence}-{i}")))
            .collect();
        let header = BatchHeader {
            writer: "w".into(),
            sequence,
            previous_batch_sha256: previous.clone(),
            count: 0,
        };
        let batch = render_batch(&header, &events);
        previous = batch_sha256(&batch);
        out.push(batch);
    }
    out
}

fn verify(batches: &[String], head: Option<&str>) -> Result<Chain, ChainBreak> {
    let refs: Vec<&str> = batches.iter().map(String::as_str).collect();
    verify_chain(&refs, head)
}

#[test]
fn an_intact_chain_verifies() {
    let batches = chain();
    let head = batch_sha256(&batches[2]);
    let got = verify(&batches, Some(&head)).unwrap();
    assert_eq!((got.batches, got.events, got.head), (3, 9, head));
    assert_eq!(verify(&[], None).unwrap().batches, 0);
}

#[test]
fn each_break_is_named_by_batch_and_line() {
    type Tamper = fn(&mut Vec<String>);
    type Kind = fn(&BreakKind) -> bool;
    let edit_event: Tamper = |b| b[1] = b[1].replacen("u1-1", "u1-X", 1);
    let edit_last: Tamper = |b| b[2] = b[2].replacen("u2-2", "u2-X", 1);
    let drop_middle: Tamper = |b| {
        b.remove(1);
    };
    let drop_last: Tamper = |b| {
        b.pop();
    };
    let swap: Tamper = |b| b.swap(1, 2);
    let drop_line: Tamper = |b| {
        let lines: Vec<&str> = b[0].lines().collect();
        b[0] = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[3]);
    };
    let garble_line: Tamper =
        |b| b[1] = b[1].replacen("\"type\":\"approved\"", "\"type\":\"nope\"", 1);
    let garble_header: Tamper = |b| b[0] = b[0].replacen("\"writer\"", "\"author\"", 1);
    let other_writer: Tamper = |b| b[1] = b[1].replacen("\"writer\":\"w\"", "\"writer\":\"x\"", 1);
    let cases: Vec<(&str, Tamper, usize, usize, Kind)> = vec![
        ("edited event", edit_event, 2, 1, |k| {
            matches!(k, BreakKind::Edited { .. })
        }),
        ("edited last batch", edit_last, 2, 1, |k| {
            matches!(k, BreakKind::Head { .. })
        }),
        ("missing batch", drop_middle, 1, 1, |k| {
            matches!(
                k,
                BreakKind::Missing {
                    expected: 1,
                    found: 2
                }
            )
        }),
        ("missing newest batch", drop_last, 1, 1, |k| {
            matches!(k, BreakKind::Head { .. })
        }),
        ("reordered", swap, 1, 1, |k| {
            matches!(
                k,
                BreakKind::Reordered {
                    expected: 1,
                    found: 2
                }
            )
        }),
        ("event removed", drop_line, 0, 4, |k| {
            matches!(
                k,
                BreakKind::Count {
                    declared: 3,
                    found: 2
                }
            )
        }),
        ("event garbled", garble_line, 1, 2, |k| {
            matches!(k, BreakKind::Event(_))
        }),
        ("header garbled", garble_header, 0, 1, |k| {
            matches!(k, BreakKind::Header(_))
        }),
        ("another writer", other_writer, 1, 1, |k| {
            matches!(k, BreakKind::Writer { .. })
        }),
    ];
    for (name, tamper, batch, line, kind) in cases {
        let original = chain();
        let head = batch_sha256(&original[2]);
        let mut batches = original.clone();
        tamper(&mut batches);
        let got = verify(&batches, Some(&head)).expect_err(name);
        assert_eq!((got.batch, got.line), (batch, line), "{name}: {got}");
        assert!(kind(&got.kind), "{name}: {got}");
    }
}

#[test]
fn a_batch_after_the_last_possible_sequence_breaks_the_chain() {
    let header = |sequence, previous: &str| BatchHeader {
        writer: "w".into(),
        sequence,
        previous_batch_sha256: previous.to_owned(),
        count: 0,
    };
    let first = render_batch(&header(u64::MAX, ""), &[]);
    let second = render_batch(&header(0, &batch_sha256(&first)), &[]);
    let broken = verify(&[first, second], None).unwrap_err();
    assert_eq!(broken.batch, 1, "{broken:?}");
}

#[test]
fn details_are_camel_case_and_bounded() {
    let mut e = event(1, EventType::FileOperation, "alice");
    e.file = Some(FileDetail {
        operation: "write".into(),
        path: "p".repeat(10_000),
        target_path: None,
        bytes: Some(5),
    });
    e.recording = Some(RecordingDetail {
        key: "k".into(),
        sha256: "00".into(),
        bytes: 9,
    });
    let v: serde_json::Value = serde_json::from_str(&e.to_line()).unwrap();
    assert_eq!(v["file"]["operation"], "write");
    assert_eq!(v["file"]["bytes"], 5);
    assert!(v["file"].get("targetPath").is_none());
    let path = v["file"]["path"].as_str().unwrap();
    assert!(
        path.len() <= MAX_MESSAGE_BYTES && path.ends_with(TRUNCATED),
        "{path}"
    );
    assert_eq!(v["recording"]["bytes"], 9);
    let back: AuditEvent = serde_json::from_str(&e.to_line()).unwrap();
    assert_eq!(back.recording, e.recording);
    assert_eq!(
        serde_json::to_value(EventType::RecordingStored).unwrap(),
        "recordingStored"
    );
}
