//! What the operator publishes for hosts, engineers and the proxy, kept current by one loop.
//!
//! Data comes from the reflector stores (HostGroups, AccessPolicies, AccessRequests) and the CA
//! public keys; it goes out as ConfigMap `gatehouse-ssh` ([`ssh_config`]), the revocation list
//! ([`crate::revocations`]) and each HostGroup's status ([`host_groups`]), written with
//! server-side apply whenever their content changes.

pub mod host_groups;
pub mod ssh_config;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use gatehouse_crds::{AccessPolicy, AccessRequest, HostGroup, contract::published::SSH_CONFIGMAP};
use gatehouse_ssh_ca::CaKey;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client, runtime::reflector::Store};
use tokio::sync::Notify;

use crate::{
    config_map,
    error::Result,
    revocations::{self, Revocations},
};

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
    /// Where engineers reach the proxy (`HOST[:PORT]`), if configured.
    pub proxy_address: Option<String>,
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

    /// Publish everything once. Each part is independent: a HostGroup whose status cannot be
    /// written, or a revocation list that cannot be stored, does not hold up the others.
    async fn publish_once(
        &self,
        last: Option<&BTreeMap<String, String>>,
    ) -> Result<BTreeMap<String, String>> {
        let user_ca = self.user_ca.public_key_line()?;
        let data = ssh_config::ssh_data(
            &user_ca,
            &self.upstream_ca_line,
            &self.proxy_host_key_line,
            self.proxy_address.as_deref(),
        );
        if last != Some(&data) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            config_map::apply(&api, SSH_CONFIGMAP, Some(data.clone()), None).await?;
        }
        if let Err(error) = self
            .revocations
            .sync(revocations::revoked(
                &self.requests.state(),
                jiff::Timestamp::now(),
            ))
            .await
        {
            tracing::warn!(%error, "publishing the revocation list failed; retrying");
        }
        let policies: Vec<AccessPolicy> = self
            .policies
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let now = Time(jiff::Timestamp::now());
        for group in self.host_groups.state() {
            let next = host_groups::status(&group, &policies, &now);
            if let Err(error) = host_groups::write_status(&self.client, &group, next).await {
                tracing::warn!(%error, "writing HostGroup status failed; retrying");
            }
        }
        Ok(data)
    }
}
