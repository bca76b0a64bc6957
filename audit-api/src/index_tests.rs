#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_crds::audit::{
    Actor, AuditEvent, BatchHeader, EventType, RecordingDetail, RequestRef, SessionDetail,
    render_batch,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::*;

fn at(seconds: i64) -> MicroTime {
    MicroTime(Timestamp::from_second(1_780_000_000 + seconds).unwrap())
}

fn event(seconds: i64, type_: EventType, session: Option<&str>) -> AuditEvent {
    let mut e = AuditEvent::new(at(seconds), type_);
    e.namespace = Some("team".to_owned());
    e.session_id = session.map(str::to_owned);
    e.actor = Some(Actor::ssh(Some("SHA256:x"), Some("alice")));
    e.request = Some(RequestRef {
        name: "alice-db".to_owned(),
        uid: "u1".to_owned(),
    });
    e.host = Some("prod-db-01".to_owned());
    e.login = Some("root".to_owned());
    e
}

fn batch(writer: &str, sequence: u64, events: &[AuditEvent]) -> (String, String) {
    let header = BatchHeader {
        writer: writer.to_owned(),
        sequence,
        previous_batch_sha256: String::new(),
        count: 0,
    };
    (batch_key(writer, sequence), render_batch(&header, events))
}

fn add(index: &mut Index, (key, text): (String, String)) -> Result<usize, BatchProblem> {
    index.add_batch(&key, &text)
}

fn names(events: &[(&EventKey, &AuditEvent)]) -> Vec<String> {
    events.iter().map(|(k, _)| k.name()).collect()
}

#[test]
fn batch_keys_parse_strictly() {
    let cases: &[(&str, Option<(&str, u64)>)] = &[
        (
            "audit/gatehouse-proxy-7d9f/00000000000000000003.jsonl",
            Some(("gatehouse-proxy-7d9f", 3)),
        ),
        (
            "audit/op.a-1/00000000000000000000.jsonl",
            Some(("op.a-1", 0)),
        ),
        // The audit writer's names: `<pod>.<run id>`.
        (
            "audit/gatehouse-proxy-7d9f-x2.0123456789abcdef/00000000000000000002.jsonl",
            Some(("gatehouse-proxy-7d9f-x2.0123456789abcdef", 2)),
        ),
        ("audit/Proxy/00000000000000000003.jsonl", None),
        ("audit/p/3.jsonl", None),
        ("audit/p/0000000000000000000x.jsonl", None),
        ("audit/p/00000000000000000003.json", None),
        ("audit//00000000000000000003.jsonl", None),
        ("audit/a/b/00000000000000000003.jsonl", None),
        ("audit/../00000000000000000003.jsonl", None),
        ("audit/./00000000000000000003.jsonl", None),
        ("audit/-p/00000000000000000003.jsonl", None),
        ("recordings/p/00000000000000000003.jsonl", None),
        // u64::MAX + 1 does not parse.
        ("audit/p/18446744073709551616.jsonl", None),
    ];
    for (key, want) in cases {
        assert_eq!(parse_batch_key(key), *want, "{key}");
    }
    let long = format!("audit/{}/00000000000000000000.jsonl", "a".repeat(254));
    assert_eq!(parse_batch_key(&long), None);
    assert_eq!(
        batch_key("w", 3),
        "audit/w/00000000000000000003.jsonl".to_owned()
    );
}

#[test]
fn events_are_ordered_by_time_writer_sequence_index_across_batches() {
    let mut index = Index::new(100);
    let e = |s| event(s, EventType::Approved, None);
    add(&mut index, batch("w2", 0, &[e(5), e(1)])).unwrap();
    add(&mut index, batch("w1", 7, &[e(5), e(3)])).unwrap();
    add(&mut index, batch("w1", 6, &[e(5)])).unwrap();
    let all = index.events(&EventQuery::default(), usize::MAX);
    assert_eq!(
        names(&all),
        ["w2.0.1", "w1.7.1", "w1.6.0", "w1.7.0", "w2.0.0"]
    );
    // Adding the same batch again adds nothing.
    assert_eq!(add(&mut index, batch("w1", 6, &[e(5)])), Ok(0));
    assert_eq!(index.event_count(), 5);
}

