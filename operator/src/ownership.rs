//! What of an AccessRequest's metadata only Gatehouse may change. Pure.
//!
//! Data comes from admission (the object before and after a change by anyone but the operator);
//! it goes out as the rule a change breaks, or nothing. A request belongs to its requester:
//! nobody but the operator sets its `ownerReferences` (a dangling owner would have the garbage
//! collector delete it) or `finalizers` (the revocation finalizer keeps a deleted request until
//! its certificate is listed), or its `gatehouse.dev/` labels and annotations outside the decision
//! flow; and other metadata is bounded so an approver's revocation always fits in the object.

use std::collections::BTreeMap;

use gatehouse_crds::{
    AccessRequest,
    contract::{self, annotations},
};

/// Prefix of the labels and annotations Gatehouse owns.
pub const GATEHOUSE_PREFIX: &str = "gatehouse.dev/";
/// Bytes of labels and annotations (keys and values, Gatehouse's own records excluded) a request
/// may carry. The API server allows 256 KiB of annotations; this leaves room for every decision.
pub const MAX_USER_METADATA_BYTES: usize = 32 * 1024;

/// The annotations users write to ask for a decision; admission consumes them.
const TRIGGERS: [&str; 3] = [annotations::APPROVE, annotations::DENY, annotations::REVOKE];

fn describe(object: &AccessRequest) -> String {
    format!(
        "AccessRequest {}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    )
}

fn gatehouse_owned<'a>(
    map: Option<&'a BTreeMap<String, String>>,
    except: &'a [&'a str],
) -> BTreeMap<&'a str, &'a str> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(GATEHOUSE_PREFIX) && !except.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A list field, with "absent" and "empty" the same.
fn nonempty<T>(list: Option<&Vec<T>>) -> Option<&Vec<T>> {
    list.filter(|l| !l.is_empty())
}

fn user_bytes(object: &AccessRequest) -> usize {
    let labels = object.metadata.labels.iter().flatten();
    let annotations = object
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != annotations::DECISIONS);
    labels
        .chain(annotations)
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

