#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const V: &str = "/apis/audit.gatehouse.dev/v1alpha1";

fn get(path: &str) -> Result<Route, Refusal> {
    route(&Method::GET, path)
}

#[test]
fn paths_map_to_routes_and_nothing_else() {
    let ns = |s: &str| Some(s.to_owned());
    let ok: Vec<(String, Route)> = vec![
        ("/apis".into(), Route::Groups),
        ("/apis/audit.gatehouse.dev".into(), Route::Group),
        (V.into(), Route::Resources),
        (format!("{V}/sessions"), Route::Sessions { namespace: None }),
        (
            format!("{V}/auditevents"),
            Route::AuditEvents { namespace: None },
        ),
        (
            format!("{V}/namespaces/team/sessions"),
            Route::Sessions {
                namespace: ns("team"),
            },
        ),
        (
            format!("{V}/namespaces/team/auditevents"),
            Route::AuditEvents {
                namespace: ns("team"),
            },
        ),
        (
            format!("{V}/namespaces/team/sessions/0a1b"),
            Route::Session {
                namespace: "team".into(),
                name: "0a1b".into(),
            },
        ),
        (
            format!("{V}/namespaces/team/sessions/0a1b/recording"),
            Route::Recording {
                namespace: "team".into(),
                name: "0a1b".into(),
            },
        ),
        (
            format!("{V}/namespaces/team/sessions/0a1b/player/gatehouse-player.js"),
            Route::Asset {
                namespace: "team".into(),
                name: "0a1b".into(),
                file: "gatehouse-player.js".into(),
            },
        ),
        (
            format!("{V}/namespaces/team/sessions/0a1b/events"),
            Route::SessionEvents {
                namespace: "team".into(),
                name: "0a1b".into(),
            },
        ),
    ];
    for (path, want) in ok {
        assert_eq!(get(&path), Ok(want), "{path}");
    }
    let not_found = [
        "/".to_owned(),
        "/api".into(),
        "/apis/".into(),
        "/apisx".into(),
        "/apis/gatehouse.dev".into(),
        "/apis/audit.gatehouse.dev/".into(),
        "/apis/audit.gatehouse.dev/v1".into(),
        format!("{V}/"),
        format!("{V}/recordings"),
        format!("{V}/sessions/0a1b"),
        format!("{V}/namespaces/team"),
        format!("{V}/namespaces/team/sessions/"),
        format!("{V}/namespaces/team/sessions/0a1b/"),
        format!("{V}/namespaces/team/sessions/0a1b/player2"),
        format!("{V}/namespaces/team/sessions/0a1b/player/x"),
        format!("{V}/player"),
        format!("{V}/player/"),
        format!("{V}/player/../secret"),
        format!("{V}/player/%2e%2e"),
        format!("{V}/player/asciinema-player.min.js"),
        format!("{V}/namespaces/team/sessions/0a1b/player/asciinema-player.min.js/x"),
        format!("{V}/namespaces/team/sessions/0a1b/player/../recording"),
        format!("{V}/player/nope.js"),
        format!("{V}/namespaces/team/sessions/0a1b/status"),
        format!("{V}/namespaces/team/sessions/0a1b/recording/x"),
        format!("{V}/namespaces//sessions"),
        format!("{V}//namespaces/team/sessions"),
        // Traversal, in every spelling: never a name, never decoded.
        format!("{V}/namespaces/team/sessions/.."),
        format!("{V}/namespaces/team/sessions/./recording"),
        format!("{V}/namespaces/../sessions"),
        format!("{V}/namespaces/team/sessions/..%2F..%2Fsecret/recording"),
        format!("{V}/namespaces/team/sessions/a%2Fb/recording"),
        format!("{V}/namespaces/team/sessions/%2e%2e/recording"),
        format!("{V}/namespaces/te%61m/sessions"),
        format!("{V}/namespaces/team/sessions/a\\b"),
        format!("{V}/namespaces/Team/sessions"),
        format!("{V}/namespaces/-team/sessions"),
        format!("{V}/namespaces/{}/sessions", "a".repeat(64)),
        format!("{V}/namespaces/team/sessions/{}", "a".repeat(254)),
        format!("{V}/namespaces/team/sessions/.hidden"),
        format!("{V}/namespaces/team/auditevents/a/b"),
    ];
    for path in not_found {
        assert_eq!(get(&path), Err(Refusal::NotFound), "{path}");
    }
}

