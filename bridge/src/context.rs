//! What every part of the bridge shares: clients, watch caches, the identity mapping, the
//! delivery records and the webhook queue.

use std::sync::{Arc, RwLock};

use gatehouse_crds::{AccessPolicy, AccessRequest, contract::bridge};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, runtime::reflector::Store};
use tokio::sync::Notify;

use crate::{
    error::{Error, Result},
    http_client::HttpClient,
    mapping::Mapping,
    metrics::Metrics,
    queue::Queue,
    records::Records,
    slack_api::Slack,
};

/// Shared state.
pub struct Context {
    /// The bridge's own client (its ServiceAccount): watches, status records, its ConfigMap and
    /// webhook key Secrets.
    pub client: Client,
    /// The configuration `client` came from; clicks clone it with `impersonate` set.
    pub base_config: kube::Config,
    /// The bridge's namespace (mapping ConfigMap, webhook key Secrets).
    pub namespace: String,
    /// Slack, when a bot token is configured.
    pub slack: Option<Slack>,
    /// The signing secret for HTTP interactions.
    pub signing_secret: Option<Vec<u8>>,
    /// Outbound HTTP (webhooks).
    pub http: HttpClient,
    /// Watched AccessRequests.
    pub requests: Store<AccessRequest>,
    /// Watched AccessPolicies.
    pub policies: Store<AccessPolicy>,
    /// The identity mapping as last read.
    pub mapping: RwLock<Arc<Mapping>>,
    /// What was delivered.
    pub records: Records,
    /// Webhook deliveries.
    pub webhooks: Queue,
    /// Wakes the notifier.
    pub nudge: Notify,
    /// What the bridge counts.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The mapping now.
    pub fn mapping(&self) -> Arc<Mapping> {
        self.mapping
            .read()
            .map(|m| Arc::clone(&m))
            .unwrap_or_default()
    }

    /// Read the mapping ConfigMap again. A ConfigMap that does not parse empties the mapping
    /// (fail closed: nobody can act from Slack); a failed read keeps the last good one.
    pub async fn reload_mapping(&self) -> Result<()> {
        let name = bridge::IDENTITIES_CONFIGMAP;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api
            .get_opt(name)
            .await
            .map_err(|source| Error::ReadMapping {
                name: name.to_owned(),
                source,
            })?;
        let text = found
            .and_then(|cm| cm.data)
            .and_then(|mut data| data.remove(bridge::IDENTITIES_KEY))
            .unwrap_or_else(|| "[]".to_owned());
        let parsed = Mapping::parse(&text);
        let (mapping, outcome) = match parsed {
            Ok(mapping) => (mapping, Ok(())),
            Err(message) => (
                Mapping::default(),
                Err(Error::BadMapping {
                    name: name.to_owned(),
                    message,
                }),
            ),
        };
        if let Ok(mut slot) = self.mapping.write() {
            *slot = Arc::new(mapping);
        }
        outcome
    }
}
