//! The proxy's audit events (issue 15): login accepted or refused (with the rule), session
//! started and ended (bytes each way, exit status), written as one log line each under the
//! `tracing` target [`gatehouse_crds::audit::LOG_TARGET`] with the event's JSON in the field
//! `event`, and durably to the store through the [`AuditWriter`] (spooled, batched, chained;
//! see [`gatehouse_store::audit`]). Commands, file operations, forwards and stored recordings
//! are built in [`events`] (typed command lines rebuilt by [`commands`]). Data comes from the
//! SSH handler ([`crate::server`]), the session tasks ([`crate::session`]), the recorder's
//! SFTP audit and the uploader ([`crate::recording`]); the events are built by pure functions.
//! A login and a session start fail closed: when their event cannot be made durable they are
//! refused.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use gatehouse_crds::audit::{Actor, AuditEvent, EventType, LOG_TARGET, RequestRef, SessionDetail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use gatehouse_store::audit::AuditWriter;

use crate::{access::Grant, error::Error};

mod commands;
mod events;

pub use commands::{LineRebuilder, MAX_LINES_PER_SESSION, rebuilds_commands};
pub use events::{
    Origin, Scope, TypedCommands, command_event, emit_command, emit_file_operation,
    emit_forward_closed, emit_forward_opened, emit_recording_stored, file_operation_event,
    forward_closed_event, forward_opened_event, recording_stored_event,
};

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// Where the proxy's audit events go: the log always, and the durable writer when there is
/// one (none only in tests and tools that build a proxy without a spool).
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    writer: Option<AuditWriter>,
}

impl AuditLog {
    /// Events go to the log and to `writer`.
    pub fn new(writer: Option<AuditWriter>) -> Self {
        Self { writer }
    }

    /// Log `event` and append it durably. Err: it is not durable (the caller fails closed
    /// where the event is about an access).
    pub async fn emit(&self, event: &AuditEvent) -> crate::Result<()> {
        tracing::info!(target: LOG_TARGET, event = %event.to_line(), "audit");
        if let Some(writer) = &self.writer {
            writer.record(event).await.map_err(Error::RecordAudit)?;
        }
        Ok(())
    }

    /// [`emit`](Self::emit) without waiting: for events the proxy does not refuse anything
    /// on (refused logins, ended sessions); a failure is logged.
    pub fn emit_detached(&self, event: AuditEvent) {
        let log = self.clone();
        tokio::spawn(async move {
            if let Err(error) = log.emit(&event).await {
                tracing::error!(%error, "an audit event was not made durable (logged only)");
            }
        });
    }

    /// [`login_accepted_event`]; Err: refuse the login.
    pub async fn login_accepted(
        &self,
        peer: SocketAddr,
        connection: &str,
        fingerprint: &str,
        grant: &Grant,
    ) -> crate::Result<()> {
        self.emit(&login_accepted_event(peer, connection, fingerprint, grant))
            .await
    }

    /// [`login_refused_event`], not waited for.
    pub fn login_refused(
        &self,
        peer: SocketAddr,
        connection: &str,
        user: &str,
        fingerprint: Option<&str>,
        reason: &str,
        message: &str,
    ) {
        self.emit_detached(login_refused_event(
            peer,
            connection,
            user,
            fingerprint,
            reason,
            message,
        ));
    }

    /// [`session_started_event`]; Err: refuse the session.
    pub async fn session_started(
        &self,
        grant: &Grant,
        connection: &str,
        session_id: &str,
        kind: &str,
    ) -> crate::Result<()> {
        self.emit(&session_started_event(grant, connection, session_id, kind))
            .await
    }

    /// [`session_ended_event`]; a failure is logged (the session is over either way).
    pub async fn session_ended(
        &self,
        grant: &Grant,
        session_id: &str,
        exit_status: Option<u32>,
        ended_by: &str,
        bytes: &SessionBytes,
        seconds: f64,
    ) {
        let event = session_ended_event(grant, session_id, exit_status, ended_by, bytes, seconds);
        if let Err(error) = self.emit(&event).await {
            tracing::error!(%error, session = session_id, "the sessionEnded audit event was not made durable (logged only)");
        }
    }
}

