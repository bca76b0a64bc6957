//! What the operator publishes for hosts and the proxy.
//!
//! Data comes from the reflector stores (HostGroups, AccessPolicies, AccessRequests) and the CA
//! public keys; it goes out as two ConfigMaps in the operator's namespace, written with
//! server-side apply whenever their content changes:
//! - `gatehouse-ssh`: both CA public keys, the sshd lines a target needs (proxied hosts trust
//!   only the upstream CA; direct hosts trust the user CA with an AuthorizedPrincipalsFile), and
//!   one AuthorizedPrincipalsFile content per direct HostGroup and login;
//! - `gatehouse-revocations`: revoked certificates still inside their validity, as JSON for the
//!   proxy and as an OpenSSH KRL for direct hosts' `RevokedKeys`.
//!
//! It also keeps each HostGroup's status (host count, observed generation, Ready).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use gatehouse_crds::{
    AccessPolicy, AccessRequest, HostGroup, HostGroupMode, HostGroupStatus, Phase, conditions,
};
use k8s_openapi::{ByteString, api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
    runtime::reflector::Store,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    cert::{self, CaKey},
    controller::FIELD_MANAGER,
    error::{Error, Result},
    krl,
    policy::selector_matches,
    status::set_condition,
};

/// ConfigMap with CA public keys, sshd lines and AuthorizedPrincipalsFile contents.
pub const SSH_CONFIGMAP: &str = "gatehouse-ssh";
/// ConfigMap with the revocation list.
pub const REVOCATIONS_CONFIGMAP: &str = "gatehouse-revocations";
/// Where the published files are meant to live on a target host.
const USER_CA_PATH: &str = "/etc/ssh/gatehouse_user_ca.pub";
const UPSTREAM_CA_PATH: &str = "/etc/ssh/gatehouse_upstream_ca.pub";
const PRINCIPALS_DIR: &str = "/etc/ssh/gatehouse_principals";
const KRL_PATH: &str = "/etc/ssh/gatehouse_revoked.krl";

/// The ConfigMap key holding the AuthorizedPrincipalsFile content for `login` on the hosts of a
/// direct HostGroup.
pub fn principals_key(namespace: &str, host_group: &str, login: &str) -> String {
    format!("principals.{namespace}.{host_group}.{login}")
}

/// The `gatehouse-ssh` ConfigMap data.
pub fn ssh_data(
    user_ca: &str,
    upstream_ca: &str,
    host_groups: &[HostGroup],
    policies: &[AccessPolicy],
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert("user_ca.pub".to_owned(), format!("{user_ca}\n"));
    data.insert("upstream_ca.pub".to_owned(), format!("{upstream_ca}\n"));
    data.insert(
        "sshd_config.proxied".to_owned(),
        format!(
            "# Hosts reached through the Gatehouse proxy: trust only the upstream CA ({})\nTrustedUserCAKeys {UPSTREAM_CA_PATH}\n",
            "upstream_ca.pub"
        ),
    );
    data.insert(
        "sshd_config.direct".to_owned(),
        format!(
            "# Hosts of direct HostGroups: trust the user CA, accept only principals published for this group\n\
             TrustedUserCAKeys {USER_CA_PATH}\nAuthorizedPrincipalsFile {PRINCIPALS_DIR}/%u\nRevokedKeys {KRL_PATH}\n"
        ),
    );
    for group in host_groups
        .iter()
        .filter(|g| g.spec.mode == HostGroupMode::Direct)
    {
        let namespace = group.namespace().unwrap_or_default();
        let name = group.name_any();
        let mut logins: Vec<&str> = policies
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|p| selector_matches(&p.spec.host_selector, group.labels()))
            .flat_map(|p| p.spec.logins.iter().map(String::as_str))
            .collect();
        logins.sort_unstable();
        logins.dedup();
        for login in logins {
            data.insert(
                principals_key(&namespace, &name, login),
                format!("{}\n", cert::direct_principal(&namespace, &name, login)),
            );
        }
    }
    data
}

/// The host key alias engineers' `ssh_config` uses for the proxy (`HostKeyAlias`), so one
/// known_hosts line works whatever address the proxy is reached at.
pub const PROXY_HOST_KEY_ALIAS: &str = "gatehouse-proxy";

/// The proxy host key, as a public key and as a known_hosts line for [`PROXY_HOST_KEY_ALIAS`].
pub fn proxy_host_key_data(line: &str) -> BTreeMap<String, String> {
    [
        ("proxy_host_key.pub".to_owned(), format!("{line}\n")),
        (
            "proxy_known_hosts".to_owned(),
            format!("{PROXY_HOST_KEY_ALIAS} {line}\n"),
        ),
    ]
    .into()
}

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

