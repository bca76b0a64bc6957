//! Audit events (issue 15): one structured event per fact, and the durable batch format they
//! are stored in. Pure: the operator and the proxy build events and write them (today to their
//! logs, one JSON line each under the `tracing` target [`LOG_TARGET`]); this module defines
//! the JSON, bounds what outsiders write into it, and verifies a writer's chain of batches.
//!
//! A batch is JSONL: a [`BatchHeader`] line `{writer, sequence, previousBatchSha256, count}`,
//! then `count` event lines. `previousBatchSha256` is the SHA-256 (hex) of the writer's
//! previous batch, byte for byte, so deleting, editing or reordering batches breaks the chain;
//! [`verify_chain`] names the first break by batch and line.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `tracing` target every audit log line is written under.
pub const LOG_TARGET: &str = "gatehouse::audit";
/// String fields keep at most this many bytes (user names, hosts, logins, addresses, ids).
pub const MAX_FIELD_BYTES: usize = 512;
/// The message keeps at most this many bytes (it may quote a command or a path).
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// At most this many groups are kept of an actor.
pub const MAX_GROUPS: usize = 64;
/// What replaces the cut-off end of a bounded string.
pub const TRUNCATED: &str = "…[truncated]";

/// What happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EventType {
    /// An AccessRequest was created (seen Pending the first time).
    RequestCreated,
    /// An approver's approval was recorded.
    Approved,
    /// The request was denied.
    Denied,
    /// A certificate was issued.
    Issued,
    /// The request was revoked.
    Revoked,
    /// The request or its certificate expired.
    Expired,
    /// The request could not be issued.
    Failed,
    /// The proxy accepted an SSH login.
    LoginAccepted,
    /// The proxy refused an SSH login.
    LoginRefused,
    /// A session channel (shell, exec, subsystem) started.
    SessionStarted,
    /// A session channel ended.
    SessionEnded,
    /// A file operation (SFTP).
    FileOperation,
    /// A port forward was opened.
    ForwardOpened,
    /// A port forward was closed.
    ForwardClosed,
}

/// How the actor was identified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ActorKind {
    /// A Kubernetes user, as the API server authenticated it.
    Kubernetes,
    /// An SSH client, by the key it presented.
    Ssh,
}

/// Who did it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// Kubernetes user or SSH identity.
    pub kind: ActorKind,
    /// User name (Kubernetes), or the user the SSH identity stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Kubernetes groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// SHA-256 fingerprint of the SSH key presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Actor {
    /// A Kubernetes user with its groups.
    pub fn kubernetes(user: &str, groups: &[String]) -> Self {
        Self {
            kind: ActorKind::Kubernetes,
            user: Some(user.to_owned()),
            groups: groups.to_vec(),
            fingerprint: None,
        }
    }

    /// An SSH client: the key's fingerprint, and the user it stands for when known.
    pub fn ssh(fingerprint: Option<&str>, user: Option<&str>) -> Self {
        Self {
            kind: ActorKind::Ssh,
            user: user.map(str::to_owned),
            groups: Vec::new(),
            fingerprint: fingerprint.map(str::to_owned),
        }
    }
}

