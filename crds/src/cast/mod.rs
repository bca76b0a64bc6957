//! asciicast v2 recordings, read back: the header line and event lines the proxy writes
//! (<https://docs.asciinema.org/manual/asciicast/v2/>), and [`sanitise`], which makes an
//! event's data safe to print on an auditor's terminal.
//!
//! Data comes from a cast's lines as a reader split them (the caller bounds each line to
//! [`MAX_LINE_BYTES`] and counts lines from 1, the header); it goes to a player as a
//! [`Header`] and [`Event`]s, or as a [`CastError`] naming the line and what is wrong with it.
//! Pure: no I/O, nothing kept between lines.

pub mod sanitise;

use serde::Deserialize;
use serde_json::Value;

pub use sanitise::{Sanitiser, printable, sanitise_for_replay};

/// The longest line a reader accepts. The proxy writes one event per chunk of an SSH channel
/// (at most a few tens of KiB, up to six times that once JSON-escaped), so this leaves room
/// while keeping a hostile file from growing a reader's buffer without end.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Why a cast could not be read. Every message names the line (1 is the header).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CastError {
    /// The input has no header line.
    #[error("line 1: the input is empty; an asciicast v2 file starts with a JSON header line")]
    Empty,
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line {line}: longer than {MAX_LINE_BYTES} bytes; not an asciicast v2 recording")]
    LineTooLong {
        /// The line number.
        line: u64,
    },
    /// A line is not UTF-8.
    #[error("line {line}: not UTF-8 text; asciicast v2 lines are JSON")]
    NotUtf8 {
        /// The line number.
        line: u64,
    },
    /// The header is not a JSON object with `"version": 2`.
    #[error("line 1: header: {problem}")]
    Header {
        /// What is wrong, naming the field.
        problem: String,
    },
    /// An event line is not `[seconds, "code", "data"]`.
    #[error("line {line}: event: {problem}")]
    Event {
        /// The line number.
        line: u64,
        /// What is wrong, naming the element.
        problem: String,
    },
}

/// What the header line says. Only `version` is required; Gatehouse's own metadata is under
/// `"gatehouse"` (absent from casts recorded elsewhere).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Header {
    /// Terminal width in columns.
    #[serde(default)]
    pub width: Option<u64>,
    /// Terminal height in rows.
    #[serde(default)]
    pub height: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// The title.
    #[serde(default)]
    pub title: Option<String>,
    /// The longest pause a player should show, in seconds.
    #[serde(default)]
    pub idle_time_limit: Option<f64>,
    /// Gatehouse's metadata.
    #[serde(default)]
    pub gatehouse: Option<GatehouseMeta>,
}

/// The header's `"gatehouse"` object (written by the proxy's `asciicast::header_line`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatehouseMeta {
    /// Kubernetes user name of the engineer.
    pub requester: String,
    /// Unix login on the host.
    pub login: String,
    /// The host.
    pub host: String,
    /// The HostGroup.
    pub host_group: String,
    /// Namespace of the AccessRequest.
    pub request_namespace: String,
    /// Name of the AccessRequest.
    pub request_name: String,
    /// The session id.
    pub session_id: String,
    /// Shell, exec or subsystem, as `{"type": …}`.
    pub kind: Value,
}

/// What an event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventCode {
    /// `"o"`: what the target printed.
    Output,
    /// `"i"`: what the engineer sent.
    Input,
    /// `"m"`: a marker (Gatehouse's audit events, such as SFTP operations).
    Marker,
    /// `"r"`: a resize, data `"{w}x{h}"`.
    Resize,
    /// Any other code (a later format version); players skip it.
    Other(String),
}

/// One event line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start of the recording.
    pub time: f64,
    /// What kind of event.
    pub code: EventCode,
    /// Its data.
    pub data: String,
}

/// The text of line `line` from its raw bytes (without the newline): refuses an over-long or
/// non-UTF-8 line, and drops a trailing `\r`.
pub fn decode_line(line: u64, bytes: &[u8]) -> Result<&str, CastError> {
    if bytes.len() > MAX_LINE_BYTES {
        return Err(CastError::LineTooLong { line });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CastError::NotUtf8 { line })?;
    Ok(text.strip_suffix('\r').unwrap_or(text))
}