#[test]
fn only_get_is_served() {
    for method in [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        for path in [
            format!("{V}/namespaces/team/sessions"),
            format!("{V}/namespaces/team/sessions/s1/recording"),
            "/apis".to_owned(),
        ] {
            assert_eq!(
                route(&method, &path),
                Err(Refusal::MethodNotAllowed),
                "{method} {path}"
            );
        }
        // An unknown path stays unknown whatever the method.
        assert_eq!(route(&method, "/nope"), Err(Refusal::NotFound));
    }
    // auditevents are listed only: a single one is not served.
    assert_eq!(
        get(&format!("{V}/namespaces/team/auditevents/w.0.0")),
        Err(Refusal::MethodNotAllowed)
    );
}

#[test]
fn every_resource_route_has_its_attributes() {
    let attrs = |path: String| get(&path).unwrap().attributes();
    let want = |resource: &str, sub: Option<&str>, verb: &str, ns: &str, name: Option<&str>| {
        Some(ResourceAttributes {
            group: Some(GROUP.into()),
            version: Some(VERSION.into()),
            resource: Some(resource.into()),
            subresource: sub.map(str::to_owned),
            verb: Some(verb.into()),
            namespace: Some(ns.into()),
            name: name.map(str::to_owned),
            ..ResourceAttributes::default()
        })
    };
    let cases = [
        (
            format!("{V}/sessions"),
            want("sessions", None, "list", "", None),
        ),
        (
            format!("{V}/namespaces/team/sessions"),
            want("sessions", None, "list", "team", None),
        ),
        (
            format!("{V}/namespaces/team/sessions/s1"),
            want("sessions", None, "get", "team", Some("s1")),
        ),
        (
            format!("{V}/namespaces/team/sessions/s1/recording"),
            want("sessions", Some("recording"), "get", "team", Some("s1")),
        ),
        (
            format!("{V}/namespaces/team/sessions/s1/events"),
            want("sessions", Some("events"), "get", "team", Some("s1")),
        ),
        (
            format!("{V}/namespaces/team/sessions/s1/player"),
            want("sessions", Some("player"), "get", "team", Some("s1")),
        ),
        (
            format!("{V}/namespaces/team/sessions/s1/player/asciinema-player.min.js"),
            want("sessions", Some("player"), "get", "team", Some("s1")),
        ),
        (
            format!("{V}/auditevents"),
            want("auditevents", None, "list", "", None),
        ),
        (
            format!("{V}/namespaces/team/auditevents"),
            want("auditevents", None, "list", "team", None),
        ),
        ("/apis".to_owned(), None),
        ("/apis/audit.gatehouse.dev".to_owned(), None),
        (V.to_owned(), None),
    ];
    for (path, want) in cases {
        assert_eq!(attrs(path.clone()), want, "{path}");
    }
}

#[test]
fn the_review_carries_the_user_groups_and_extra() {
    let user = UserInfo {
        name: "alice".into(),
        uid: Some("u-1".into()),
        groups: vec!["dev".into(), "system:authenticated".into()],
        extra: [("scopes".to_owned(), vec!["a".to_owned(), "b".to_owned()])].into(),
    };
    let attributes = get(&format!("{V}/namespaces/team/sessions"))
        .unwrap()
        .attributes()
        .unwrap();
    let review = serde_json::to_value(review_for(&user, &attributes)).unwrap();
    assert_eq!(
        review["spec"],
        serde_json::json!({
            "user": "alice",
            "uid": "u-1",
            "groups": ["dev", "system:authenticated"],
            "extra": {"scopes": ["a", "b"]},
            "resourceAttributes": {
                "group": "audit.gatehouse.dev", "version": "v1alpha1",
                "resource": "sessions", "verb": "list", "namespace": "team",
            },
        })
    );
    let plain = UserInfo {
        name: "bob".into(),
        ..UserInfo::default()
    };
    let review = serde_json::to_value(review_for(&plain, &attributes)).unwrap();
    assert_eq!(review["spec"].get("extra"), None);
    assert_eq!(review["spec"]["groups"], serde_json::json!([]));
}

#[test]
fn forbidden_messages_name_the_user_the_verb_and_the_scope() {
    let bob = UserInfo {
        name: "bob".into(),
        ..UserInfo::default()
    };
    let cases = [
        (
            format!("{V}/namespaces/team/sessions/s1/recording"),
            r#"User "bob" cannot get sessions/recording "s1" in API group "audit.gatehouse.dev" in the namespace "team""#,
        ),
        (
            format!("{V}/sessions"),
            r#"User "bob" cannot list sessions in API group "audit.gatehouse.dev" at the cluster scope"#,
        ),
    ];
    for (path, want) in cases {
        let attributes = get(&path).unwrap().attributes().unwrap();
        assert_eq!(forbidden_message(&bob, &attributes), want);
    }
}