/// What the publisher reads and writes.
#[derive(Clone)]
pub struct Publisher {
    /// API client.
    pub client: Client,
    /// The operator's namespace.
    pub namespace: String,
    /// User CA (public key and KRL scope).
    pub user_ca: Arc<CaKey>,
    /// Upstream CA public key line.
    pub upstream_ca_line: String,
    /// The proxy's host key line (published for clients' known_hosts).
    pub proxy_host_key_line: String,
    /// HostGroups.
    pub host_groups: Store<HostGroup>,
    /// AccessPolicies.
    pub policies: Store<AccessPolicy>,
    /// AccessRequests.
    pub requests: Store<AccessRequest>,
    /// The revocation list (shared with the reconciler).
    pub revocations: Arc<Revocations>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publish now and again on every nudge (store changes, revocations) and every 30 s (so
    /// expired revocations drop out). Runs until cancelled.
    pub async fn run(self, nudge: Arc<Notify>) {
        let mut last: Option<BTreeMap<String, String>> = None;
        loop {
            match self.publish_once(last.as_ref()).await {
                Ok(published) => last = Some(published),
                Err(error) => tracing::warn!(%error, "publishing failed; retrying"),
            }
            tokio::select! {
                () = nudge.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    async fn publish_once(
        &self,
        last: Option<&BTreeMap<String, String>>,
    ) -> Result<BTreeMap<String, String>> {
        let groups: Vec<HostGroup> = self
            .host_groups
            .state()
            .iter()
            .map(|g| (**g).clone())
            .collect();
        let policies: Vec<AccessPolicy> = self
            .policies
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let user_ca = self.user_ca.public_key_line()?;
        let mut data = ssh_data(&user_ca, &self.upstream_ca_line, &groups, &policies);
        data.extend(proxy_host_key_data(&self.proxy_host_key_line));
        if last != Some(&data) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            apply_config_map(&api, SSH_CONFIGMAP, Some(data.clone()), None).await?;
        }
        self.revocations
            .sync(revoked(&self.requests.state(), jiff::Timestamp::now()))
            .await?;
        for group in &groups {
            self.host_group_status(group).await?;
        }
        Ok(data)
    }

    async fn host_group_status(&self, group: &HostGroup) -> Result<()> {
        let status = group.status.clone().unwrap_or_default();
        let count = i32::try_from(group.spec.hosts.len()).unwrap_or(i32::MAX);
        if status.observed_generation == group.metadata.generation
            && status.host_count == Some(count)
        {
            return Ok(());
        }
        let mut next = HostGroupStatus {
            conditions: status.conditions,
            host_count: Some(count),
            observed_generation: group.metadata.generation,
        };
        let message = format!("{count} host(s), mode {:?}", group.spec.mode);
        let now = Time(jiff::Timestamp::now());
        set_condition(
            &mut next.conditions,
            conditions::READY,
            true,
            "Valid",
            &message,
            &now,
            group.metadata.generation,
        );
        let api: Api<HostGroup> =
            Api::namespaced(self.client.clone(), &group.namespace().unwrap_or_default());
        let patch = json!({"apiVersion": HostGroup::api_version(&()), "kind": HostGroup::kind(&()), "status": next});
        api.patch_status(
            &group.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::WriteStatus {
            what: format!("HostGroup {}", group.name_any()),
            source,
        })?;
        Ok(())
    }
}

/// Server-side apply a ConfigMap the operator owns.
async fn apply_config_map(
    api: &Api<ConfigMap>,
    name: &str,
    data: Option<BTreeMap<String, String>>,
    binary_data: Option<BTreeMap<String, ByteString>>,
) -> Result<()> {
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    FIELD_MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data,
        binary_data,
        ..ConfigMap::default()
    };
    let mut value = serde_json::to_value(&config_map).unwrap_or_default();
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("ConfigMap");
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| Error::PublishConfigMap {
        name: name.to_owned(),
        source,
    })?;
    tracing::info!(configmap = name, "published");
    Ok(())
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
            .and_then(|mut d| d.remove("revoked.json"))
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
        let krl = krl::encode_krl(
            self.user_ca.public_key(),
            &serials,
            &[],
            now_secs,
            now_secs,
            "gatehouse",
        );
        let json = serde_json::to_string_pretty(list).unwrap_or_else(|_| "[]".to_owned());
        let binary = [("revoked.krl".to_owned(), ByteString(krl))].into();
        apply_config_map(
            &self.api,
            REVOCATIONS_CONFIGMAP,
            Some([("revoked.json".to_owned(), json)].into()),
            Some(binary),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::{AccessPolicySpec, HostGroupSpec};

    fn group(name: &str, mode: HostGroupMode, tier: &str) -> HostGroup {
        let mut g = HostGroup::new(
            name,
            HostGroupSpec {
                mode,
                hosts: Vec::new(),
                host_ca_keys: Vec::new(),
            },
        );
        g.metadata.namespace = Some("team".into());
        g.metadata.labels = Some([("tier".to_owned(), tier.to_owned())].into());
        g
    }

    fn policy(name: &str, tier: &str, logins: &[&str]) -> AccessPolicy {
        let spec: AccessPolicySpec = serde_json::from_value(json!({
            "subjects": [{"kind": "Group", "name": "dev"}],
            "hostSelector": {"matchLabels": {"tier": tier}},
            "logins": logins,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut p = AccessPolicy::new(name, spec);
        p.metadata.namespace = Some("team".into());
        p
    }

    #[test]
    fn principals_are_published_per_direct_group_and_login() {
        let groups = [
            group("db", HostGroupMode::Direct, "db"),
            group("web", HostGroupMode::Proxied, "web"),
        ];
        let policies = [
            policy("a", "db", &["postgres", "ubuntu"]),
            policy("b", "db", &["ubuntu"]),
            policy("c", "web", &["www"]),
        ];
        let data = ssh_data("ssh-ed25519 USER", "ssh-ed25519 UP", &groups, &policies);
        let keys: Vec<_> = data
            .keys()
            .filter(|k| k.starts_with("principals."))
            .collect();
        assert_eq!(
            keys,
            ["principals.team.db.postgres", "principals.team.db.ubuntu"]
        );
        assert_eq!(
            data["principals.team.db.ubuntu"],
            "gatehouse:team/db:ubuntu\n"
        );
        assert_eq!(data["user_ca.pub"], "ssh-ed25519 USER\n");
        assert!(
            data["sshd_config.direct"]
                .contains("AuthorizedPrincipalsFile /etc/ssh/gatehouse_principals/%u")
        );
        assert!(
            data["sshd_config.proxied"]
                .contains("TrustedUserCAKeys /etc/ssh/gatehouse_upstream_ca.pub")
        );
    }

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
            .unwrap_or_else(|e| panic!("{e}"));
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
