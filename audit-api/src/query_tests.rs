#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn invalid(result: Result<impl std::fmt::Debug, QueryError>) -> String {
    match result {
        Err(QueryError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn field_selectors_take_three_keys_with_equals_only() {
    let ok: &[(&str, Vec<SessionField>)] = &[
        ("", vec![]),
        ("spec.user=alice", vec![SessionField::User("alice".into())]),
        ("spec.user==alice", vec![SessionField::User("alice".into())]),
        (
            "spec.host=prod-db-01,spec.request=r1",
            vec![
                SessionField::Host("prod-db-01".into()),
                SessionField::Request("r1".into()),
            ],
        ),
        ("spec.user=", vec![SessionField::User(String::new())]),
    ];
    for (selector, want) in ok {
        assert_eq!(
            parse_field_selector(selector).as_ref(),
            Ok(want),
            "{selector}"
        );
    }
    let bad: &[(&str, &str)] = &[
        ("spec.user!=alice", "\"spec.user\": only = and =="),
        (
            "metadata.name=x",
            "field \"metadata.name\" is not supported",
        ),
        ("status.end=x", "\"status.end\""),
        ("spec.user", "has no operator"),
        ("spec.user=a,", "has no operator"),
        ("spec.user=a=b", "the value holds an operator"),
        ("spec.user===a", "the value holds an operator"),
    ];
    for (selector, want) in bad {
        let message = invalid(parse_field_selector(selector));
        assert!(message.contains(want), "{selector}: {message}");
        assert!(message.starts_with("fieldSelector: "), "{message}");
    }
}

#[test]
fn list_queries_refuse_watch_labels_and_unknown_parameters() {
    assert_eq!(
        session_fields(Some("fieldSelector=spec.user%3Dalice&limit=500")),
        Ok(vec![SessionField::User("alice".into())])
    );
    assert_eq!(session_fields(None), Ok(vec![]));
    assert_eq!(session_fields(Some("watch=false")), Ok(vec![]));
    assert_eq!(session_fields(Some("watch=true")), Err(QueryError::Watch));
    assert_eq!(session_fields(Some("watch=1")), Err(QueryError::Watch));
    assert_eq!(get_query(Some("watch=true")), Err(QueryError::Watch));
    assert!(invalid(session_fields(Some("labelSelector=a%3Db"))).contains("labelSelector"));
    assert!(invalid(session_fields(Some("user=alice"))).contains("\"user\""));
    assert!(invalid(get_query(Some("fieldSelector=spec.user%3Da"))).contains("fieldSelector"));
    let many = vec!["spec.user=a"; MAX_TERMS + 1].join(",");
    assert!(invalid(session_fields(Some(&format!("fieldSelector={many}")))).contains("at most"));
}

#[test]
fn event_queries_parse_user_types_and_times() {
    let (q, page) = event_query(
        Some("user=alice&type=approved,issued&type=sessionStarted&type=approved&from=2026-12-03T10:00:00Z&to=2026-12-03T11:00:00%2B01:00"),
        Some("team"),
    )
    .unwrap();
    assert_eq!(page, MAX_PAGE);
    assert_eq!(q.namespace.as_deref(), Some("team"));
    assert_eq!(q.user.as_deref(), Some("alice"));
    assert_eq!(
        q.types,
        [
            EventType::Approved,
            EventType::Issued,
            EventType::SessionStarted
        ]
    );
    assert_eq!(q.from, Some("2026-12-03T10:00:00Z".parse().unwrap()));
    assert_eq!(q.to, Some("2026-12-03T10:00:00Z".parse().unwrap()));
    assert_eq!(
        event_query(None, None),
        Ok((EventQuery::default(), MAX_PAGE))
    );
    assert_eq!(event_query(Some("limit=5"), None).unwrap().1, 5);
    assert_eq!(event_query(Some("limit=0"), None).unwrap().1, MAX_PAGE);
    assert_eq!(
        event_query(Some("limit=99999999"), None).unwrap().1,
        MAX_PAGE
    );
    let token = "2026-12-03T10:00:00Z|w|1|2";
    let (q, _) = event_query(
        Some(&format!("continue={}", token.replace('|', "%7C"))),
        None,
    )
    .unwrap();
    assert_eq!(q.after.unwrap().token(), token);
    // Sessions ignore limit and continue, as kubectl sends them.
    assert_eq!(session_fields(Some("limit=500&continue=")), Ok(vec![]));
    let bad: &[(&str, &str)] = &[
        ("type=approve", "unknown event type \"approve\""),
        (
            "from=yesterday",
            "from: \"yesterday\" is not an RFC 3339 time",
        ),
        ("to=2026-12-03", "to:"),
        (
            "from=2026-12-03T10:00:00Z&from=2026-12-03T10:00:00Z",
            "given twice",
        ),
        ("user=a&user=b", "user: given twice"),
        (
            "fieldSelector=spec.user%3Da",
            "fieldSelector is not supported",
        ),
        ("host=x", "unknown query parameter \"host\""),
        ("limit=ten", "limit: \"ten\" is not a number"),
        ("continue=abc", "continue: not a token"),
    ];
    for (query, want) in bad {
        let message = invalid(event_query(Some(query), None));
        assert!(message.contains(want), "{query}: {message}");
    }
    assert_eq!(
        event_query(Some("watch=true"), None),
        Err(QueryError::Watch)
    );
}
