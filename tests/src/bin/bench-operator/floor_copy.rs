//! Throwaway copies of the AccessRequest CRD for the floor's CEL case: the chart's CRD read at
//! run time, moved to another group (so no Gatehouse webhook, RBAC role or controller matches
//! it), with or without its `x-kubernetes-validations`. The chart's YAML is not changed.

use serde_json::Value;

/// The CRD the copies are made of, relative to the repository root.
pub const SOURCE: &str = "charts/gatehouse/crds/accessrequests.gatehouse.dev.yaml";

/// A copy of CRD `crd` in API group `group`; `keep_cel` false strips every
/// `x-kubernetes-validations`. Short names and categories are dropped so `kubectl get ar` and
/// `kubectl get gatehouse` keep naming only the real CRD.
pub fn crd_copy(crd: &Value, group: &str, keep_cel: bool) -> Value {
    let mut copy = crd.clone();
    let plural = copy["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or("accessrequests")
        .to_owned();
    copy["metadata"] = serde_json::json!({ "name": format!("{plural}.{group}") });
    copy["spec"]["group"] = Value::from(group);
    if let Some(names) = copy["spec"]["names"].as_object_mut() {
        names.remove("shortNames");
        names.remove("categories");
    }
    if !keep_cel {
        strip(&mut copy, "x-kubernetes-validations");
    }
    copy
}

/// Remove `key` from every object inside `value`.
fn strip(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| strip(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, key)),
        _ => {}
    }
}

/// How many `x-kubernetes-validations` rules `value` holds.
pub fn cel_rules(value: &Value) -> usize {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("x-kubernetes-validations", Value::Array(rules)) => rules.len(),
                _ => cel_rules(v),
            })
            .sum(),
        Value::Array(items) => items.iter().map(cel_rules).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "accessrequests.gatehouse.dev", "labels": {"x": "y"}},
            "spec": {
                "group": "gatehouse.dev",
                "names": {"plural": "accessrequests", "kind": "AccessRequest", "shortNames": ["ar"], "categories": ["gatehouse"]},
                "versions": [{"name": "v1alpha1", "schema": {"openAPIV3Schema": {"properties": {"spec": {
                    "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
                    "properties": {"duration": {"type": "string", "x-kubernetes-validations": [{"rule": "a"}, {"rule": "b"}]}},
                }}}}}],
            },
        })
    }

    #[test]
    fn copies_move_group_and_keep_or_strip_cel() {
        let table = [
            ("cel.floor.example", true, 3),
            ("nocel.floor.example", false, 0),
        ];
        for (group, keep, rules) in table {
            let copy = crd_copy(&crd(), group, keep);
            assert_eq!(
                copy["metadata"],
                json!({"name": format!("accessrequests.{group}")})
            );
            assert_eq!(copy["spec"]["group"], group);
            assert_eq!(
                copy["spec"]["names"],
                json!({"plural": "accessrequests", "kind": "AccessRequest"})
            );
            assert_eq!(cel_rules(&copy), rules, "{group}");
            let duration = &copy["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["spec"]["properties"]["duration"];
            assert_eq!(duration["type"], "string");
        }
        assert_eq!(cel_rules(&crd()), 3);
    }
}