/// The bytes one session carried each way, counted by its pumps.
#[derive(Debug, Clone, Default)]
pub struct SessionBytes(Arc<[AtomicU64; 2]>);

impl SessionBytes {
    /// `n` bytes went from the engineer to the target.
    pub fn to_target(&self, n: usize) {
        self.0[0].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes went from the target to the engineer.
    pub fn to_client(&self, n: usize) {
        self.0[1].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// (to target, to client).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.0[0].load(Ordering::Relaxed),
            self.0[1].load(Ordering::Relaxed),
        )
    }
}

fn for_grant(type_: EventType, grant: &Grant, fingerprint: Option<&str>) -> AuditEvent {
    let mut event = AuditEvent::new(now(), type_);
    event.actor = Some(Actor::ssh(fingerprint, Some(&grant.requester)));
    event.namespace = Some(grant.request.namespace.clone());
    event.request = Some(RequestRef {
        name: grant.request.name.clone(),
        uid: grant.request.uid.clone(),
    });
    event.host = Some(grant.host.name.clone());
    event.login = Some(grant.login.clone());
    event
}

/// `loginAccepted` for `grant`, from `peer` with the key `fingerprint`.
pub fn login_accepted_event(
    peer: SocketAddr,
    connection: &str,
    fingerprint: &str,
    grant: &Grant,
) -> AuditEvent {
    let mut event = for_grant(EventType::LoginAccepted, grant, Some(fingerprint));
    event.source_address = Some(peer.to_string());
    event.outcome = Some("accepted".to_owned());
    event.message = Some(format!(
        "connection {connection}, certificate serial {}",
        grant.serial
    ));
    event
}

/// `loginRefused`: SSH user `user` (what the client sent, `LOGIN@HOST`), the key
/// `fingerprint` if one was presented, the rule `reason` and its `message`.
pub fn login_refused_event(
    peer: SocketAddr,
    connection: &str,
    user: &str,
    fingerprint: Option<&str>,
    reason: &str,
    message: &str,
) -> AuditEvent {
    let mut event = AuditEvent::new(now(), EventType::LoginRefused);
    event.actor = Some(Actor::ssh(fingerprint, Some(user)));
    event.source_address = Some(peer.to_string());
    event.outcome = Some(reason.to_owned());
    event.message = Some(format!("connection {connection}: {message}"));
    event
}

/// `sessionStarted`: session `session_id` (`kind`: shell, exec or subsystem) of `grant`.
pub fn session_started_event(
    grant: &Grant,
    connection: &str,
    session_id: &str,
    kind: &str,
) -> AuditEvent {
    let mut event = for_grant(EventType::SessionStarted, grant, None);
    event.session_id = Some(session_id.to_owned());
    event.outcome = Some(kind.to_owned());
    event.message = Some(format!("{kind} session on connection {connection}"));
    event.session = Some(SessionDetail {
        kind: kind.to_owned(),
        ..SessionDetail::default()
    });
    event
}

/// `sessionEnded`: with its exit status (none: a signal or a cut connection), who ended it,
/// the bytes each way and how long it ran.
pub fn session_ended_event(
    grant: &Grant,
    session_id: &str,
    exit_status: Option<u32>,
    ended_by: &str,
    bytes: &SessionBytes,
    seconds: f64,
) -> AuditEvent {
    let mut event = for_grant(EventType::SessionEnded, grant, None);
    let (to_target, to_client) = bytes.totals();
    event.session_id = Some(session_id.to_owned());
    event.outcome = Some(match exit_status {
        Some(status) => format!("exit {status}"),
        None => "no exit status".to_owned(),
    });
    event.message = Some(format!(
        "ended by {ended_by} after {seconds:.1}s; {to_target} bytes to the target, {to_client} bytes to the client"
    ));
    // The same facts, structured, for the audit API's Session (bytes, exit status).
    event.session = Some(SessionDetail {
        kind: String::new(),
        bytes_to_target: Some(to_target),
        bytes_to_client: Some(to_client),
        exit_status,
        ended_by: ended_by.to_owned(),
        duration_millis: Some((seconds.max(0.0) * 1000.0) as u64),
    });
    event
}

#[cfg(test)]
mod tests {
    use gatehouse_crds::Host;
    use serde_json::{Value, json};