/// The AccessRequest an event is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRef {
    /// Name.
    pub name: String,
    /// UID (a re-created request of the same name is another request).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// One audit event. Optional fields are left out of the JSON when empty.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// When (RFC 3339, microseconds).
    pub time: MicroTime,
    /// What happened.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// Who did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The request's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRef>,
    /// Target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Unix login on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The client's address (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// The proxy's session id (also in the recording's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Machine-readable outcome: a rule or reason (`untrusted_ca`, `exit 0`, `Revoked`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AuditEvent {
    /// An event of `type_` at `time`, every other field empty.
    pub fn new(time: MicroTime, type_: EventType) -> Self {
        Self {
            time,
            type_,
            actor: None,
            namespace: None,
            request: None,
            host: None,
            login: None,
            source_address: None,
            session_id: None,
            outcome: None,
            message: None,
        }
    }

    /// The same event with every string bounded ([`MAX_FIELD_BYTES`], [`MAX_MESSAGE_BYTES`],
    /// [`MAX_GROUPS`]); empty strings become absent.
    pub fn bounded(mut self) -> Self {
        let field = |s: &mut Option<String>| {
            *s = s
                .take()
                .filter(|v| !v.is_empty())
                .map(|v| truncate(v, MAX_FIELD_BYTES));
        };
        if let Some(actor) = &mut self.actor {
            field(&mut actor.user);
            field(&mut actor.fingerprint);
            actor.groups.truncate(MAX_GROUPS);
            for group in &mut actor.groups {
                *group = truncate(std::mem::take(group), MAX_FIELD_BYTES);
            }
        }
        field(&mut self.namespace);
        if let Some(request) = &mut self.request {
            request.name = truncate(std::mem::take(&mut request.name), MAX_FIELD_BYTES);
            request.uid = truncate(std::mem::take(&mut request.uid), MAX_FIELD_BYTES);
        }
        field(&mut self.host);
        field(&mut self.login);
        field(&mut self.source_address);
        field(&mut self.session_id);
        field(&mut self.outcome);
        self.message = self
            .message
            .take()
            .filter(|v| !v.is_empty())
            .map(|v| truncate(v, MAX_MESSAGE_BYTES));
        self
    }

    /// The bounded event as one JSON line (no newline).
    pub fn to_line(&self) -> String {
        // Serialising these plain fields cannot fail; an empty object would be the only fallback.
        serde_json::to_string(&self.clone().bounded()).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// `value` cut to at most `max` bytes (on a character boundary), ending in [`TRUNCATED`]
/// when cut.
pub fn truncate(value: String, max: usize) -> String {
    if value.len() <= max {
        return value;
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &value[..end])
}

/// The first line of a batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchHeader {
    /// Who wrote it (a pod name): each writer keeps its own chain.
    pub writer: String,
    /// The writer's batch number, from 0, one more each batch.
    pub sequence: u64,
    /// SHA-256 (hex) of the writer's previous batch; empty for its first.
    pub previous_batch_sha256: String,
    /// How many event lines follow.
    pub count: u64,
}

/// A batch: the header line, then one line per event, each ending in a newline.
pub fn render_batch(header: &BatchHeader, events: &[AuditEvent]) -> String {
    let mut header = header.clone();
    header.count = events.len() as u64;
    let mut out = serde_json::to_string(&header).unwrap_or_default();
    out.push('\n');
    for event in events {
        out.push_str(&event.to_line());
        out.push('\n');
    }
    out
}

/// SHA-256 (lowercase hex) of a batch's bytes: what the next batch's header records.
pub fn batch_sha256(batch: &str) -> String {
    Sha256::digest(batch.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is wrong at a break in the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakKind {
    /// The header line is missing or not a header.
    #[error("the header is not {{writer, sequence, previousBatchSha256, count}}: {0}")]
    Header(String),
    /// An event line is not an audit event.
    #[error("not an audit event: {0}")]
    Event(String),
    /// Lines were added or removed.
    #[error("the header counts {declared} events, the batch holds {found}")]
    Count {
        /// What the header says.
        declared: u64,
        /// Event lines present.
        found: u64,
    },
    /// Another writer's batch in this chain.
    #[error("writer {found}, but the chain is writer {expected}'s")]
    Writer {
        /// The chain's writer.
        expected: String,
        /// This batch's.
        found: String,
    },
    /// A batch is missing before this one.
    #[error("batch sequence {expected} is missing (found {found})")]
    Missing {
        /// The sequence that should come here.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// This batch comes after a later one.
    #[error("batch sequence {found} is out of order (expected {expected})")]
    Reordered {
        /// The sequence that should come here.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// The previous batch's bytes are not what this batch's header recorded: it was edited.
    #[error(
        "the previous batch was changed: its SHA-256 is {actual}, this header records {recorded}"
    )]
    Edited {
        /// SHA-256 of the previous batch as stored.
        actual: String,
        /// What this header says it was.
        recorded: String,
    },
    /// The last batch is not the head the writer reported.
    #[error(
        "the last batch was changed or is missing: its SHA-256 is {actual}, the writer's head is {head}"
    )]
    Head {
        /// SHA-256 of the last batch.
        actual: String,
        /// The head to check against.
        head: String,
    },
}

