//! What the audit API returns, as the CLI reads it (Session and AuditEvent lists, tolerant of
//! fields it does not know), and how `sessions` and `audit` print it: kubectl-like tables, or
//! the API's JSON/YAML as received. Every cell is made printable first (control characters
//! dropped), since user names, hosts and messages come from clients. Pure.

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use gatehouse_crds::cast::printable;

/// `metadata` of a list item.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Meta {
    /// The session id, or `<writer>.<sequence>.<index>` of an event.
    pub name: String,
    /// The namespace.
    pub namespace: Option<String>,
}

/// A session's AccessRequest.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RequestRef {
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// `spec` of a Session.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionSpec {
    /// The request.
    pub request: RequestRef,
    /// Who.
    pub user: String,
    /// Where.
    pub host: String,
    /// As whom.
    pub login: String,
    /// `shell`, `exec`, `subsystem:sftp`…
    pub session_kind: String,
}

/// Where a session's recording is.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Recording {
    /// The store key.
    pub key: String,
    /// SHA-256 (hex) of the stored cast.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// `status` of a Session.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionStatus {
    /// Start (RFC 3339).
    pub start: Option<Timestamp>,
    /// End, once it ended.
    pub end: Option<Timestamp>,
    /// Bytes from the engineer.
    pub bytes_to_target: Option<u64>,
    /// Bytes to the engineer.
    pub bytes_to_client: Option<u64>,
    /// The target's exit status.
    pub exit_status: Option<u32>,
    /// The recording, once stored.
    pub recording: Option<Recording>,
    /// Commands seen.
    pub commands: u64,
    /// File operations.
    pub file_operations: u64,
    /// Port forwards.
    pub forwards: u64,
}

/// One Session.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Session {
    /// Name (the session id) and namespace.
    pub metadata: Meta,
    /// Who, where.
    pub spec: SessionSpec,
    /// When, how much.
    pub status: SessionStatus,
}

/// Sessions that started at or after `since` (all without it); a session without a start
/// time is kept only without `since`.
pub fn started_since(
    items: Vec<(Value, Session)>,
    since: Option<Timestamp>,
) -> Vec<(Value, Session)> {
    items
        .into_iter()
        .filter(|(_, s)| since.is_none_or(|since| s.status.start.is_some_and(|t| t >= since)))
        .collect()
}

/// The `items` of a list response, each as received and as read.
pub fn list_items<T: for<'de> Deserialize<'de>>(list: &Value) -> Vec<(Value, T)> {
    list.get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    serde_json::from_value(item.clone())
                        .ok()
                        .map(|t| (item.clone(), t))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cell(text: &str) -> String {
    let text = printable(text);
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A duration in whole seconds, like kubectl's ages (`45s`, `12m3s`, `2h5m`).
pub fn short_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// Rows of the sessions table (the header first). `namespace` adds that column (`-A`).
pub fn session_rows(items: &[Session], namespace: bool, wide: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAME", "USER", "HOST", "LOGIN", "REQUEST", "START", "DURATION", "EXIT",
    ];
    if namespace {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend([
            "KIND",
            "IN",
            "OUT",
            "COMMANDS",
            "FILES",
            "FORWARDS",
            "RECORDING SHA256",
        ]);
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for s in items {
        let duration = match (s.status.start, s.status.end) {
            (Some(start), Some(end)) => short_duration(end.as_second() - start.as_second()),
            (Some(_), None) => "running".to_owned(),
            _ => "-".to_owned(),
        };
        let mut row = vec![
            cell(&s.metadata.name),
            cell(&s.spec.user),
            cell(&s.spec.host),
            cell(&s.spec.login),
            cell(&s.spec.request.name),
            opt(s.status.start),
            duration,
            opt(s.status.exit_status),
        ];
        if namespace {
            row.insert(0, cell(s.metadata.namespace.as_deref().unwrap_or_default()));
        }
        if wide {
            row.extend([
                cell(&s.spec.session_kind),
                opt(s.status.bytes_to_target),
                opt(s.status.bytes_to_client),
                s.status.commands.to_string(),
                s.status.file_operations.to_string(),
                s.status.forwards.to_string(),
                cell(
                    s.status
                        .recording
                        .as_ref()
                        .map_or("", |r| r.sha256.as_str()),
                ),
            ]);
        }
        rows.push(row);
    }
    rows
}

/// An audit event as listed: the stored event's fields plus `metadata`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ListedEvent {
    /// `<writer>.<sequence>.<index>`.
    pub metadata: Meta,
    /// When.
    pub time: Option<Timestamp>,
    /// What.
    #[serde(rename = "type")]
    pub type_: String,
    /// Who.
    pub actor: Option<Actor>,
    /// The request's namespace.
    pub namespace: Option<String>,
    /// The request.
    pub request: Option<RequestRef>,
    /// Host.
    pub host: Option<String>,
    /// Login.
    pub login: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Message.
    pub message: Option<String>,
}

/// An event's actor, as far as the table shows it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Actor {
    /// User name.
    pub user: Option<String>,
    /// SSH key fingerprint.
    pub fingerprint: Option<String>,
}

