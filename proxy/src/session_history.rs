//! Session records in `AccessRequest.status.sessions`, written with server-side apply under
//! the proxy's own field manager, and the Events that go with them. Data comes from session
//! starts and finished uploads; it goes to the API server.

use gatehouse_crds::{AccessRequest, Recording, SessionRecord, contract::managers};
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
};

/// `status.sessions` keeps at most this many entries (the CRD's bound).
pub const MAX_SESSIONS: usize = 64;

/// Writes session records and Events.
#[derive(Clone)]
pub struct SessionStatus {
    client: Client,
    recorder: Recorder,
}

impl std::fmt::Debug for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStatus").finish_non_exhaustive()
    }
}

/// `entries` with `entry` merged in by id, oldest dropped beyond [`MAX_SESSIONS`].
pub fn merge_session(mut entries: Vec<SessionRecord>, entry: SessionRecord) -> Vec<SessionRecord> {
    match entries.iter_mut().find(|e| e.id == entry.id) {
        Some(existing) => *existing = entry,
        None => entries.push(entry),
    }
    entries.sort_by_key(|e| e.start_time.0);
    let excess = entries.len().saturating_sub(MAX_SESSIONS);
    entries.drain(..excess);
    entries
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

impl SessionStatus {
    /// A writer reporting Events as `instance`.
    pub fn new(client: Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: managers::PROXY.into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
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
        // Optimistic concurrency: other proxy replicas apply the same list under the same
        // manager, so a stale read must not drop their entries (409 → read again).
        for _ in 0..5 {
            let Some(current) = api.get_opt(&request.name).await.map_err(failed)? else {
                return Ok(None);
            };
            if current.uid().as_deref() != Some(request.uid.as_str()) {
                return Ok(None);
            }
            let sessions = merge_session(
                current
                    .status
                    .as_ref()
                    .map(|s| s.sessions.clone())
                    .unwrap_or_default(),
                entry.clone(),
            );
            let patch = json!({
                "apiVersion": AccessRequest::api_version(&()),
                "kind": AccessRequest::kind(&()),
                "metadata": {"resourceVersion": current.resource_version()},
                "status": {"sessions": sessions},
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
            end_time: None,
            recording: None,
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
    async fn uploaded(&self, spooled: &SpooledRecording, stored: &StoredRecording) -> Result<()> {
        let meta = &spooled.meta;
        let entry = SessionRecord {
            id: meta.session_id.clone(),
            host: meta.host.clone(),
            login: meta.login.clone(),
            start_time: time(meta.start),
            end_time: Some(time(spooled.end.unwrap_or_else(jiff::Timestamp::now))),
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

    fn entry(id: &str, second: i64) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            host: "db-1".into(),
            login: "ubuntu".into(),
            start_time: Time(jiff::Timestamp::from_second(second).unwrap_or_default()),
            end_time: None,
            recording: None,
        }
    }

    #[test]
    fn merge_replaces_by_id_and_keeps_the_newest_sixty_four() {
        let mut list = Vec::new();
        for i in 0..70 {
            list = merge_session(list, entry(&format!("s{i}"), 1_000 + i));
        }
        assert_eq!(list.len(), MAX_SESSIONS);
        assert_eq!(list[0].id, "s6");
        let mut ended = entry("s69", 1_069);
        ended.end_time = Some(Time(
            jiff::Timestamp::from_second(2_000).unwrap_or_default(),
        ));
        let list = merge_session(list, ended.clone());
        assert_eq!(list.len(), MAX_SESSIONS);
        assert_eq!(list.last(), Some(&ended));
    }
}
