//! Each HostGroup's status: host count, observed generation and a Ready condition.

use gatehouse_crds::{
    HostGroup, HostGroupStatus,
    conditions::{self, set_condition},
    contract::managers,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::error::{Error, Result};

/// Keep HostGroup `group`'s status (host count, observed generation, Ready) current.
pub async fn write_status(client: &Client, group: &HostGroup) -> Result<()> {
    let status = group.status.clone().unwrap_or_default();
    let count = i32::try_from(group.spec.hosts.len()).unwrap_or(i32::MAX);
    if status.observed_generation == group.metadata.generation && status.host_count == Some(count) {
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
        Api::namespaced(client.clone(), &group.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": HostGroup::api_version(&()), "kind": HostGroup::kind(&()), "status": next});
    api.patch_status(
        &group.name_any(),
        &PatchParams::apply(managers::OPERATOR).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        what: format!("HostGroup {}", group.name_any()),
        source,
    })?;
    Ok(())
}
