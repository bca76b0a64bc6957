//! The revocation list: Direct-mode certificates revoked while still inside their validity.
//!
//! Data comes from the reconciler (each revocation, after the request's status says Revoked,
//! and before a deleted request is let go) and from the AccessRequest store (whatever it shows
//! as Revoked); it goes out as ConfigMap `gatehouse-revocations`: the list as JSON and as an
//! OpenSSH KRL for Direct hosts' `RevokedKeys`. The ConfigMap is the list's durable home:
//! entries stay until their certificate's validBefore even after the AccessRequest is deleted,
//! and survive restarts.
//!
//! The list cannot be exhausted by revoking: proxied certificates open nothing but the proxy,
//! which checks the request itself, so they are never listed; entries are compact (namespace,
//! serial, end of validity) and leave with their certificate; a namespace holding
//! [`Revocations::per_namespace_limit`] live entries gets no new Direct certificate until some
//! expire. A list that cannot be written never keeps a request Issued (its status is written
//! first), and a stored list that does not parse stops publishing instead of being read as empty.

use std::sync::Arc;

use gatehouse_crds::{
    AccessRequest, AccessRequestStatus, Phase,
    contract::{
        identity,
        published::{REVOCATIONS_CONFIGMAP, REVOKED_JSON, REVOKED_KRL},
    },
};
use gatehouse_ssh_ca::CaKey;
use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::ConfigMap};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    config_map,
    error::{Error, Result},
};

/// Largest list the operator writes: a ConfigMap holds at most 1 MiB, with room for metadata.
pub const MAX_LIST_BYTES: usize = 900 * 1024;
/// Default for [`Revocations::per_namespace_limit`].
pub const DEFAULT_PER_NAMESPACE_LIMIT: usize = 1000;

/// One revoked certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    /// Namespace of the request it was issued for.
    pub namespace: String,
    /// Certificate serial (a string: 64-bit values do not survive every JSON reader).
    #[serde(
        serialize_with = "serial_as_string",
        deserialize_with = "serial_from_either"
    )]
    pub serial: u64,
    /// End of the certificate's validity, after which the entry is dropped.
    pub valid_before: Timestamp,
}

fn serial_as_string<S: Serializer>(serial: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&serial.to_string())
}

/// Lists written before serials were strings hold numbers.
fn serial_from_either<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

/// The list entry for the certificate `status` names, if it opens hosts directly and is still
/// valid at `now` (a proxied certificate opens nothing without the proxy, which checks status).
pub fn entry_for(namespace: &str, status: &AccessRequestStatus, now: Timestamp) -> Option<Revoked> {
    let valid_before = status.valid_before.as_ref()?.0;
    let direct = status
        .principals
        .iter()
        .any(|p| identity::parse_proxied_principal(p).is_none());
    (direct && valid_before > now).then_some(Revoked {
        namespace: namespace.to_owned(),
        serial: status.serial.as_deref()?.parse().ok()?,
        valid_before,
    })
}

/// What the store shows as revoked and still valid, sorted.
pub fn revoked(requests: &[Arc<AccessRequest>], now: Timestamp) -> Vec<Revoked> {
    let mut out: Vec<Revoked> = requests
        .iter()
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            (status.phase == Some(Phase::Revoked))
                .then(|| entry_for(&r.namespace().unwrap_or_default(), status, now))
                .flatten()
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, a.serial).cmp(&(&b.namespace, b.serial)));
    out
}

/// `list` with `entries` added (once per serial) and expired entries dropped, sorted.
pub fn merged(mut list: Vec<Revoked>, entries: Vec<Revoked>, now: Timestamp) -> Vec<Revoked> {
    for entry in entries {
        if !list.iter().any(|e| e.serial == entry.serial) {
            list.push(entry);
        }
    }
    list.retain(|e| e.valid_before > now);
    list.sort_by(|a, b| (&a.namespace, a.serial).cmp(&(&b.namespace, b.serial)));
    list
}