#[test]
fn broken_batches_are_skipped_and_reported_and_not_fetched_again() {
    let mut index = Index::new(100);
    let good = event(1, EventType::Approved, None);
    let (key, text) = batch("w", 0, std::slice::from_ref(&good));
    let cases: Vec<(String, String, &str)> = vec![
        (key.clone(), "not json\n".to_owned(), "header"),
        (
            batch_key("w", 1),
            text.replace("\"count\":1", "\"count\":2"),
            "counts 2",
        ),
        (
            batch_key("w", 2),
            format!("{text}{{\"nope\":1}}\n"),
            "event",
        ),
        // The header claims to be another writer's batch.
        (batch_key("x", 0), text.clone(), "the header says writer w"),
        // Or another sequence.
        (batch_key("w", 9), text.clone(), "sequence 0"),
        (
            "audit/w/x.jsonl".to_owned(),
            text.clone(),
            "not an audit batch key",
        ),
    ];
    for (key, text, problem) in &cases {
        let error = index.add_batch(key, text).unwrap_err();
        assert_eq!(error.key, *key);
        assert!(error.problem.contains(problem), "{key}: {}", error.problem);
    }
    assert_eq!(index.event_count(), 0);
    assert!(index.has_batch(&key));
    let unreadable = batch_key("w", 4);
    index.skip_batch(&unreadable);
    assert!(index.has_batch(&unreadable));
    // A good batch after the broken ones still counts.
    assert_eq!(add(&mut index, batch("w", 3, &[good])), Ok(1));
    assert_eq!(index.event_count(), 1);
}

#[test]
fn sessions_fold_from_their_events_in_any_order() {
    let mut started = event(10, EventType::SessionStarted, Some("s1"));
    started.outcome = Some("shell".to_owned());
    let mut ended = event(20, EventType::SessionEnded, Some("s1"));
    ended.session = Some(SessionDetail {
        bytes_to_target: Some(1),
        bytes_to_client: Some(2),
        exit_status: Some(0),
        ..SessionDetail::default()
    });
    let mut stored = event(21, EventType::RecordingStored, Some("s1"));
    stored.recording = Some(RecordingDetail {
        key: "2026/s1.cast".to_owned(),
        sha256: "ab".to_owned(),
        bytes: 3,
    });
    // An approver's event naming the session does not make the session theirs.
    let mut by_bob = event(12, EventType::Command, Some("s1"));
    by_bob.actor = Some(Actor::kubernetes("bob", &[]));
    let others = [
        by_bob,
        event(13, EventType::Command, Some("s1")),
        event(14, EventType::FileOperation, Some("s1")),
        event(15, EventType::ForwardOpened, Some("s1")),
        event(16, EventType::ForwardClosed, Some("s1")),
        event(17, EventType::Command, Some("other")),
    ];
    let mut forward = Index::new(100);
    add(&mut forward, batch("p", 0, &[started.clone()])).unwrap();
    add(&mut forward, batch("p", 1, &others)).unwrap();
    add(
        &mut forward,
        batch("p", 2, &[ended.clone(), stored.clone()]),
    )
    .unwrap();
    let mut backward = Index::new(100);
    add(&mut backward, batch("p", 2, &[ended, stored])).unwrap();
    add(&mut backward, batch("p", 1, &others)).unwrap();
    add(&mut backward, batch("p", 0, &[started])).unwrap();
    for index in [&forward, &backward] {
        let s = index.session("team", "s1").unwrap();
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.request.as_ref().unwrap().name, "alice-db");
        assert_eq!(s.host.as_deref(), Some("prod-db-01"));
        assert_eq!(s.login.as_deref(), Some("root"));
        assert_eq!(s.kind.as_deref(), Some("shell"));
        assert_eq!(s.start, Some(at(10).0));
        assert_eq!(s.end, Some(at(20).0));
        assert_eq!(
            (s.bytes_to_target, s.bytes_to_client, s.exit_status),
            (Some(1), Some(2), Some(0))
        );
        assert_eq!(s.recording.as_ref().unwrap().key, "2026/s1.cast");
        assert_eq!((s.commands, s.file_operations, s.forwards), (2, 1, 1));
        assert_eq!(index.session_count(), 2);
        assert!(index.session("other-ns", "s1").is_none());
        assert_eq!(
            names(&index.session_events("team", "s1")),
            [
                "p.0.0", "p.1.0", "p.1.1", "p.1.2", "p.1.3", "p.1.4", "p.2.0", "p.2.1"
            ]
        );
    }
}

