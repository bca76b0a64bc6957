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
        let mut list = self.current(request);
        list.retain(|r| r.target != record.target);
        list.push(record);
        list.truncate(MAX_RECORDS);
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