    use super::*;
    use crate::access::RequestRef as Request;

    /// The grant every audit event test builds on (also `events`' tests).
    pub(crate) fn grant() -> Grant {
        Grant {
            request: Request {
                namespace: "team".into(),
                name: "r1".into(),
                uid: "u-1".into(),
            },
            serial: 7,
            requester: "alice".into(),
            approvers: vec!["bob".into()],
            reason: None,
            login: "ubuntu".into(),
            host_group: "db".into(),
            host: Host {
                name: "db1".into(),
                address: "10.0.0.5".into(),
                port: 22,
                host_keys: Vec::new(),
            },
            host_ca_keys: Vec::new(),
            valid_before: 0,
            extensions: Vec::new(),
            force_command: None,
            record_input: false,
            recording_required: false,
            allow_forwards: false,
            idle_timeout: None,
            max_sessions: None,
            sftp_content_bytes: None,
        }
    }

    fn json_of(event: &AuditEvent) -> Value {
        let mut v: Value = serde_json::from_str(&event.to_line()).unwrap();
        v.as_object_mut().unwrap().remove("time");
        v
    }

    #[test]
    fn each_proxy_fact_is_one_event_with_its_fields() {
        let peer: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let bytes = SessionBytes::default();
        bytes.to_target(3);
        bytes.to_client(10);
        bytes.to_client(5);
        let request = json!({"name": "r1", "uid": "u-1"});
        let cases: Vec<(AuditEvent, Value)> = vec![
            (
                login_accepted_event(peer, "c1", "SHA256:k", &grant()),
                json!({"type": "loginAccepted",
                    "actor": {"kind": "ssh", "user": "alice", "fingerprint": "SHA256:k"},
                    "namespace": "team", "request": request, "host": "db1", "login": "ubuntu",
                    "sourceAddress": "192.0.2.1:50000", "outcome": "accepted",
                    "message": "connection c1, certificate serial 7"}),
            ),
            (
                login_refused_event(
                    peer,
                    "c2",
                    "ubuntu@db1",
                    Some("SHA256:x"),
                    "untrusted_ca",
                    "not signed by the user CA",
                ),
                json!({"type": "loginRefused",
                    "actor": {"kind": "ssh", "user": "ubuntu@db1", "fingerprint": "SHA256:x"},
                    "sourceAddress": "192.0.2.1:50000", "outcome": "untrusted_ca",
                    "message": "connection c2: not signed by the user CA"}),
            ),
            (
                session_started_event(&grant(), "c1", "s1", "exec"),
                json!({"type": "sessionStarted", "actor": {"kind": "ssh", "user": "alice"},
                    "namespace": "team", "request": request, "host": "db1", "login": "ubuntu",
                    "sessionId": "s1", "outcome": "exec", "message": "exec session on connection c1",
                    "session": {"kind": "exec"}}),
            ),
            (
                session_ended_event(&grant(), "s1", Some(0), "peer", &bytes, 1.25),
                json!({"type": "sessionEnded", "actor": {"kind": "ssh", "user": "alice"},
                    "namespace": "team", "request": request, "host": "db1", "login": "ubuntu",
                    "sessionId": "s1", "outcome": "exit 0",
                    "message": "ended by peer after 1.2s; 3 bytes to the target, 15 bytes to the client",
                    "session": {"bytesToTarget": 3, "bytesToClient": 15, "exitStatus": 0,
                        "endedBy": "peer", "durationMillis": 1250}}),
            ),
            (
                session_ended_event(&grant(), "s2", None, "idle", &SessionBytes::default(), 0.0),
                json!({"type": "sessionEnded", "actor": {"kind": "ssh", "user": "alice"},
                    "namespace": "team", "request": request, "host": "db1", "login": "ubuntu",
                    "sessionId": "s2", "outcome": "no exit status",
                    "message": "ended by idle after 0.0s; 0 bytes to the target, 0 bytes to the client",
                    "session": {"bytesToTarget": 0, "bytesToClient": 0, "endedBy": "idle",
                        "durationMillis": 0}}),
            ),
        ];
        for (event, want) in cases {
            assert_eq!(json_of(&event), want);
        }
    }
}