/// Check a change (`old` is `None` for a create) by anyone but the operator. The error names
/// the field and the rule.
pub fn check(old: Option<&AccessRequest>, new: &AccessRequest) -> Result<(), String> {
    let what = describe(new);
    let (old_owners, old_finalizers) = old.map_or((None, None), |o| {
        (
            o.metadata.owner_references.as_ref(),
            o.metadata.finalizers.as_ref(),
        )
    });
    if nonempty(new.metadata.owner_references.as_ref()) != nonempty(old_owners) {
        return Err(format!(
            "metadata.ownerReferences of {what} cannot be set or changed: a request belongs to its requester, and only Gatehouse manages its lifecycle"
        ));
    }
    // On create, the only finalizer allowed is the one Gatehouse's own admission adds.
    let created_with_ours = old.is_none()
        && new
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.len() == 1 && f[0] == contract::REVOCATION_FINALIZER);
    if !created_with_ours && nonempty(new.metadata.finalizers.as_ref()) != nonempty(old_finalizers)
    {
        return Err(format!(
            "metadata.finalizers of {what} are managed by Gatehouse only (its finalizer records the revocation of a deleted request)"
        ));
    }
    let labels_before = gatehouse_owned(old.and_then(|o| o.metadata.labels.as_ref()), &[]);
    let labels_after = gatehouse_owned(new.metadata.labels.as_ref(), &[]);
    if labels_before != labels_after {
        return Err(format!(
            "metadata.labels with prefix {GATEHOUSE_PREFIX} on {what} are Gatehouse's and cannot be set, changed or removed"
        ));
    }
    let skip: Vec<&str> = TRIGGERS
        .iter()
        .copied()
        .chain([annotations::DECISIONS])
        .collect();
    let before = gatehouse_owned(old.and_then(|o| o.metadata.annotations.as_ref()), &skip);
    let after = gatehouse_owned(new.metadata.annotations.as_ref(), &skip);
    if before != after {
        let key = after
            .keys()
            .chain(before.keys())
            .find(|k| before.get(*k) != after.get(*k))
            .copied()
            .unwrap_or(GATEHOUSE_PREFIX);
        return Err(format!(
            "metadata.annotations[{key}] on {what}: annotations with prefix {GATEHOUSE_PREFIX} are Gatehouse's; set only gatehouse.dev/approve, gatehouse.dev/deny or gatehouse.dev/revoke"
        ));
    }
    let bytes = user_bytes(new);
    if bytes > MAX_USER_METADATA_BYTES && bytes > old.map_or(0, user_bytes) {
        return Err(format!(
            "metadata.labels and metadata.annotations of {what} may hold at most {MAX_USER_METADATA_BYTES} bytes besides Gatehouse's records (this change makes {bytes}), so that approvals and revocations always fit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    fn request() -> AccessRequest {
        serde_json::from_value(json!({
            "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "r1", "namespace": "team",
                         "finalizers": ["gatehouse.dev/revocation"],
                         "labels": {"team": "db"},
                         "annotations": {"gatehouse.dev/decisions": "[]", "note": "x"}},
            "spec": {"target": {"hostGroup": "db"}, "login": "u", "publicKey": "k"},
        }))
        .unwrap()
    }

    #[test]
    fn ordinary_metadata_may_change_within_its_budget() {
        let old = request();
        let mut new = old.clone();
        new.metadata
            .labels
            .get_or_insert_default()
            .insert("owner".into(), "alice".into());
        new.metadata
            .annotations
            .get_or_insert_default()
            .insert("gatehouse.dev/revoke".into(), "done".into());
        assert_eq!(check(Some(&old), &new), Ok(()));
        // On create, only Gatehouse's own finalizer (which admission adds) is accepted.
        assert_eq!(check(None, &request()), Ok(()));
        let mut other = request();
        other.metadata.finalizers = Some(vec!["mine/keep".into()]);
        assert!(
            check(None, &other)
                .unwrap_err()
                .contains("metadata.finalizers")
        );
    }

    #[test]
    fn lifecycle_and_gatehouse_metadata_are_refused_naming_the_field() {
        let old = request();
        type Edit = fn(&mut AccessRequest);
        let cases: [(Edit, &str); 6] = [
            (
                |r| {
                    r.metadata.owner_references = Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        name: "gone".into(),
                        uid: "dangling".into(),
                        ..OwnerReference::default()
                    }])
                },
                "metadata.ownerReferences",
            ),
            (|r| r.metadata.finalizers = None, "metadata.finalizers"),
            (
                |r| {
                    r.metadata
                        .finalizers
                        .get_or_insert_default()
                        .push("mine/keep".into())
                },
                "metadata.finalizers",
            ),
            (
                |r| {
                    r.metadata
                        .labels
                        .get_or_insert_default()
                        .insert("gatehouse.dev/phase".into(), "Issued".into());
                },
                "metadata.labels with prefix gatehouse.dev/",
            ),
            (
                |r| {
                    r.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert("gatehouse.dev/approved-by".into(), "bob".into());
                },
                "metadata.annotations[gatehouse.dev/approved-by]",
            ),
            (
                |r| {
                    r.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert("pad".into(), "x".repeat(260 * 1024));
                },
                "may hold at most 32768 bytes",
            ),
        ];
        for (edit, rule) in cases {
            let mut new = old.clone();
            edit(&mut new);
            let message = check(Some(&old), &new).unwrap_err();
            assert!(message.contains(rule), "{rule}: {message}");
            assert!(message.contains("AccessRequest team/r1"), "{message}");
        }
    }

    #[test]
    fn an_object_already_over_budget_may_shrink() {
        let mut old = request();
        old.metadata
            .annotations
            .get_or_insert_default()
            .insert("pad".into(), "x".repeat(40 * 1024));
        let mut new = old.clone();
        new.metadata
            .annotations
            .get_or_insert_default()
            .insert("pad".into(), "x".repeat(35 * 1024));
        assert_eq!(check(Some(&old), &new), Ok(()));
    }
}