#[test]
fn session_queries_filter_by_namespace_and_fields() {
    let mut index = Index::new(100);
    let mut a = event(1, EventType::SessionStarted, Some("a"));
    a.host = Some("h1".to_owned());
    let mut b = event(2, EventType::SessionStarted, Some("b"));
    b.actor = Some(Actor::ssh(None, Some("bob")));
    b.request = Some(RequestRef {
        name: "bob-req".to_owned(),
        uid: String::new(),
    });
    let mut c = event(0, EventType::SessionStarted, Some("c"));
    c.namespace = Some("ops".to_owned());
    add(&mut index, batch("p", 0, &[a, b, c])).unwrap();
    let ids = |ns: Option<&str>, fields: &[SessionField]| -> Vec<String> {
        index
            .sessions(ns, fields)
            .iter()
            .map(|s| s.id.clone())
            .collect()
    };
    let cases: Vec<(Option<&str>, Vec<SessionField>, Vec<&str>)> = vec![
        (None, vec![], vec!["c", "a", "b"]),
        (Some("team"), vec![], vec!["a", "b"]),
        (Some("ops"), vec![], vec!["c"]),
        (Some("nobody"), vec![], vec![]),
        (
            None,
            vec![SessionField::User("alice".into())],
            vec!["c", "a"],
        ),
        (
            Some("team"),
            vec![SessionField::User("alice".into())],
            vec!["a"],
        ),
        (None, vec![SessionField::Host("h1".into())], vec!["a"]),
        (
            None,
            vec![SessionField::Request("bob-req".into())],
            vec!["b"],
        ),
        (
            None,
            vec![
                SessionField::User("alice".into()),
                SessionField::Host("prod-db-01".into()),
            ],
            vec!["c"],
        ),
    ];
    for (ns, fields, want) in cases {
        assert_eq!(ids(ns, &fields), want, "{ns:?} {fields:?}");
    }
}

#[test]
fn event_queries_filter_by_namespace_user_types_and_time() {
    let mut index = Index::new(100);
    let mut refused = AuditEvent::new(at(3), EventType::LoginRefused);
    refused.actor = Some(Actor::ssh(None, Some("mallory")));
    let mut approved = event(2, EventType::Approved, None);
    approved.actor = Some(Actor::kubernetes("bob", &[]));
    let mut ops = event(4, EventType::Issued, None);
    ops.namespace = Some("ops".to_owned());
    let events = [
        event(1, EventType::RequestCreated, None),
        approved,
        refused,
        ops,
        event(5, EventType::SessionStarted, Some("s")),
    ];
    add(&mut index, batch("w", 0, &events)).unwrap();
    let query = |namespace: Option<&str>,
                 user: Option<&str>,
                 types: &[EventType],
                 from: Option<i64>,
                 to: Option<i64>| {
        let q = EventQuery {
            namespace: namespace.map(str::to_owned),
            user: user.map(str::to_owned),
            types: types.to_vec(),
            from: from.map(|s| at(s).0),
            to: to.map(|s| at(s).0),
            after: None,
        };
        names(&index.events(&q, usize::MAX))
    };
    let all = ["w.0.0", "w.0.1", "w.0.2", "w.0.3", "w.0.4"];
    assert_eq!(query(None, None, &[], None, None), all);
    assert_eq!(
        query(Some("team"), None, &[], None, None),
        ["w.0.0", "w.0.1", "w.0.4"]
    );
    // alice's story: her own events and bob's approval of the request she created.
    assert_eq!(
        query(None, Some("alice"), &[], None, None),
        ["w.0.0", "w.0.1", "w.0.3", "w.0.4"]
    );
    assert_eq!(query(None, Some("bob"), &[], None, None), ["w.0.1"]);
    assert_eq!(query(None, Some("mallory"), &[], None, None), ["w.0.2"]);
    assert_eq!(
        query(
            None,
            None,
            &[EventType::Approved, EventType::LoginRefused],
            None,
            None
        ),
        ["w.0.1", "w.0.2"]
    );
    // from inclusive, to exclusive.
    assert_eq!(query(None, None, &[], Some(2), Some(4)), ["w.0.1", "w.0.2"]);
    assert_eq!(query(None, None, &[], Some(6), None), Vec::<String>::new());
    assert_eq!(query(None, None, &[], None, Some(1)), Vec::<String>::new());
}

#[test]
fn a_requests_creator_is_forgotten_with_its_created_event() {
    let mut index = Index::new(2);
    let mut approved = event(2, EventType::Approved, None);
    approved.actor = Some(Actor::kubernetes("bob", &[]));
    let created = event(1, EventType::RequestCreated, None);
    add(&mut index, batch("w", 0, &[created, approved])).unwrap();
    let alice = EventQuery {
        user: Some("alice".to_owned()),
        ..EventQuery::default()
    };
    assert_eq!(names(&index.events(&alice, usize::MAX)), ["w.0.0", "w.0.1"]);
    add(
        &mut index,
        batch("w", 1, &[event(3, EventType::Issued, None)]),
    )
    .unwrap();
    assert_eq!(index.requesters.len(), 0, "dropped with requestCreated");
    assert_eq!(names(&index.events(&alice, usize::MAX)), ["w.1.0"]);
}

