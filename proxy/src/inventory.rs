//! Live AccessRequests, HostGroups and AccessPolicies, kept in memory by kube reflectors so a
//! login costs no API call. Data comes from the API server's watch streams; it goes to
//! [`crate::access`] through the [`Lookup`] trait.

use std::{future::Future, sync::Arc};

use gatehouse_crds::{AccessPolicy, AccessRequest, HostGroup};
use gatehouse_runtime::watch::{namespaced_or_all, reflect};
use kube::{
    Client, Resource,
    runtime::reflector::{self, ObjectRef, Store},
};

use crate::access::Lookup;

/// Reflector stores of the objects logins are decided on.
#[derive(Clone)]
pub struct Inventory {
    requests: Store<AccessRequest>,
    host_groups: Store<HostGroup>,
    policies: Store<AccessPolicy>,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("requests", &self.requests.len())
            .field("host_groups", &self.host_groups.len())
            .field("policies", &self.policies.len())
            .finish()
    }
}

impl Inventory {
    /// Start watching (every namespace, or one) and wait until the first lists arrived. The
    /// returned future drives the watches and must be polled for the stores to stay current.
    pub async fn start(
        client: Client,
        namespace: Option<&str>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (requests, watch_requests) = reflect(
            namespaced_or_all::<AccessRequest>(&client, namespace),
            || {},
        );
        let (host_groups, watch_groups) =
            reflect(namespaced_or_all::<HostGroup>(&client, namespace), || {});
        let (policies, watch_policies) =
            reflect(namespaced_or_all::<AccessPolicy>(&client, namespace), || {});
        let drive = async move {
            tokio::join!(watch_requests, watch_groups, watch_policies);
        };
        (
            Self {
                requests,
                host_groups,
                policies,
            },
            drive,
        )
    }

    /// Wait until every store holds its first list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.requests.wait_until_ready().await?;
        self.host_groups.wait_until_ready().await?;
        self.policies.wait_until_ready().await
    }
}

fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

impl Lookup for Inventory {
    fn request(&self, namespace: &str, name: &str) -> Option<Arc<AccessRequest>> {
        get(&self.requests, namespace, name)
    }
    fn host_group(&self, namespace: &str, name: &str) -> Option<Arc<HostGroup>> {
        get(&self.host_groups, namespace, name)
    }
    fn policy(&self, namespace: &str, name: &str) -> Option<Arc<AccessPolicy>> {
        get(&self.policies, namespace, name)
    }
}
