//! Builders of the proxy's per-session audit events beyond start and end: `command`,
//! `fileOperation`, `forwardOpened`/`forwardClosed` and `recordingStored`. Pure: a [`Scope`]
//! (from the grant and the connection's origin, or from a spooled recording's metadata) gives
//! the fields every event of one session carries; the session tasks ([`crate::session`]), the
//! recorder's SFTP audit ([`crate::recording::sftp`]) and the uploader
//! ([`crate::recording::uploader`]) call the `emit_*` functions, which hand the event to the
//! one sink, [`AuditLog::emit_detached`] (the log, and the durable writer).

use std::net::SocketAddr;

use gatehouse_crds::audit::{
    Actor, AuditEvent, CommandDetail, EventType, FileDetail, ForwardDetail, RecordingDetail,
    RequestRef,
};

use super::{
    AuditLog,
    commands::{LineRebuilder, MAX_LINES_PER_SESSION},
    now,
};
use crate::{
    access::Grant,
    recording::{SessionMeta, StoredRecording, sftp},
};

/// Where a connection comes from, as the SSH handler saw it at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address.
    pub peer: SocketAddr,
    /// SHA-256 fingerprint of the key the client logged in with.
    pub fingerprint: String,
}

/// The fields every event of one session (or forward) carries: the request, host and login,
/// the actor, the client's address and the session id, as far as they are known.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Where this scope's events go (the log only when left default, as in tests).
    log: AuditLog,
    namespace: String,
    request: String,
    uid: String,
    host: String,
    login: String,
    requester: String,
    fingerprint: Option<String>,
    source_address: Option<String>,
    session_id: Option<String>,
}

impl Scope {
    /// A connection's scope: its grant, and where it came from when known.
    pub fn of_grant(grant: &Grant, origin: Option<&Origin>) -> Self {
        Self {
            namespace: grant.request.namespace.clone(),
            request: grant.request.name.clone(),
            uid: grant.request.uid.clone(),
            host: grant.host.name.clone(),
            login: grant.login.clone(),
            requester: grant.requester.clone(),
            fingerprint: origin.map(|o| o.fingerprint.clone()),
            source_address: origin.map(|o| o.peer.to_string()),
            session_id: None,
            log: AuditLog::default(),
        }
    }

    /// A recorded session's scope, from its metadata (what a spool left by an earlier run
    /// still knows: no client address or key).
    pub fn of_meta(meta: &SessionMeta) -> Self {
        Self {
            namespace: meta.request_namespace.clone(),
            request: meta.request_name.clone(),
            uid: meta.request_uid.clone(),
            host: meta.host.clone(),
            login: meta.login.clone(),
            requester: meta.requester.clone(),
            fingerprint: None,
            source_address: None,
            session_id: Some(meta.session_id.clone()),
            log: AuditLog::default(),
        }
    }

    /// The same scope, its events going to `log` (the proxy's durable audit log).
    pub fn with_log(self, log: AuditLog) -> Self {
        Self { log, ..self }
    }

    /// The same scope for session (or forward) `id`.
    pub fn in_session(&self, id: &str) -> Self {
        Self {
            session_id: Some(id.to_owned()),
            ..self.clone()
        }
    }

    fn event(&self, type_: EventType) -> AuditEvent {
        let mut event = AuditEvent::new(now(), type_);
        event.actor = Some(Actor::ssh(
            self.fingerprint.as_deref(),
            Some(&self.requester),
        ));
        event.namespace = Some(self.namespace.clone());
        event.request = Some(RequestRef {
            name: self.request.clone(),
            uid: self.uid.clone(),
        });
        event.host = Some(self.host.clone());
        event.login = Some(self.login.clone());
        event.source_address = self.source_address.clone();
        event.session_id = self.session_id.clone();
        event
    }
}

/// `command`: `line` as the target received it (`exact`: an exec request's command) or as
/// rebuilt from recorded keystrokes (best effort).
pub fn command_event(scope: &Scope, line: &str, exact: bool) -> AuditEvent {
    let mut event = scope.event(EventType::Command);
    event.outcome = Some(if exact { "exec" } else { "typed" }.to_owned());
    event.message = Some(if exact {
        format!("exec {line}")
    } else {
        format!("typed (rebuilt from the recorded input, best effort): {line}")
    });
    event.command = Some(CommandDetail {
        line: line.to_owned(),
        exact,
    });
    event
}