/// The first break of a chain: batch index (0-based, in the order given) and line (1-based;
/// line 1 is the header).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit batch {batch}, line {line}: {kind}")]
pub struct ChainBreak {
    /// Index of the batch in the order given.
    pub batch: usize,
    /// Line in that batch.
    pub line: usize,
    /// What is wrong.
    pub kind: BreakKind,
}

/// What an intact chain holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Batches verified.
    pub batches: usize,
    /// Events in them.
    pub events: u64,
    /// SHA-256 of the last batch (empty when there is none).
    pub head: String,
}

/// Verify one writer's `batches`, in the order they are stored (by sequence): every header and
/// event parses, counts match, sequences follow one another, and each header records the
/// SHA-256 of the batch before it. With `head` (the writer's own record of its last batch),
/// the last batch is checked too: without it, an edit of the last batch or the deletion of the
/// newest batches cannot be seen. The first batch may start at any sequence (older batches
/// may have expired).
pub fn verify_chain(batches: &[&str], head: Option<&str>) -> Result<Chain, ChainBreak> {
    let at = |batch: usize, line: usize, kind: BreakKind| ChainBreak { batch, line, kind };
    let mut chain = Chain {
        batches: 0,
        events: 0,
        head: String::new(),
    };
    let mut previous: Option<BatchHeader> = None;
    let sequences: Vec<Option<u64>> = batches
        .iter()
        .map(|b| header_of(b).ok().map(|h| h.sequence))
        .collect();
    for (index, text) in batches.iter().enumerate() {
        let header = header_of(text).map_err(|problem| at(index, 1, BreakKind::Header(problem)))?;
        if let Some(before) = &previous {
            if header.writer != before.writer {
                return Err(at(
                    index,
                    1,
                    BreakKind::Writer {
                        expected: before.writer.clone(),
                        found: header.writer,
                    },
                ));
            }
            // A crafted u64::MAX can have no successor: whatever follows breaks the chain.
            let expected = before.sequence.checked_add(1);
            if expected != Some(header.sequence) {
                let expected = expected.unwrap_or(u64::MAX);
                let later = sequences[index + 1..].contains(&Some(expected));
                let (expected, found) = (expected, header.sequence);
                let kind = if later || found < expected {
                    BreakKind::Reordered { expected, found }
                } else {
                    BreakKind::Missing { expected, found }
                };
                return Err(at(index, 1, kind));
            }
            if header.previous_batch_sha256 != chain.head {
                return Err(at(
                    index,
                    1,
                    BreakKind::Edited {
                        actual: chain.head.clone(),
                        recorded: header.previous_batch_sha256,
                    },
                ));
            }
        }
        let mut found = 0u64;
        for (offset, line) in text.lines().skip(1).enumerate() {
            if let Err(error) = serde_json::from_str::<AuditEvent>(line) {
                return Err(at(index, offset + 2, BreakKind::Event(error.to_string())));
            }
            found += 1;
        }
        if found != header.count {
            let line = usize::try_from(header.count.min(found)).unwrap_or(usize::MAX) + 2;
            return Err(at(
                index,
                line,
                BreakKind::Count {
                    declared: header.count,
                    found,
                },
            ));
        }
        chain.batches += 1;
        chain.events += found;
        chain.head = batch_sha256(text);
        previous = Some(header);
    }
    if let Some(head) = head
        && head != chain.head
    {
        let last = batches.len().saturating_sub(1);
        return Err(at(
            last,
            1,
            BreakKind::Head {
                actual: chain.head.clone(),
                head: head.to_owned(),
            },
        ));
    }
    Ok(chain)
}

fn header_of(text: &str) -> Result<BatchHeader, String> {
    let line = text.lines().next().ok_or("the batch is empty")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