/// Parse the header (line 1).
pub fn parse_header(text: &str) -> Result<Header, CastError> {
    let problem = |problem: String| CastError::Header { problem };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        problem(format!(
            "not JSON ({e}); an asciicast v2 file starts with a JSON object"
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(problem("not a JSON object".to_owned()));
    };
    match object.get("version").and_then(Value::as_u64) {
        Some(2) => {}
        Some(other) => {
            return Err(problem(format!(
                "version {other} is not supported (asciicast version 2 only)"
            )));
        }
        None => {
            return Err(problem(
                "version: missing or not a number (want 2)".to_owned(),
            ));
        }
    }
    let header: Header = serde_json::from_value(value).map_err(|e| problem(e.to_string()))?;
    if let Some(limit) = header.idle_time_limit
        && !(limit.is_finite() && limit > 0.0)
    {
        return Err(problem(format!(
            "idle_time_limit: {limit} is not a positive number of seconds"
        )));
    }
    Ok(header)
}

/// Parse event line `line` (2 or more).
pub fn parse_event(line: u64, text: &str) -> Result<Event, CastError> {
    let problem = |problem: String| CastError::Event { line, problem };
    let value: Value =
        serde_json::from_str(text).map_err(|e| problem(format!("not JSON ({e})")))?;
    let Some([time, code, data]) = value.as_array().map(Vec::as_slice) else {
        return Err(problem(
            "not a JSON array of three elements [seconds, \"code\", \"data\"]".to_owned(),
        ));
    };
    let time = time
        .as_f64()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| problem(format!("time {time}: not a number of seconds ≥ 0")))?;
    let code = match code.as_str() {
        Some("o") => EventCode::Output,
        Some("i") => EventCode::Input,
        Some("m") => EventCode::Marker,
        Some("r") => EventCode::Resize,
        Some(other) => EventCode::Other(other.to_owned()),
        None => return Err(problem(format!("code {code}: not a string"))),
    };
    let Some(data) = data.as_str() else {
        return Err(problem(format!("data {data}: not a string")));
    };
    Ok(Event {
        time,
        code,
        data: data.to_owned(),
    })
}