/// Parse the stored list; a ConfigMap without it is an empty list, anything unreadable an error.
pub fn parse(text: Option<&str>) -> Result<Vec<Revoked>> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| Error::CorruptRevocationList {
            configmap: REVOCATIONS_CONFIGMAP,
            problem: e.to_string(),
        }),
    }
}

/// The list as published: JSON text and KRL bytes. Refused when too large to store.
pub fn render(list: &[Revoked], ca: &CaKey, now: Timestamp) -> Result<(String, Vec<u8>)> {
    let serials: Vec<u64> = list.iter().map(|r| r.serial).collect();
    let now_secs = now.as_second().unsigned_abs();
    let krl = gatehouse_ssh_ca::encode_krl(
        ca.public_key(),
        &serials,
        &[],
        now_secs,
        now_secs,
        "gatehouse",
    );
    // A Vec of plain structs always serialises.
    let json = serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned());
    // binaryData is base64: four bytes for every three.
    let bytes = json.len() + krl.len().div_ceil(3) * 4;
    if bytes > MAX_LIST_BYTES {
        return Err(Error::RevocationListFull {
            entries: list.len(),
            bytes,
        });
    }
    Ok((json, krl))
}

/// The revocation list, kept in memory and in its ConfigMap.
pub struct Revocations {
    api: Api<ConfigMap>,
    user_ca: Arc<CaKey>,
    per_namespace_limit: usize,
    list: tokio::sync::Mutex<Option<Listed>>,
}

/// The list as last published, with its entries counted per namespace.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    entries: Vec<Revoked>,
    per_namespace: std::collections::HashMap<String, usize>,
}

impl From<Vec<Revoked>> for Listed {
    fn from(entries: Vec<Revoked>) -> Self {
        let mut per_namespace = std::collections::HashMap::new();
        for entry in &entries {
            *per_namespace.entry(entry.namespace.clone()).or_insert(0) += 1;
        }
        Self {
            entries,
            per_namespace,
        }
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("per_namespace_limit", &self.per_namespace_limit)
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Revocations published in `namespace`, scoped to `user_ca`.
    pub fn new(
        client: Client,
        namespace: &str,
        user_ca: Arc<CaKey>,
        per_namespace_limit: usize,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            user_ca,
            per_namespace_limit,
            list: tokio::sync::Mutex::new(None),
        }
    }

    /// Live entries a namespace may hold before it gets no new Direct certificate.
    pub fn per_namespace_limit(&self) -> usize {
        self.per_namespace_limit
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
        let data = existing.and_then(|cm| cm.data).unwrap_or_default();
        parse(data.get(REVOKED_JSON).map(String::as_str))
    }

    /// How many entries `namespace` holds (as of the last merge; expired ones leave at the
    /// next, at most 30 s later, so the count errs high).
    pub async fn count_in(&self, namespace: &str) -> Result<usize> {
        let mut slot = self.list.lock().await;
        if slot.is_none() {
            *slot = Some(Listed::from(self.load().await?));
        }
        Ok(slot
            .as_ref()
            .and_then(|listed| listed.per_namespace.get(namespace).copied())
            .unwrap_or(0))
    }

    /// Record one revocation and publish before returning.
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
        let before = match slot.take() {
            Some(listed) => listed.entries,
            None => self.load().await?,
        };
        let now = Timestamp::now();
        let list = merged(before.clone(), entries, now);
        if (first || must_publish || list != before)
            && let Err(error) = self.publish(&list, now).await
        {
            // Keep the previous list so the next call retries the same change.
            *slot = Some(Listed::from(before));
            return Err(error);
        }
        *slot = Some(Listed::from(list));
        Ok(())
    }

    async fn publish(&self, list: &[Revoked], now: Timestamp) -> Result<()> {
        let (json, krl) = render(list, &self.user_ca, now)?;
        config_map::apply(
            &self.api,
            REVOCATIONS_CONFIGMAP,
            Some([(REVOKED_JSON.to_owned(), json)].into()),
            Some([(REVOKED_KRL.to_owned(), ByteString(krl))].into()),
        )
        .await
    }
}

#[cfg(test)]
#[path = "revocations_tests.rs"]
mod tests;
