//! The aggregated API's paths and queries (`audit.gatehouse.dev/v1alpha1`, see the audit
//! contract): built from the command line's flags, checked here so that nothing a user types
//! can change which resource is asked for (names are checked, every query value is
//! percent-encoded, field selector values are escaped as Kubernetes escapes them). Pure: the
//! paths go to `kube::Client` requests in `audit`.

use gatehouse_crds::audit::EventType;
use jiff::Timestamp;

/// The API group and version the audit API serves.
pub const API: &str = "/apis/audit.gatehouse.dev/v1alpha1";

/// Which namespace a list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace (`-A`).
    All,
}

impl Scope {
    fn prefix(&self) -> String {
        match self {
            Scope::Namespace(ns) => format!("{API}/namespaces/{ns}"),
            Scope::All => API.to_owned(),
        }
    }
}

/// Why flags do not make a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A namespace that is not a DNS label.
    #[error("namespace {0:?} is not a Kubernetes namespace name (lowercase letters, digits, '-')")]
    Namespace(String),
    /// A session name that is not an object name.
    #[error(
        "session {0:?} is not a session name (lowercase letters, digits, '.', '-'; `kubectl gatehouse sessions` lists them)"
    )]
    Session(String),
    /// An unknown event type.
    #[error("--type {given:?} is not an audit event type; one of: {known}")]
    Type {
        /// What was given.
        given: String,
        /// The types there are.
        known: String,
    },
    /// A time that is neither RFC 3339 nor a duration.
    #[error(
        "{flag} {given:?} is not a time: give RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (90m, 2h)"
    )]
    Time {
        /// Which flag.
        flag: &'static str,
        /// What was given.
        given: String,
    },
    /// `--from` is not before `--to`.
    #[error("--from {from} is not before --to {to}")]
    Range {
        /// The start.
        from: String,
        /// The end.
        to: String,
    },
}

/// `text` is a DNS-1123 label (a namespace name).
pub fn check_namespace(text: &str) -> Result<(), QueryError> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(QueryError::Namespace(text.to_owned()))
    }
}

/// `text` is a session name: what the proxy's session ids look like (16 hex digits) and any
/// other DNS-1123 subdomain, never `.`/`..` or anything with a slash.
pub fn check_session(text: &str) -> Result<(), QueryError> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(QueryError::Session(text.to_owned()))
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A field selector value escaped as Kubernetes' `fields.EscapeValue` does (`\`, `,`, `=`).
pub fn escape_selector_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn with_query(path: String, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return path;
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// `kubectl gatehouse sessions`' filters (`--user --host --request`), as a field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// `spec.user`.
    pub user: Option<String>,
    /// `spec.host`.
    pub host: Option<String>,
    /// `spec.request` (the AccessRequest's name).
    pub request: Option<String>,
}

impl SessionFilter {
    /// The `fieldSelector` value, or `None` without filters.
    pub fn field_selector(&self) -> Option<String> {
        let terms: Vec<String> = [
            ("spec.user", &self.user),
            ("spec.host", &self.host),
            ("spec.request", &self.request),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            value
                .as_ref()
                .map(|v| format!("{key}={}", escape_selector_value(v)))
        })
        .collect();
        (!terms.is_empty()).then(|| terms.join(","))
    }
}

/// `GET …/sessions` with the filter.
pub fn sessions_path(scope: &Scope, filter: &SessionFilter) -> String {
    let params: Vec<(&str, String)> = filter
        .field_selector()
        .map(|s| ("fieldSelector", s))
        .into_iter()
        .collect();
    with_query(format!("{}/sessions", scope.prefix()), &params)
}

/// `GET …/namespaces/{ns}/sessions/{id}` or one of its subresources (`recording`, `events`).
pub fn session_path(
    namespace: &str,
    session: &str,
    subresource: Option<&str>,
) -> Result<String, QueryError> {
    check_namespace(namespace)?;
    check_session(session)?;
    let base = format!("{API}/namespaces/{namespace}/sessions/{session}");
    Ok(match subresource {
        Some(sub) => format!("{base}/{sub}"),
        None => base,
    })
}

/// `kubectl gatehouse audit`'s filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `user`.
    pub user: Option<String>,
    /// `type`: event types (checked names).
    pub types: Vec<String>,
    /// `from` (inclusive), RFC 3339.
    pub from: Option<Timestamp>,
    /// `to` (exclusive), RFC 3339.
    pub to: Option<Timestamp>,
}

