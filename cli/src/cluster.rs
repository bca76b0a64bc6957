//! Every API call the CLI makes, through the user's own kubeconfig: what kubectl could do as
//! the same user, so admission and RBAC decide exactly as they would for kubectl.

use std::path::PathBuf;

use gatehouse_crds::{AccessPolicy, AccessRequest, HostGroup, Requester, contract::published};
use k8s_openapi::api::{
    authentication::v1::SelfSubjectReview,
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::ConfigMap,
};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::error::{Error, Result};

/// How to reach the API server, from the global flags.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `-n`.
    pub namespace: Option<String>,
    /// `--gatehouse-namespace`: where the operator publishes `gatehouse-ssh`.
    pub system_namespace: String,
}

/// A connected client and the namespace commands act in.
#[derive(Clone)]
pub struct Cluster {
    /// The client, as the user.
    pub client: Client,
    /// The namespace.
    pub namespace: String,
    /// The operator's namespace.
    pub system_namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Load the kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`) with
    /// its exec plugins and client certificates, as kubectl does.
    pub async fn connect(connection: &Connection) -> Result<Self> {
        let options = KubeConfigOptions {
            context: connection.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &connection.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| Error::LoadKubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| Error::LoadKubeconfig(crate::error::one_line(&e.to_string())))?;
        let namespace = connection
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| Error::LoadKubeconfig(crate::error::one_line(&e.to_string())))?;
        Ok(Self {
            client,
            namespace,
            system_namespace: connection.system_namespace.clone(),
        })
    }

    /// AccessRequests of the namespace.
    pub fn requests(&self) -> Api<AccessRequest> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Who the API server says the user is.
    pub async fn whoami(&self) -> Result<Requester> {
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let review = api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| Error::api("asking the API server who you are (SelfSubjectReview)", e))?;
        let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
        Ok(Requester {
            username: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
        })
    }

    /// HostGroups of the namespace.
    pub async fn host_groups(&self) -> Result<Vec<HostGroup>> {
        let api: Api<HostGroup> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api(format!("listing HostGroups in {}", self.namespace), e))?
            .items)
    }

    /// AccessPolicies of the namespace.
    pub async fn policies(&self) -> Result<Vec<AccessPolicy>> {
        let api: Api<AccessPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api(format!("listing AccessPolicies in {}", self.namespace), e))?
            .items)
    }

    /// AccessRequests of the namespace.
    pub async fn list_requests(&self) -> Result<Vec<AccessRequest>> {
        let mut items = self
            .requests()
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api(format!("listing AccessRequests in {}", self.namespace), e))?
            .items;
        items.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        Ok(items)
    }

    /// One AccessRequest.
    pub async fn request(&self, name: &str) -> Result<AccessRequest> {
        match self.requests().get(name).await {
            Ok(request) => Ok(request),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::NotFound {
                name: name.to_owned(),
                namespace: self.namespace.clone(),
            }),
            Err(e) => Err(Error::api(format!("reading AccessRequest {name}"), e)),
        }
    }

    /// Set a decision annotation (`gatehouse.dev/approve|deny|revoke`) as the user: the same
    /// patch `kubectl annotate` sends, so admission decides.
    pub async fn annotate(&self, name: &str, key: &str, value: &str) -> Result<AccessRequest> {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        match self
            .requests()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(request) => Ok(request),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::NotFound {
                name: name.to_owned(),
                namespace: self.namespace.clone(),
            }),
            Err(e) => Err(Error::api(format!("annotating AccessRequest {name}"), e)),
        }
    }

    /// The data of ConfigMap `gatehouse-ssh`.
    pub async fn published(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.system_namespace);
        let map = api.get(published::SSH_CONFIGMAP).await.map_err(|e| {
            Error::api(
                format!(
                    "reading ConfigMap {}/{} (bound by Role {})",
                    self.system_namespace,
                    published::SSH_CONFIGMAP,
                    published::SSH_READER_ROLE
                ),
                e,
            )
        })?;
        Ok(map.data.unwrap_or_default())
    }

    /// Whether the user may `approve` under `policy` (SelfSubjectAccessReview).
    pub async fn may_approve(&self, policy: &str) -> Result<bool> {
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(gatehouse_crds::GROUP.to_owned()),
                    resource: Some("accesspolicies".to_owned()),
                    verb: Some("approve".to_owned()),
                    name: Some(policy.to_owned()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Error::api("SelfSubjectAccessReview", e))?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}
