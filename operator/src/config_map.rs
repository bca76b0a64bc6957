//! Writing the ConfigMaps the operator owns, with server-side apply under its field manager.

use std::collections::BTreeMap;

use gatehouse_crds::contract::{MANAGED_BY_LABEL, managers};
use k8s_openapi::{ByteString, api::core::v1::ConfigMap};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams},
};
use serde_json::json;

use crate::error::{Error, Result};

/// Server-side apply a ConfigMap the operator owns.
pub async fn apply(
    api: &Api<ConfigMap>,
    name: &str,
    data: Option<BTreeMap<String, String>>,
    binary_data: Option<BTreeMap<String, ByteString>>,
) -> Result<()> {
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), managers::OPERATOR.to_owned())].into()),
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
        &PatchParams::apply(managers::OPERATOR).force(),
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
