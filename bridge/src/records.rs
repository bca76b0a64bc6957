//! What was delivered per request: in memory (newest) and in `status.notifications` (what a
//! restarted bridge starts from), written with server-side apply as field manager
//! `gatehouse-bridge`, which owns exactly that list.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use gatehouse_crds::{
    AccessRequest,
    contract::managers,
    notify::{MAX_RECORDS, NotificationRecord},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::error::{Error, Result};

/// Records per request uid. Entries exist only for requests the watch still holds.
#[derive(Debug, Default)]
pub struct Records {
    memory: Mutex<HashMap<String, Vec<NotificationRecord>>>,
    write: tokio::sync::Mutex<()>,
}

impl Records {
    /// What was delivered for `request`: memory if it knows, else the request's status.
    pub fn current(&self, request: &AccessRequest) -> Vec<NotificationRecord> {
        let uid = request.metadata.uid.clone().unwrap_or_default();
        let memory = self.memory.lock().ok().and_then(|m| m.get(&uid).cloned());
        memory.unwrap_or_else(|| {
            request
                .status
                .as_ref()
                .map(|s| s.notifications.clone())
                .unwrap_or_default()
        })
    }

    /// Forget requests no longer watched (deleted), so memory is bounded by live requests.
    pub fn retain(&self, live: &HashSet<String>) {
        if let Ok(mut memory) = self.memory.lock() {
            memory.retain(|uid, _| live.contains(uid));
        }
    }

    /// Record `record` for `request` (replacing the one with its target) and write the whole
    /// list into its status.
    pub async fn set(
        &self,
        client: &Client,
        request: &AccessRequest,
        record: NotificationRecord,
    ) -> Result<()> {
        let _serial = self.write.lock().await;
        let uid = request.metadata.uid.clone().unwrap_or_default();
        let list = with_record(self.current(request), record);
        if let Ok(mut memory) = self.memory.lock() {
            memory.insert(uid, list.clone());
        }
        let namespace = request.namespace().unwrap_or_default();
        let name = request.name_any();
        let api: Api<AccessRequest> = Api::namespaced(client.clone(), &namespace);
        let patch = json!({
            "apiVersion": AccessRequest::api_version(&()),
            "kind": AccessRequest::kind(&()),
            "status": {"notifications": list},
        });
        api.patch_status(
            &name,
            &PatchParams::apply(managers::BRIDGE).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(drop)
        .map_err(|source| Error::WriteRecords {
            what: format!("AccessRequest {namespace}/{name}"),
            source,
        })
    }
}

/// `list` with `record` replacing the one for its target, most recently written last, bounded
/// by [`MAX_RECORDS`]. When full, the least recently written record goes, never the new one:
/// dropping the new one would make the bridge deliver it again on every pass (a policy whose
/// targets changed leaves records for targets it no longer has; those are the stale ones). Pure.
pub fn with_record(
    mut list: Vec<NotificationRecord>,
    record: NotificationRecord,
) -> Vec<NotificationRecord> {
    list.retain(|r| r.target != record.target);
    let excess = (list.len() + 1).saturating_sub(MAX_RECORDS);
    list.drain(..excess.min(list.len()));
    list.push(record);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str, stage: &str) -> NotificationRecord {
        NotificationRecord {
            target: target.to_owned(),
            stage: stage.to_owned(),
            channel: None,
            ts: None,
        }
    }

    #[test]
    fn a_new_target_is_kept_even_when_the_list_is_full() {
        let full: Vec<_> = (0..MAX_RECORDS)
            .map(|i| record(&format!("slack:C{i}"), "issued"))
            .collect();
        let list = with_record(full, record("webhook:pager", "pending/0"));
        assert_eq!(list.len(), MAX_RECORDS);
        assert_eq!(
            list.last().map(|r| r.target.as_str()),
            Some("webhook:pager")
        );
        assert!(
            !list.iter().any(|r| r.target == "slack:C0"),
            "the oldest goes"
        );
    }

    #[test]
    fn an_update_replaces_its_target_and_moves_it_last() {
        let list = vec![record("slack:A", "new"), record("dm:U1", "new")];
        let list = with_record(list, record("slack:A", "issued"));
        let targets: Vec<_> = list
            .iter()
            .map(|r| (r.target.as_str(), r.stage.as_str()))
            .collect();
        assert_eq!(targets, [("dm:U1", "new"), ("slack:A", "issued")]);
    }
}