#[test]
fn the_oldest_events_and_sessions_go_past_the_bound() {
    let mut index = Index::new(3);
    let e = |s, id: &str| event(s, EventType::SessionStarted, Some(id));
    add(&mut index, batch("w", 0, &[e(5, "s5"), e(1, "s1")])).unwrap();
    add(&mut index, batch("w", 1, &[e(3, "s3"), e(4, "s4")])).unwrap();
    assert_eq!(index.event_count(), 3);
    assert_eq!(index.dropped_events(), 1);
    assert_eq!(
        names(&index.events(&EventQuery::default(), usize::MAX)),
        ["w.1.0", "w.1.1", "w.0.0"]
    );
    assert_eq!(index.session_count(), 3);
    assert_eq!(index.dropped_sessions(), 1);
    assert!(index.session("team", "s1").is_none());
    assert!(index.session("team", "s5").is_some());
    // An event older than all the kept ones is dropped at once.
    add(&mut index, batch("w", 2, &[e(0, "s0")])).unwrap();
    assert_eq!(index.dropped_events(), 2);
    assert!(index.session("team", "s0").is_none());
    assert_eq!(index.event_count(), 3);
}

fn chained(writer: &str, sequence: u64, previous: &str, events: &[AuditEvent]) -> String {
    let header = BatchHeader {
        writer: writer.to_owned(),
        sequence,
        previous_batch_sha256: previous.to_owned(),
        count: 0,
    };
    render_batch(&header, events)
}

#[test]
fn chain_links_are_checked_in_any_order_and_breaks_reported() {
    let e = |s| event(s, EventType::Approved, None);
    let b0 = chained("w", 0, "", &[e(1)]);
    let b1 = chained("w", 1, &batch_sha256(&b0), &[e(2)]);
    let b2 = chained("w", 2, &batch_sha256(&b1), &[e(3)]);
    // Whole chains, in either order: no break.
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let mut index = Index::new(100);
        for i in order {
            let text = [&b0, &b1, &b2][i];
            index.add_batch(&batch_key("w", i as u64), text).unwrap();
        }
        assert_eq!(index.take_chain_breaks(), vec![], "{order:?}");
    }
    // Batch 1 edited (its own header intact): the link from 2 breaks, found either way.
    let edited = chained("w", 1, &batch_sha256(&b0), &[e(9)]);
    for order in [[0, 1, 2], [2, 1, 0]] {
        let mut index = Index::new(100);
        for i in order {
            let text = [&b0, &edited, &b2][i];
            index.add_batch(&batch_key("w", i as u64), text).unwrap();
        }
        let breaks = index.take_chain_breaks();
        assert_eq!(breaks.len(), 1, "{order:?}: {breaks:?}");
        assert_eq!(breaks[0].key, batch_key("w", 2));
        assert!(
            breaks[0].problem.contains("batch 1 has SHA-256"),
            "{breaks:?}"
        );
        // The events are still served.
        assert_eq!(index.event_count(), 3);
        assert_eq!(index.take_chain_breaks(), vec![]);
    }
    // A first batch claiming a predecessor.
    let mut index = Index::new(100);
    index
        .add_batch(&batch_key("x", 0), &chained("x", 0, "abc", &[e(1)]))
        .unwrap();
    assert_eq!(index.take_chain_breaks()[0].key, batch_key("x", 0));
}

#[test]
fn lists_page_through_continue_tokens() {
    let mut index = Index::new(100);
    let e = |s| event(s, EventType::Approved, None);
    add(&mut index, batch("w", 0, &[e(1), e(2), e(2), e(3), e(4)])).unwrap();
    let mut query = EventQuery::default();
    let mut pages = Vec::new();
    loop {
        let page = index.events(&query, 2);
        if page.is_empty() {
            break;
        }
        let token = page.last().unwrap().0.token();
        pages.push(names(&page));
        query.after = Some(EventKey::from_token(&token).unwrap());
    }
    assert_eq!(
        pages,
        [
            vec!["w.0.0", "w.0.1"],
            vec!["w.0.2", "w.0.3"],
            vec!["w.0.4"]
        ]
    );
    // A token before `from` does not widen the query.
    query.after = index
        .events(&EventQuery::default(), 1)
        .first()
        .map(|(k, _)| (*k).clone());
    query.from = Some(at(3).0);
    assert_eq!(names(&index.events(&query, 10)), ["w.0.3", "w.0.4"]);
    let key = index.events(&EventQuery::default(), 1)[0].0.clone();
    assert_eq!(EventKey::from_token(&key.token()), Some(key));
    for bad in [
        "",
        "x|w|0|0",
        "2026-12-03T10:00:00Z|w|0",
        "2026-12-03T10:00:00Z|w|0|0|0",
        "2026-12-03T10:00:00Z|../x|0|0",
        "2026-12-03T10:00:00Z|W|0|0",
        "2026-12-03T10:00:00Z|w|-1|0",
    ] {
        assert_eq!(EventKey::from_token(bad), None, "{bad}");
    }
}
