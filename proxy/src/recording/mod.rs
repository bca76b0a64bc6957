//! Session recording. Data comes from the session tasks (terminal bytes, resizes and the
//! proxy's own notices, plus a [`SessionMeta`] when a session starts); it goes to asciinema v2
//! files spooled on local disk ([`spool`]), which the [`uploader`] copies to the recording
//! [`store`] (S3 or a directory) before deleting them. While a session runs, [`live`] copies
//! what it spooled so far to the store in pieces ([`segments`]); [`budget`] bounds what one
//! session and the whole spool may hold; [`sftp`] turns an SFTP stream into audit events.
//!
//! Nothing here knows about SSH: a session is a stream of bytes with a size and some metadata.

pub mod asciicast;
pub mod budget;
pub mod live;
pub mod segments;
pub mod sftp;
pub mod spool;
pub mod spooled;
/// The store (S3 or a directory), from the shared `gatehouse-store` crate.
pub use gatehouse_store as store;
pub mod uploader;

use serde::{Deserialize, Serialize};

pub use spool::{Recorder, SpooledRecording};
pub use store::{Store, StoredRecording};
pub use uploader::{UploadQueue, UploadSink, Uploader};

/// What a session is (goes into the header's gatehouse metadata).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SessionKind {
    /// An interactive shell.
    Shell,
    /// One command.
    Exec {
        /// The command line as the client sent it.
        command: String,
    },
    /// A subsystem such as `sftp`.
    Subsystem {
        /// Subsystem name.
        name: String,
    },
}

/// Everything known about a session when it starts; stored next to the spool file as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionMeta {
    /// Unique session id, e.g. 16 lowercase hex characters; names the spool files.
    pub session_id: String,
    /// Namespace of the AccessRequest that granted the session.
    pub request_namespace: String,
    /// Name of that AccessRequest.
    pub request_name: String,
    /// UID of that AccessRequest.
    pub request_uid: String,
    /// Kubernetes user name of the engineer (may contain `:` and the like).
    pub requester: String,
    /// Who approved the request.
    pub approvers: Vec<String>,
    /// The reason given in the request.
    pub reason: Option<String>,
    /// HostGroup of the target.
    pub host_group: String,
    /// Target host name.
    pub host: String,
    /// Login user on the target.
    pub login: String,
    /// Shell, exec or subsystem.
    pub kind: SessionKind,
    /// When the session started.
    pub start: jiff::Timestamp,
    /// Terminal width at start (80 when there is no pty).
    pub width: u32,
    /// Terminal height at start (24 when there is no pty).
    pub height: u32,
    /// `TERM` from the pty request.
    pub term: Option<String>,
    /// Whether the engineer's keystrokes are recorded as well as the output.
    pub record_input: bool,
    /// SFTP file content kept per file and direction (the policy's
    /// `recording.fileContent.maxBytesPerFile`); None: content is not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp_content_bytes: Option<u64>,
}

impl SessionMeta {
    /// The recording's key in the store:
    /// `recordings/YYYY-MM-DD/<requester>_<host>_<session>.cast`, dated in UTC by the start.
    /// Requester, host and session id keep only `[A-Za-z0-9._-]` (anything else becomes `-`),
    /// so a key is one safe path segment per level whatever the user name looks like.
    pub fn object_key(&self) -> String {
        let date = self.start.to_zoned(jiff::tz::TimeZone::UTC).date();
        format!(
            "recordings/{date}/{}_{}_{}.cast",
            sanitise(&self.requester),
            sanitise(&self.host),
            sanitise(&self.session_id),
        )
    }
}

/// Replace everything outside `[A-Za-z0-9._-]` by `-`.
fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use sha2::{Digest, Sha256};

    use super::*;

    /// The JSON lines of a cast file (header first).
    pub(crate) fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The data of the events with `code` (`o`, `i`, `m`) after the header.
    pub(crate) fn events(lines: &[serde_json::Value], code: &str) -> Vec<String> {
        lines[1..]
            .iter()
            .filter(|e| e[1] == code)
            .map(|e| e[2].as_str().unwrap().to_owned())
            .collect()
    }

    /// A realistic session description for the module's tests.
    pub(crate) fn meta(session_id: &str) -> SessionMeta {
        SessionMeta {
            session_id: session_id.to_owned(),
            request_namespace: "team-a".to_owned(),
            request_name: "req-1".to_owned(),
            request_uid: "0b6c2f4e-1111-2222-3333-444455556666".to_owned(),
            requester: "oidc:alice@example.com".to_owned(),
            approvers: vec!["bob".to_owned()],
            reason: Some("INC-42 disk full".to_owned()),
            host_group: "prod-db".to_owned(),
            host: "prod-db-01".to_owned(),
            login: "ubuntu".to_owned(),
            kind: SessionKind::Shell,
            start: "2024-03-09T23:59:58.5Z".parse().unwrap(),
            width: 120,
            height: 40,
            term: Some("xterm-256color".to_owned()),
            record_input: false,
            sftp_content_bytes: None,
        }
    }

    /// A spooled recording of `text` started at `start`; unfinished ones are left the way a
    /// crashed proxy leaves them.
    pub(crate) fn record(
        spool: &Path,
        id: &str,
        start: &str,
        text: &str,
        finish: bool,
    ) -> SpooledRecording {
        let mut m = meta(id);
        m.start = start.parse().unwrap();
        let mut rec = Recorder::create(spool, m.clone()).unwrap();
        rec.output(text.as_bytes()).unwrap();
        if finish {
            return rec.finish(Some(0)).unwrap();
        }
        drop(rec);
        SpooledRecording {
            meta: m,
            cast_path: spool.join(format!("{id}.cast")),
            meta_path: spool.join(format!("{id}.json")),
            end: None,
            exit_status: None,
        }
    }

    /// SHA-256 in lowercase hex, computed independently of the store.
    pub(crate) fn sha256_hex(data: &[u8]) -> String {
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn object_key_is_dated_in_utc_and_sanitised() {
        let mut m = meta("00112233aabbccdd");
        m.host = "prod db/01".to_owned();
        assert_eq!(
            m.object_key(),
            "recordings/2024-03-09/oidc-alice-example.com_prod-db-01_00112233aabbccdd.cast"
        );
    }

    #[test]
    fn meta_round_trips_through_json_with_camel_case_names() {
        let mut m = meta("00112233aabbccdd");
        m.kind = SessionKind::Exec {
            command: "uptime".to_owned(),
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["requestNamespace"], "team-a");
        assert_eq!(json["recordInput"], false);
        assert_eq!(json["kind"]["type"], "exec");
        assert_eq!(json["kind"]["command"], "uptime");
        assert_eq!(json["start"], "2024-03-09T23:59:58.5Z");
        let back: SessionMeta = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