/// One line for a person: who, where, which request, which session, when and how big, from
/// the header (control characters removed: a requester or a title is no escape route).
/// `started` is the start time already formatted by the caller.
pub fn describe_header(header: &Header, started: Option<&str>) -> String {
    let mut parts = Vec::new();
    match &header.gatehouse {
        Some(g) => {
            parts.push(format!("{} → {}@{}", g.requester, g.login, g.host));
            parts.push(format!(
                "AccessRequest {}/{}",
                g.request_namespace, g.request_name
            ));
            if !g.session_id.is_empty() {
                parts.push(format!("session {}", g.session_id));
            }
            match (
                g.kind.get("type").and_then(Value::as_str),
                g.kind.get("command").and_then(Value::as_str),
                g.kind.get("name").and_then(Value::as_str),
            ) {
                (Some("exec"), Some(command), _) => parts.push(format!("command {command:?}")),
                (Some("subsystem"), _, Some(name)) => parts.push(format!("subsystem {name}")),
                (Some(kind), _, _) => parts.push(kind.to_owned()),
                _ => {}
            }
        }
        None => {
            if let Some(title) = &header.title {
                parts.push(title.clone());
            }
        }
    }
    if let Some(started) = started {
        parts.push(format!("started {started}"));
    }
    if let (Some(w), Some(h)) = (header.width, header.height) {
        parts.push(format!("{w}x{h}"));
    }
    printable(&parts.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HEADER: &str = r#"{"version":2,"width":120,"height":40,"timestamp":1710028798,"env":{"TERM":"xterm"},"title":"t","gatehouse":{"requestNamespace":"team-a","requestName":"req-1","requestUid":"u","requester":"oidc:alice","approvers":[],"reason":null,"hostGroup":"prod","host":"db1","login":"ubuntu","sessionId":"00112233aabbccdd","kind":{"type":"exec","command":"uptime"}}}"#;

    #[test]
    fn gatehouse_header_parses_and_describes() {
        let header = parse_header(HEADER).unwrap();
        assert_eq!(header.width, Some(120));
        assert_eq!(header.timestamp, Some(1_710_028_798));
        let g = header.gatehouse.clone().unwrap();
        assert_eq!(
            (g.requester.as_str(), g.host.as_str()),
            ("oidc:alice", "db1")
        );
        assert_eq!(
            describe_header(&header, Some("2024-03-10T00:00:00Z")),
            "oidc:alice → ubuntu@db1, AccessRequest team-a/req-1, session 00112233aabbccdd, \
             command \"uptime\", started 2024-03-10T00:00:00Z, 120x40"
        );
    }

    #[test]
    fn foreign_header_describes_by_title_and_hostile_fields_lose_their_controls() {
        let header = parse_header(r#"{"version":2,"title":"x\u001b]0;evil\u0007y"}"#).unwrap();
        assert_eq!(describe_header(&header, None), "x]0;evily");
        let hostile = HEADER.replace("oidc:alice", "oidc:\\u001b]52;c;AA\\u0007bob");
        let header = parse_header(&hostile).unwrap();
        assert!(describe_header(&header, None).starts_with("oidc:]52;c;AAbob → "));
    }

    #[test]
    fn bad_headers_name_the_problem() {
        let cases = [
            ("", "line 1: header: not JSON"),
            ("[1, \"o\", \"x\"]", "line 1: header: not a JSON object"),
            ("{}", "line 1: header: version: missing"),
            (
                "{\"version\":1}",
                "line 1: header: version 1 is not supported",
            ),
            (
                "{\"version\":\"2\"}",
                "line 1: header: version: missing or not a number",
            ),
            (
                "{\"version\":2,\"width\":\"wide\"}",
                "line 1: header: invalid type",
            ),
            (
                "{\"version\":2,\"idle_time_limit\":-1}",
                "line 1: header: idle_time_limit: -1 is not a positive",
            ),
        ];
        for (input, want) in cases {
            let error = parse_header(input).unwrap_err().to_string();
            assert!(error.starts_with(want), "{input:?}: {error}");
        }
    }

    #[test]
    fn events_parse() {
        let cases = [
            (
                "[0.5, \"o\", \"hi\\u001b[1m\"]",
                Event {
                    time: 0.5,
                    code: EventCode::Output,
                    data: "hi\u{1b}[1m".to_owned(),
                },
            ),
            (
                "[1, \"i\", \"ls\\r\"]",
                Event {
                    time: 1.0,
                    code: EventCode::Input,
                    data: "ls\r".to_owned(),
                },
            ),
            (
                "[2.25, \"m\", \"sftp open /x (read)\"]",
                Event {
                    time: 2.25,
                    code: EventCode::Marker,
                    data: "sftp open /x (read)".to_owned(),
                },
            ),
            (
                "[3, \"r\", \"100x30\"]",
                Event {
                    time: 3.0,
                    code: EventCode::Resize,
                    data: "100x30".to_owned(),
                },
            ),
            (
                "[4, \"x\", \"\"]",
                Event {
                    time: 4.0,
                    code: EventCode::Other("x".to_owned()),
                    data: String::new(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_event(2, input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn bad_events_name_the_line_and_element() {
        let cases = [
            ("", "line 7: event: not JSON"),
            ("{\"o\": 1}", "line 7: event: not a JSON array of three"),
            ("[1, \"o\"]", "line 7: event: not a JSON array of three"),
            (
                "[1, \"o\", \"a\", 4]",
                "line 7: event: not a JSON array of three",
            ),
            ("[-1, \"o\", \"a\"]", "line 7: event: time -1: not a number"),
            (
                "[\"1\", \"o\", \"a\"]",
                "line 7: event: time \"1\": not a number",
            ),
            ("[1, 2, \"a\"]", "line 7: event: code 2: not a string"),
            ("[1, \"o\", 3]", "line 7: event: data 3: not a string"),
        ];
        for (input, want) in cases {
            let error = parse_event(7, input).unwrap_err().to_string();
            assert!(error.starts_with(want), "{input:?}: {error}");
        }
    }

    #[test]
    fn lines_are_bounded_and_utf8() {
        assert_eq!(
            decode_line(3, b"[1,\"o\",\"a\"]\r").unwrap(),
            "[1,\"o\",\"a\"]"
        );
        assert_eq!(
            decode_line(4, &vec![b'x'; MAX_LINE_BYTES + 1]),
            Err(CastError::LineTooLong { line: 4 })
        );
        assert_eq!(
            decode_line(5, b"\xff\xfe"),
            Err(CastError::NotUtf8 { line: 5 })
        );
        assert!(
            CastError::LineTooLong { line: 4 }
                .to_string()
                .starts_with("line 4: longer than 1048576 bytes")
        );
    }
}
