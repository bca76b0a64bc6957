//! Live AccessRequests, HostGroups and AccessPolicies, kept in memory by kube reflectors so a
//! login costs no API call. Data comes from the API server's watch streams; it goes to
//! [`crate::access`] through the [`Lookup`] trait.

use std::{future::Future, sync::Arc};

use gatehouse_crds::{AccessPolicy, AccessRequest, HostGroup};
use gatehouse_runtime::watch::{KeepLabels, namespaced_or_all, reflect};
use kube::{
    Api, Client, Resource,
    runtime::reflector::{self, ObjectRef, Store},
};

use crate::access::Lookup;

/// Reflector stores of the objects logins are decided on.
#[derive(Clone)]
pub struct Inventory {
    client: Client,
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
        // Only what logins are decided on is kept; a HostGroup's labels are its tags.
        let (requests, watch_requests) = reflect(
            namespaced_or_all::<AccessRequest>(&client, namespace),
            KeepLabels::Gatehouse,
            || {},
        );
        let (host_groups, watch_groups) = reflect(
            namespaced_or_all::<HostGroup>(&client, namespace),
            KeepLabels::All,
            || {},
        );
        let (policies, watch_policies) = reflect(
            namespaced_or_all::<AccessPolicy>(&client, namespace),
            KeepLabels::Gatehouse,
            || {},
        );
        let drive = async move {
            tokio::join!(watch_requests, watch_groups, watch_policies);
        };
        (
            Self {
                client,
                requests,
                host_groups,
                policies,
            },
            drive,
        )
    }

    /// Read one request, and the HostGroup and policy it rests on, from the API server: for a
    /// login the watch caches refuse only because they lag (a certificate used the moment it was
    /// issued). Objects that cannot be read are left to the caches.
    pub async fn fresh(&self, namespace: &str, name: &str) -> Fresh<'_> {
        let requests: Api<AccessRequest> = Api::namespaced(self.client.clone(), namespace);
        let request = requests.get_opt(name).await.ok().flatten().map(Arc::new);
        let group_name = request.as_ref().map(|r| r.spec.target.host_group.clone());
        let policy_name = request
            .as_ref()
            .and_then(|r| r.status.as_ref()?.policy.clone());
        let host_group = match &group_name {
            Some(group) => Api::<HostGroup>::namespaced(self.client.clone(), namespace)
                .get_opt(group)
                .await
                .ok()
                .flatten()
                .map(Arc::new),
            None => None,
        };
        let policy = match &policy_name {
            Some(policy) => Api::<AccessPolicy>::namespaced(self.client.clone(), namespace)
                .get_opt(policy)
                .await
                .ok()
                .flatten()
                .map(Arc::new),
            None => None,
        };
        Fresh {
            caches: self,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            request,
            host_group: group_name.zip(host_group),
            policy: policy_name.zip(policy),
        }
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

/// One request (and what it rests on) as the API server has it now, over the caches.
#[derive(Debug)]
pub struct Fresh<'a> {
    caches: &'a Inventory,
    namespace: String,
    name: String,
    request: Option<Arc<AccessRequest>>,
    host_group: Option<(String, Arc<HostGroup>)>,
    policy: Option<(String, Arc<AccessPolicy>)>,
}

impl Lookup for Fresh<'_> {
    fn request(&self, namespace: &str, name: &str) -> Option<Arc<AccessRequest>> {
        if namespace == self.namespace && name == self.name {
            return self.request.clone();
        }
        self.caches.request(namespace, name)
    }
    fn host_group(&self, namespace: &str, name: &str) -> Option<Arc<HostGroup>> {
        match &self.host_group {
            Some((group, fresh)) if namespace == self.namespace && name == group => {
                Some(fresh.clone())
            }
            _ => self.caches.host_group(namespace, name),
        }
    }
    fn policy(&self, namespace: &str, name: &str) -> Option<Arc<AccessPolicy>> {
        match &self.policy {
            Some((policy, fresh)) if namespace == self.namespace && name == policy => {
                Some(fresh.clone())
            }
            _ => self.caches.policy(namespace, name),
        }
    }
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