/// `fileOperation` for one SFTP audit event; None for what is not an operation (file content
/// and its cut, which stay in the recording).
pub fn file_operation_event(scope: &Scope, op: &sftp::AuditEvent) -> Option<AuditEvent> {
    use sftp::AuditEvent as Op;
    let (operation, path, target, bytes) = match op {
        Op::Open { path, .. } => ("open", path, None, None),
        Op::Close {
            path,
            read,
            written,
        } => ("close", path, None, Some(read.saturating_add(*written))),
        Op::Remove { path } => ("remove", path, None, None),
        Op::Rename { from, to } => ("rename", from, Some(to), None),
        Op::Mkdir { path } => ("mkdir", path, None, None),
        Op::Rmdir { path } => ("rmdir", path, None, None),
        Op::Setstat { path } => ("setstat", path, None, None),
        Op::Hardlink { from, to } => ("hardlink", from, Some(to), None),
        Op::Symlink { first, second } => ("symlink", first, Some(second), None),
        Op::Content { .. } | Op::ContentCut { .. } => return None,
    };
    let mut event = scope.event(EventType::FileOperation);
    event.outcome = Some(operation.to_owned());
    event.message = Some(op.describe());
    event.file = Some(FileDetail {
        operation: operation.to_owned(),
        path: path.clone(),
        target_path: target.cloned(),
        bytes,
    });
    Some(event)
}

/// `forwardOpened`: a local forward (`ssh -L`, direct-tcpip) to `host:port`.
pub fn forward_opened_event(scope: &Scope, host: &str, port: u32) -> AuditEvent {
    let mut event = scope.event(EventType::ForwardOpened);
    event.outcome = Some("opened".to_owned());
    event.message = Some(format!("local port forward to {host}:{port} opened"));
    event.forward = Some(ForwardDetail {
        direction: "local".to_owned(),
        host: host.to_owned(),
        port,
        bytes_to_target: None,
        bytes_to_client: None,
    });
    event
}

/// `forwardClosed`: with the bytes carried each way (to target, to client) and who ended it.
pub fn forward_closed_event(
    scope: &Scope,
    host: &str,
    port: u32,
    bytes: (u64, u64),
    ended_by: &str,
) -> AuditEvent {
    let mut event = scope.event(EventType::ForwardClosed);
    event.outcome = Some(format!("ended by {ended_by}"));
    event.message = Some(format!(
        "local port forward to {host}:{port} closed by {ended_by}; {} bytes to the target, {} bytes to the client",
        bytes.0, bytes.1
    ));
    event.forward = Some(ForwardDetail {
        direction: "local".to_owned(),
        host: host.to_owned(),
        port,
        bytes_to_target: Some(bytes.0),
        bytes_to_client: Some(bytes.1),
    });
    event
}

/// `recordingStored`: the session of `meta` has its whole recording in the store under
/// `stored.key` (the key the request's status names, and the only one the audit API serves).
pub fn recording_stored_event(meta: &SessionMeta, stored: &StoredRecording) -> AuditEvent {
    let mut event = Scope::of_meta(meta).event(EventType::RecordingStored);
    event.outcome = Some("stored".to_owned());
    event.message = Some(format!(
        "recording {} ({} bytes, sha256 {})",
        stored.key, stored.bytes, stored.sha256
    ));
    event.recording = Some(RecordingDetail {
        key: stored.key.clone(),
        sha256: stored.sha256.clone(),
        bytes: stored.bytes,
    });
    event
}

/// Emit [`command_event`].
pub fn emit_command(scope: &Scope, line: &str, exact: bool) {
    scope.log.emit_detached(command_event(scope, line, exact));
}

/// Emit [`file_operation_event`] (when `op` is an operation).
pub fn emit_file_operation(scope: &Scope, op: &sftp::AuditEvent) {
    if let Some(event) = file_operation_event(scope, op) {
        scope.log.emit_detached(event);
    }
}

/// Emit [`forward_opened_event`].
pub fn emit_forward_opened(scope: &Scope, host: &str, port: u32) {
    scope
        .log
        .emit_detached(forward_opened_event(scope, host, port));
}

/// Emit [`forward_closed_event`].
pub fn emit_forward_closed(
    scope: &Scope,
    host: &str,
    port: u32,
    bytes: (u64, u64),
    ended_by: &str,
) {
    scope
        .log
        .emit_detached(forward_closed_event(scope, host, port, bytes, ended_by));
}

/// The `command` events of one session's typed input: lines rebuilt by a [`LineRebuilder`],
/// each logged as [`command_event`] with `exact: false`.
#[derive(Debug)]
pub struct TypedCommands {
    lines: LineRebuilder,
    scope: Scope,
}

impl TypedCommands {
    /// For the session of `scope`, at most [`MAX_LINES_PER_SESSION`] lines.
    pub fn new(scope: Scope) -> Self {
        Self {
            lines: LineRebuilder::new(MAX_LINES_PER_SESSION),
            scope,
        }
    }

    /// The engineer typed `bytes`: log the lines they finish.
    pub fn input(&mut self, bytes: &[u8]) {
        if self.lines.exhausted() {
            return;
        }
        for line in self.lines.push(bytes) {
            emit_command(&self.scope, &line, false);
        }
        if self.lines.exhausted() {
            tracing::warn!(session = ?self.scope.session_id,
                "{MAX_LINES_PER_SESSION} typed lines audited as commands; later lines are only in the recording");
        }
    }
}

/// Emit [`recording_stored_event`].
pub fn emit_recording_stored(log: &AuditLog, meta: &SessionMeta, stored: &StoredRecording) {
    log.emit_detached(recording_stored_event(meta, stored));
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
