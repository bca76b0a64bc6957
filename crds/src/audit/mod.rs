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

mod chain;
mod detail;

pub use chain::{
    BatchHeader, BreakKind, Chain, ChainBreak, batch_sha256, render_batch, verify_chain,
};
pub use detail::{CommandDetail, FileDetail, ForwardDetail, RecordingDetail, SessionDetail};

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
    /// A command: an exec request's, or a line rebuilt from recorded input (see
    /// [`CommandDetail::exact`]).
    Command,
    /// A session's recording is safely in the store (key and SHA-256 in [`RecordingDetail`]).
    RecordingStored,
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
    /// A session's kind, bytes, exit status (session events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionDetail>,
    /// The file (`fileOperation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileDetail>,
    /// The forward (`forwardOpened`, `forwardClosed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardDetail>,
    /// The stored recording (`recordingStored`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingDetail>,
    /// The command (`command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandDetail>,
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
            session: None,
            file: None,
            forward: None,
            recording: None,
            command: None,
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
        self.session.iter_mut().for_each(SessionDetail::bound);
        self.file.iter_mut().for_each(FileDetail::bound);
        self.forward.iter_mut().for_each(ForwardDetail::bound);
        self.recording.iter_mut().for_each(RecordingDetail::bound);
        self.command.iter_mut().for_each(CommandDetail::bound);
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

#[cfg(test)]
mod tests;