/// Rows of the audit table (the header first).
pub fn event_rows(items: &[ListedEvent], wide: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "TIME",
        "TYPE",
        "USER",
        "NAMESPACE",
        "REQUEST",
        "HOST",
        "OUTCOME",
        "MESSAGE",
    ];
    if wide {
        header.extend(["LOGIN", "SESSION", "NAME"]);
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for e in items {
        let user = e
            .actor
            .as_ref()
            .and_then(|a| a.user.clone().or(a.fingerprint.clone()));
        let mut row = vec![
            opt(e.time),
            cell(&e.type_),
            cell(user.as_deref().unwrap_or_default()),
            cell(e.namespace.as_deref().unwrap_or_default()),
            cell(e.request.as_ref().map_or("", |r| r.name.as_str())),
            cell(e.host.as_deref().unwrap_or_default()),
            cell(e.outcome.as_deref().unwrap_or_default()),
            cell(e.message.as_deref().unwrap_or_default()),
        ];
        if wide {
            row.extend([
                cell(e.login.as_deref().unwrap_or_default()),
                cell(e.session_id.as_deref().unwrap_or_default()),
                cell(&e.metadata.name),
            ]);
        }
        rows.push(row);
    }
    rows
}

/// `rows` aligned in columns three spaces apart, one line each (kubectl's look).
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn session_json() -> Value {
        json!({"apiVersion":"audit.gatehouse.dev/v1alpha1","kind":"Session",
          "metadata":{"name":"0f3a9c2b1d4e5f60","namespace":"team","creationTimestamp":"2026-12-03T10:00:00Z"},
          "spec":{"request":{"name":"alice-db","uid":"u1"},"user":"alice","host":"prod-db-01","login":"root",
                  "sessionKind":"shell"},
          "status":{"start":"2026-12-03T10:00:00Z","end":"2026-12-03T10:12:03Z","bytesToTarget":1,"bytesToClient":2,
                    "exitStatus":0,"recording":{"key":"k","sha256":"ab12","bytes":3},"commands":4,
                    "fileOperations":5,"forwards":6,"unknownLater":true}})
    }

    #[test]
    fn sessions_table() {
        let list = json!({"kind":"SessionList","items":[session_json(),
            {"metadata":{"name":"running1","namespace":"ops"},
             "spec":{"user":"bob\u{1b}]52;c;eA==\u{7}","host":"h"},"status":{"start":"2026-12-03T11:00:00Z"}},
            {"metadata":{"name":"nostart"}}, "not an object"]});
        let items: Vec<(Value, Session)> = list_items(&list);
        assert_eq!(items.len(), 3, "a malformed item is skipped");
        let sessions: Vec<Session> = items.iter().map(|(_, s)| s.clone()).collect();
        // ESC and BEL of the hostile user name are dropped: the cell is text.
        assert_eq!(
            render(&session_rows(&sessions, false, false)),
            "NAME               USER            HOST         LOGIN   REQUEST    START                  DURATION   EXIT\n\
             0f3a9c2b1d4e5f60   alice           prod-db-01   root    alice-db   2026-12-03T10:00:00Z   12m3s      0\n\
             running1           bob]52;c;eA==   h            -       -          2026-12-03T11:00:00Z   running    -\n\
             nostart            -               -            -       -          -                      -          -\n"
        );
        let wide = session_rows(&sessions[..1], true, true);
        assert_eq!(wide[0][0], "NAMESPACE");
        assert_eq!(wide[1][0], "team");
        assert_eq!(&wide[1][9..], ["shell", "1", "2", "4", "5", "6", "ab12"]);
    }

    #[test]
    fn since_keeps_sessions_started_at_or_after() {
        let list = json!({"items":[session_json(),
            {"metadata":{"name":"later"},"status":{"start":"2026-12-03T11:00:00Z"}},
            {"metadata":{"name":"unknown"}}]});
        let names = |since: Option<&str>| {
            started_since(list_items(&list), since.map(|s| s.parse().unwrap()))
                .into_iter()
                .map(|(_, s)| s.metadata.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(None), ["0f3a9c2b1d4e5f60", "later", "unknown"]);
        assert_eq!(
            names(Some("2026-12-03T10:00:00Z")),
            ["0f3a9c2b1d4e5f60", "later"]
        );
        assert_eq!(names(Some("2026-12-03T10:00:01Z")), ["later"]);
        assert!(names(Some("2026-12-04T00:00:00Z")).is_empty());
    }

    #[test]
    fn events_table() {
        let list = json!({"kind":"AuditEventList","items":[
            {"apiVersion":"audit.gatehouse.dev/v1alpha1","kind":"AuditEvent",
             "metadata":{"name":"gatehouse-proxy-7d9f.3.0","namespace":"team"},
             "time":"2026-12-03T10:00:00.123456Z","type":"loginAccepted",
             "actor":{"kind":"ssh","fingerprint":"SHA256:x","user":"alice"},
             "namespace":"team","request":{"name":"alice-db"},"host":"prod-db-01","login":"root",
             "sessionId":"s1","outcome":"accepted","message":"login\nwith a newline"},
            {"metadata":{"name":"op.0.1"},"time":"2026-12-03T10:00:01Z","type":"approved",
             "actor":{"kind":"kubernetes","fingerprint":"SHA256:y"}}]});
        let events: Vec<ListedEvent> = list_items(&list).into_iter().map(|(_, e)| e).collect();
        let rows = event_rows(&events, true);
        assert_eq!(
            rows[1],
            [
                "2026-12-03T10:00:00.123456Z",
                "loginAccepted",
                "alice",
                "team",
                "alice-db",
                "prod-db-01",
                "accepted",
                "loginwith a newline",
                "root",
                "s1",
                "gatehouse-proxy-7d9f.3.0"
            ]
        );
        assert_eq!(
            &rows[2][..3],
            ["2026-12-03T10:00:01Z", "approved", "SHA256:y"]
        );
        assert_eq!(event_rows(&events, false)[0].len(), 8);
    }

    #[test]
    fn short_durations() {
        for (s, want) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m0s"),
            (3599, "59m59s"),
            (7500, "2h5m"),
            (-3, "0s"),
        ] {
            assert_eq!(short_duration(s), want);
        }
    }
}