/// Every event type's JSON name.
pub fn event_type_names() -> Vec<String> {
    use EventType::*;
    [
        RequestCreated,
        Approved,
        Denied,
        Issued,
        Revoked,
        Expired,
        Failed,
        LoginAccepted,
        LoginRefused,
        SessionStarted,
        SessionEnded,
        FileOperation,
        ForwardOpened,
        ForwardClosed,
        Command,
        RecordingStored,
    ]
    .iter()
    .filter_map(|t| serde_json::to_value(t).ok())
    .filter_map(|v| v.as_str().map(str::to_owned))
    .collect()
}

/// `--type` values (repeated, or comma lists) checked against the event types.
pub fn parse_types(given: &[String]) -> Result<Vec<String>, QueryError> {
    let known = event_type_names();
    let mut out = Vec::new();
    for name in given.iter().flat_map(|g| g.split(',')).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        if !known.iter().any(|k| k == name) {
            return Err(QueryError::Type {
                given: name.to_owned(),
                known: known.join(", "),
            });
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// A `--from`/`--to`/`--since` value: RFC 3339, or a duration before `now` (`90m`, `2h`).
pub fn parse_time(flag: &'static str, text: &str, now: Timestamp) -> Result<Timestamp, QueryError> {
    let bad = || QueryError::Time {
        flag,
        given: text.to_owned(),
    };
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let ago = gatehouse_crds::duration::parse(text).map_err(|_| bad())?;
    let ago = jiff::SignedDuration::try_from(ago).map_err(|_| bad())?;
    now.checked_sub(ago).map_err(|_| bad())
}

impl EventFilter {
    /// The filter, with `--from` before `--to`.
    pub fn new(
        user: Option<String>,
        types: &[String],
        from: Option<&str>,
        to: Option<&str>,
        now: Timestamp,
    ) -> Result<Self, QueryError> {
        let from = from.map(|f| parse_time("--from", f, now)).transpose()?;
        let to = to.map(|t| parse_time("--to", t, now)).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err(QueryError::Range {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        Ok(Self {
            user,
            types: parse_types(types)?,
            from,
            to,
        })
    }
}

/// `GET …/auditevents` with the filter.
pub fn events_path(scope: &Scope, filter: &EventFilter) -> String {
    let mut params = Vec::new();
    if let Some(user) = &filter.user {
        params.push(("user", user.clone()));
    }
    if !filter.types.is_empty() {
        params.push(("type", filter.types.join(",")));
    }
    if let Some(from) = filter.from {
        params.push(("from", from.to_string()));
    }
    if let Some(to) = filter.to {
        params.push(("to", to.to_string()));
    }
    with_query(format!("{}/auditevents", scope.prefix()), &params)
}

/// `path` asking for the page after `token` (a list's `metadata.continue`); `path` as is
/// without one.
pub fn next_page(path: &str, token: Option<&str>) -> String {
    match token.filter(|t| !t.is_empty()) {
        Some(token) => {
            let join = if path.contains('?') { '&' } else { '?' };
            format!("{path}{join}continue={}", percent_encode(token))
        }
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ns(n: &str) -> Scope {
        Scope::Namespace(n.to_owned())
    }

    #[test]
    fn session_lists() {
        let none = SessionFilter::default();
        let alice = SessionFilter {
            user: Some("alice".into()),
            ..SessionFilter::default()
        };
        let all = SessionFilter {
            user: Some("system:serviceaccount:ci:deploy".into()),
            host: Some("prod-db-01".into()),
            request: Some("alice-prod-db-01".into()),
        };
        let hostile = SessionFilter {
            user: Some("a,spec.host=x".into()),
            host: Some("b\\=c&d".into()),
            request: None,
        };
        let cases = [
            (
                ns("team"),
                &none,
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions",
            ),
            (
                Scope::All,
                &none,
                "/apis/audit.gatehouse.dev/v1alpha1/sessions",
            ),
            (
                ns("team"),
                &alice,
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions?fieldSelector=spec.user%3Dalice",
            ),
            (
                Scope::All,
                &all,
                "/apis/audit.gatehouse.dev/v1alpha1/sessions?fieldSelector=spec.user%3Dsystem%3Aserviceaccount%3Aci%3Adeploy%2Cspec.host%3Dprod-db-01%2Cspec.request%3Dalice-prod-db-01",
            ),
            // A comma or '=' in a value is escaped: it cannot add a selector term.
            (
                ns("t"),
                &hostile,
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/t/sessions?fieldSelector=spec.user%3Da%5C%2Cspec.host%5C%3Dx%2Cspec.host%3Db%5C%5C%5C%3Dc%26d",
            ),
        ];
        for (scope, filter, want) in cases {
            assert_eq!(sessions_path(&scope, filter), want, "{filter:?}");
        }
        assert_eq!(
            hostile.field_selector().unwrap(),
            "spec.user=a\\,spec.host\\=x,spec.host=b\\\\\\=c&d"
        );
    }

    #[test]
    fn session_paths_take_only_names() {
        let ok = [
            (
                "team",
                "0f3a9c2b1d4e5f60",
                None,
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions/0f3a9c2b1d4e5f60",
            ),
            (
                "team",
                "0f3a9c2b1d4e5f60",
                Some("recording"),
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions/0f3a9c2b1d4e5f60/recording",
            ),
            (
                "a-b",
                "x.y",
                Some("events"),
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/a-b/sessions/x.y/events",
            ),
        ];
        for (namespace, session, sub, want) in ok {
            assert_eq!(session_path(namespace, session, sub).unwrap(), want);
        }
        for (namespace, session) in [
            ("team", ".."),
            ("team", "."),
            ("team", "../../secrets"),
            ("team", "a/b"),
            ("team", "a%2Fb"),
            ("team", "A"),
            ("team", ""),
            ("team", "-x"),
            ("team", "x?watch=true"),
            ("../kube-system", "x"),
            ("Team", "x"),
            ("", "x"),
            ("t/x", "x"),
        ] {
            assert!(
                session_path(namespace, session, None).is_err(),
                "{namespace:?} {session:?}"
            );
        }
    }

    #[test]
    fn event_queries() {
        let now: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let f = |user: Option<&str>, types: &[&str], from: Option<&str>, to: Option<&str>| {
            let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
            EventFilter::new(user.map(str::to_owned), &types, from, to, now)
                .map(|f| events_path(&ns("team"), &f))
                .map_err(|e| e.to_string())
        };
        let base = "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/auditevents";
        assert_eq!(f(None, &[], None, None).unwrap(), base);
        assert_eq!(
            f(
                Some("alice"),
                &["loginAccepted,sessionStarted", "sessionStarted"],
                Some("2026-12-03T10:00:00+01:00"),
                Some("1h")
            )
            .unwrap(),
            format!(
                "{base}?user=alice&type=loginAccepted%2CsessionStarted&from=2026-12-03T09%3A00%3A00Z&to=2026-12-03T11%3A00%3A00Z"
            )
        );
        assert_eq!(
            f(Some("a&type=x"), &[], None, None).unwrap(),
            format!("{base}?user=a%26type%3Dx")
        );
        let errors = [
            (f(None, &["login"], None, None), "--type \"login\" is not"),
            (
                f(None, &[], Some("yesterday"), None),
                "--from \"yesterday\"",
            ),
            (f(None, &[], None, Some("-1h")), "--to \"-1h\""),
            (
                f(None, &[], Some("1h"), Some("2h")),
                "--from 2026-12-03T11:00:00Z is not before --to 2026-12-03T10:00:00Z",
            ),
        ];
        for (got, want) in errors {
            assert!(got.as_ref().unwrap_err().contains(want), "{got:?}: {want}");
        }
        let all = EventFilter::new(None, &["issued".into()], None, None, now).unwrap();
        assert_eq!(
            events_path(&Scope::All, &all),
            "/apis/audit.gatehouse.dev/v1alpha1/auditevents?type=issued"
        );
    }

    #[test]
    fn pages() {
        let cases = [
            ("/a/auditevents", None, "/a/auditevents"),
            ("/a/auditevents", Some(""), "/a/auditevents"),
            (
                "/a/auditevents",
                Some("w.3.7"),
                "/a/auditevents?continue=w.3.7",
            ),
            (
                "/a/auditevents?user=x",
                Some("a&b=c"),
                "/a/auditevents?user=x&continue=a%26b%3Dc",
            ),
        ];
        for (path, token, want) in cases {
            assert_eq!(next_page(path, token), want);
        }
    }

    #[test]
    fn every_event_type_has_a_name() {
        let names = event_type_names();
        assert_eq!(names.len(), 16);
        assert!(names.contains(&"recordingStored".to_owned()));
        assert!(names.contains(&"requestCreated".to_owned()));
    }
}
