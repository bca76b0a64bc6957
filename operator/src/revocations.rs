//! The revocation list: certificates revoked while still inside their validity.
//!
//! Data comes from the reconciler (each revocation, recorded before the request's status says
//! Revoked) and from the AccessRequest store (what it shows as Revoked); it goes out as ConfigMap
//! `gatehouse-revocations` with the list as JSON (for the proxy and people) and as an OpenSSH KRL
//! (for Direct hosts' `RevokedKeys`). The ConfigMap is the list's durable home: entries stay until
//! their certificate's validBefore even after the AccessRequest is deleted, and survive restarts.

use std::sync::Arc;

use gatehouse_crds::{
    AccessRequest, Phase,
    contract::published::{REVOCATIONS_CONFIGMAP, REVOKED_JSON, REVOKED_KRL},
};
use gatehouse_ssh_ca::CaKey;
use k8s_openapi::{ByteString, api::core::v1::ConfigMap};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::{
    config_map,
    error::{Error, Result},
};

/// One revoked certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    /// Request namespace.
    pub namespace: String,
    /// Request name.
    pub name: String,
    /// Certificate serial.
    pub serial: u64,
    /// Certificate key id.
    pub key_id: String,
    /// End of the certificate's validity (after which the entry is dropped).
    pub valid_before: String,
}

/// Revoked certificates that would otherwise still be valid at `now`, sorted.
pub fn revoked(requests: &[Arc<AccessRequest>], now: jiff::Timestamp) -> Vec<Revoked> {
    let mut out: Vec<Revoked> = requests
        .iter()
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            let valid_before = status.valid_before.as_ref()?.0;
            if status.phase != Some(Phase::Revoked) || valid_before <= now {
                return None;
            }
            Some(Revoked {
                namespace: r.namespace().unwrap_or_default(),
                name: r.name_any(),
                serial: status.serial.as_deref()?.parse().ok()?,
                key_id: status.key_id.clone().unwrap_or_default(),
                valid_before: valid_before.to_string(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// The revocation list. The ConfigMap is its durable home: entries stay until their
/// certificate's validBefore even after the AccessRequest is deleted, and survive restarts
/// (the list is read back from the ConfigMap before the first change).
pub struct Revocations {
    api: Api<ConfigMap>,
    user_ca: Arc<CaKey>,
    list: tokio::sync::Mutex<Option<Vec<Revoked>>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").finish_non_exhaustive()
    }
}

fn still_valid(entry: &Revoked, now: jiff::Timestamp) -> bool {
    entry
        .valid_before
        .parse::<jiff::Timestamp>()
        .is_ok_and(|t| t > now)
}

impl Revocations {
    /// Revocations published in `namespace`, scoped to `user_ca`.
    pub fn new(client: Client, namespace: &str, user_ca: Arc<CaKey>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            user_ca,
            list: tokio::sync::Mutex::new(None),
        }
    }

    async fn load(&self) -> Result<Vec<Revoked>> {
        let existing = self
            .api
            .get_opt(REVOCATIONS_CONFIGMAP)
            .await
            .map_err(|source| Error::ReadObject {
                what: format!("ConfigMap {REVOCATIONS_CONFIGMAP}"),
                source,
            })?;
        let text = existing
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(REVOKED_JSON))
            .unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Record one revocation and publish before returning, so a revocation is never only in memory.
    pub async fn add(&self, entry: Revoked) -> Result<()> {
        self.merge(vec![entry], true).await
    }

    /// Merge what the store shows as revoked, drop expired entries, publish if anything changed.
    pub async fn sync(&self, from_store: Vec<Revoked>) -> Result<()> {
        self.merge(from_store, false).await
    }

    async fn merge(&self, entries: Vec<Revoked>, must_publish: bool) -> Result<()> {
        let mut slot = self.list.lock().await;
        let first = slot.is_none();
        let mut list = match slot.take() {
            Some(list) => list,
            None => self.load().await?,
        };
        let before = list.clone();
        let now = jiff::Timestamp::now();
        for entry in entries {
            if !list.iter().any(|e| e.serial == entry.serial) {
                list.push(entry);
            }
        }
        list.retain(|e| still_valid(e, now));
        list.sort_by(|a, b| {
            (&a.namespace, &a.name, a.serial).cmp(&(&b.namespace, &b.name, b.serial))
        });
        if (first || must_publish || list != before)
            && let Err(error) = self.publish(&list, now).await
        {
            // Keep the previous list so the next call retries the same change.
            *slot = Some(before);
            return Err(error);
        }
        *slot = Some(list);
        Ok(())
    }

    async fn publish(&self, list: &[Revoked], now: jiff::Timestamp) -> Result<()> {
        let serials: Vec<u64> = list.iter().map(|r| r.serial).collect();
        let now_secs = now.as_second().unsigned_abs();
        let krl = gatehouse_ssh_ca::encode_krl(
            self.user_ca.public_key(),
            &serials,
            &[],
            now_secs,
            now_secs,
            "gatehouse",
        );
        let json = serde_json::to_string_pretty(list).unwrap_or_else(|_| "[]".to_owned());
        let binary = [(REVOKED_KRL.to_owned(), ByteString(krl))].into();
        config_map::apply(
            &self.api,
            REVOCATIONS_CONFIGMAP,
            Some([(REVOKED_JSON.to_owned(), json)].into()),
            Some(binary),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_revoked_and_still_valid_certificates_are_listed() {
        let now =
            jiff::Timestamp::from_second(1_800_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let make = |name: &str, phase: Phase, until: i64| {
            let mut r: AccessRequest = serde_json::from_value(json!({
                "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": name, "namespace": "team"},
                "spec": {"target": {"hostGroup": "db"}, "login": "u", "publicKey": "k"},
                "status": {"phase": phase, "serial": "9", "keyId": "kid", "validBefore": jiff::Timestamp::from_second(until).unwrap_or(now).to_string()},
            }))
            .unwrap();
            r.metadata.namespace = Some("team".into());
            Arc::new(r)
        };
        let requests = [
            make("revoked", Phase::Revoked, 1_800_000_100),
            make("revoked-expired", Phase::Revoked, 1_799_999_000),
            make("issued", Phase::Issued, 1_800_000_100),
        ];
        let list = revoked(&requests, now);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].serial), ("revoked", 9));
    }
}
