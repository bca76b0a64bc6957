//! Session records in `AccessRequest.status.sessions` (and `sessionsTotal`), written with
//! server-side apply under the proxy's own field manager, and the Events that go with them.
//! Data comes from session starts and finished uploads; it goes to the API server. Which
//! entries the bounded list keeps is [`gatehouse_crds::session_history`]'s decision; writers
//! of one request take [`Turns`] on this replica and retry conflicts with other replicas.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gatehouse_crds::{
    AccessRequest, Recording, SessionRecord, contract::managers, session_history,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;

use crate::{
    access::RequestRef,
    error::{Error, Result},
    recording::{SessionMeta, SpooledRecording, StoredRecording, UploadSink},
    turns::Turns,
};

/// Attempts at one write before giving up (the uploader retries its own later).
const ATTEMPTS: u32 = 10;

/// Writes session records and Events.
#[derive(Clone)]
pub struct SessionStatus {
    client: Client,
    audit: crate::audit_log::AuditLog,
    recorder: Recorder,
    turns: Arc<Turns>,
}

impl std::fmt::Debug for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStatus").finish_non_exhaustive()
    }
}

/// How long to wait before attempt `attempt` (from 1) after a conflict with another replica:
/// 25 ms doubling up to 800 ms, plus up to 25 ms of jitter so replicas fall out of step.
fn conflict_backoff(attempt: u32) -> Duration {
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 25_000_000)
        .unwrap_or(0);
    Duration::from_millis(25 << attempt.min(5)) + Duration::from_nanos(u64::from(jitter))
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

impl SessionStatus {
    /// A writer reporting Events as `instance`, audit events (`recordingStored`) to `audit`.
    pub fn new(client: Client, instance: String, audit: crate::audit_log::AuditLog) -> Self {
        let reporter = Reporter {
            controller: managers::PROXY.into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            audit,
            turns: Arc::new(Turns::new()),
        }
    }

    /// Merge `entry` into the request's `status.sessions`. Returns the request as read, or
    /// `None` when it no longer exists (or was re-created): there is nothing to record on.
    pub async fn record(
        &self,
        request: &RequestRef,
        entry: SessionRecord,
    ) -> Result<Option<AccessRequest>> {
        let api: Api<AccessRequest> = Api::namespaced(self.client.clone(), &request.namespace);
        let failed = |source| Error::WriteSessionStatus {
            request: request.to_string(),
            source,
        };
        // One writer per request on this replica: parallel sessions queue here instead of
        // conflicting. Optimistic concurrency against other replicas (they apply the same
        // list under the same manager, so a stale read must not drop their entries): 409 →
        // wait a little, read again.
        let _turn = self.turns.take(&request.to_string()).await;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(conflict_backoff(attempt - 1)).await;
            }
            let Some(current) = api.get_opt(&request.name).await.map_err(failed)? else {
                return Ok(None);
            };
            if current.uid().as_deref() != Some(request.uid.as_str()) {
                return Ok(None);
            }
            let status = current.status.clone().unwrap_or_default();
            let (sessions, total) =
                session_history::merge(status.sessions, status.sessions_total, entry.clone());
            let patch = json!({
                "apiVersion": AccessRequest::api_version(&()),
                "kind": AccessRequest::kind(&()),
                "metadata": {"resourceVersion": current.resource_version()},
                "status": {"sessions": sessions, "sessionsTotal": total},
            });
            match api
                .patch_status(
                    &request.name,
                    &PatchParams::apply(managers::PROXY),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => return Ok(Some(current)),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
                Err(source) => return Err(failed(source)),
            }
        }
        Err(failed(kube::Error::Api(
            kube::core::Status::failure("conflicting writers of status.sessions", "Conflict")
                .with_code(409)
                .boxed(),
        )))
    }

    /// Record a session that just started.
    pub async fn started(&self, meta: &SessionMeta) -> Result<()> {
        let entry = SessionRecord {
            id: meta.session_id.clone(),
            host: meta.host.clone(),
            login: meta.login.clone(),
            start_time: time(meta.start),
            number: None,
            end_time: None,
            exit_status: None,
            recording: None,
            forward: None,
        };
        self.record(&request_ref(meta), entry).await.map(|_| ())
    }

    async fn publish(&self, request: &AccessRequest, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Record".into(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &request.object_ref(&()))
            .await
        {
            // The session record in status is the durable fact; the Event is a courtesy.
            tracing::warn!(%error, request = %request.name_any(), "publishing Event failed");
        }
    }
}

fn request_ref(meta: &SessionMeta) -> RequestRef {
    RequestRef {
        namespace: meta.request_namespace.clone(),
        name: meta.request_name.clone(),
        uid: meta.request_uid.clone(),
    }
}

impl UploadSink for SessionStatus {
    fn stored(&self, spooled: &SpooledRecording, stored: &StoredRecording) {
        // Once per upload, under exactly the key the request's status names: the audit API
        // serves recordings by this event's key only.
        crate::audit_log::emit_recording_stored(&self.audit, &spooled.meta, stored);
    }

    async fn uploaded(&self, spooled: &SpooledRecording, stored: &StoredRecording) -> Result<()> {
        let meta = &spooled.meta;
        let entry = SessionRecord {
            id: meta.session_id.clone(),
            host: meta.host.clone(),
            login: meta.login.clone(),
            start_time: time(meta.start),
            number: None,
            end_time: Some(time(spooled.end.unwrap_or_else(jiff::Timestamp::now))),
            exit_status: spooled.exit_status.map(i64::from),
            forward: None,
            recording: Some(Recording {
                key: stored.key.clone(),
                sha256: stored.sha256.clone(),
                bytes: i64::try_from(stored.bytes).unwrap_or(i64::MAX),
            }),
        };
        let request = request_ref(meta);
        match self.record(&request, entry).await? {
            Some(current) => {
                tracing::info!(
                    request = %request, session = %meta.session_id, key = %stored.key,
                    sha256 = %stored.sha256, bytes = stored.bytes, "recording stored"
                );
                self.publish(
                    &current,
                    "SessionRecorded",
                    format!(
                        "session {} of {} on {} as {}: recording {} ({} bytes, sha256 {})",
                        meta.session_id,
                        meta.requester,
                        meta.host,
                        meta.login,
                        stored.location,
                        stored.bytes,
                        stored.sha256
                    ),
                )
                .await;
            }
            None => tracing::info!(
                request = %request, session = %meta.session_id, key = %stored.key,
                "recording stored; its AccessRequest is gone, so no status to record it in"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_backoff_grows_and_stays_bounded() {
        assert!(conflict_backoff(1) >= Duration::from_millis(50));
        assert!(conflict_backoff(1) < Duration::from_millis(75));
        assert!(conflict_backoff(9) >= Duration::from_millis(800));
        assert!(conflict_backoff(9) < Duration::from_millis(825));
    }
}
