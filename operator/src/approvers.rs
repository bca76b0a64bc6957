//! Who may approve a request: the users and groups RBAC grants the verb `approve` on its
//! policy. Pure: Roles, ClusterRoles and their bindings (from the operator's watch caches) in,
//! `status.eligibleApprovers` out; the controller does the I/O.
//!
//! A rule grants it when its apiGroups hold `gatehouse.dev` (or `*`), its resources
//! `accesspolicies` (or `*`), its verbs `approve` (or `*`), and its resourceNames are empty or
//! name the policy. A RoleBinding in the request's namespace counts with its Role or a
//! ClusterRole; a ClusterRoleBinding with its ClusterRole. The requester is left out: admission
//! never lets them approve their own request.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use gatehouse_crds::EligibleApprovers;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use kube::{ResourceExt, runtime::reflector::Store};

/// The most users and groups listed (the schema's bound); more sets `truncated`.
pub const MAX_LISTED: usize = 64;

/// The RBAC objects the answer is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Rbac<'a> {
    /// Roles (any namespace; only the request's count).
    pub roles: &'a [Role],
    /// ClusterRoles.
    pub cluster_roles: &'a [ClusterRole],
    /// RoleBindings (any namespace; only the request's count).
    pub role_bindings: &'a [RoleBinding],
    /// ClusterRoleBindings.
    pub cluster_role_bindings: &'a [ClusterRoleBinding],
}

fn holds(list: Option<&Vec<String>>, want: &str) -> bool {
    list.is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
}

/// Whether `rule` grants `approve` on `accesspolicies/<policy>` in group gatehouse.dev.
pub fn grants_approve(rule: &PolicyRule, policy: &str) -> bool {
    holds(rule.api_groups.as_ref(), gatehouse_crds::GROUP)
        && holds(rule.resources.as_ref(), "accesspolicies")
        && holds(Some(&rule.verbs), "approve")
        && rule
            .resource_names
            .as_ref()
            .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == policy))
}

fn any_grants(rules: Option<&Vec<PolicyRule>>, policy: &str) -> bool {
    rules.is_some_and(|rules| rules.iter().any(|r| grants_approve(r, policy)))
}

/// The operator's watch caches of RBAC objects, and whether all four have synced (until then,
/// and forever without read access to RBAC, no approvers are published rather than none).
#[derive(Clone)]
pub struct RbacCaches {
    /// Roles.
    pub roles: Store<Role>,
    /// ClusterRoles.
    pub cluster_roles: Store<ClusterRole>,
    /// RoleBindings.
    pub role_bindings: Store<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    /// Set once every store is ready.
    pub ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for RbacCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacCaches")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RbacCaches {
    /// The approvers of a request under `policy` in `namespace`, or None before the caches
    /// have synced.
    pub fn eligible(
        &self,
        namespace: &str,
        policy: &str,
        requester: &str,
    ) -> Option<EligibleApprovers> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let roles: Vec<Role> = owned(self.roles.state());
        let cluster_roles: Vec<ClusterRole> = owned(self.cluster_roles.state());
        let role_bindings: Vec<RoleBinding> = owned(self.role_bindings.state());
        let cluster_role_bindings: Vec<ClusterRoleBinding> =
            owned(self.cluster_role_bindings.state());
        Some(eligible(
            Rbac {
                roles: &roles,
                cluster_roles: &cluster_roles,
                role_bindings: &role_bindings,
                cluster_role_bindings: &cluster_role_bindings,
            },
            namespace,
            policy,
            requester,
        ))
    }

    /// Wait for every store, then mark the caches ready.
    pub async fn mark_ready_when_synced(self) {
        let synced = self.roles.wait_until_ready().await.is_ok()
            && self.cluster_roles.wait_until_ready().await.is_ok()
            && self.role_bindings.wait_until_ready().await.is_ok()
            && self.cluster_role_bindings.wait_until_ready().await.is_ok();
        if synced {
            self.ready.store(true, Ordering::Release);
        }
    }
}

fn owned<K: Clone>(objects: Vec<Arc<K>>) -> Vec<K> {
    objects.into_iter().map(|o| (*o).clone()).collect()
}

/// The users and groups that may approve under `policy` in `namespace`, minus `requester`.
pub fn eligible(
    rbac: Rbac<'_>,
    namespace: &str,
    policy: &str,
    requester: &str,
) -> EligibleApprovers {
    let cluster_role_grants = |name: &str| {
        rbac.cluster_roles
            .iter()
            .any(|c| c.name_any() == name && any_grants(c.rules.as_ref(), policy))
    };
    let role_grants = |name: &str| {
        rbac.roles.iter().any(|r| {
            r.name_any() == name
                && r.namespace().as_deref() == Some(namespace)
                && any_grants(r.rules.as_ref(), policy)
        })
    };
    let mut subjects: Vec<(&Subject, String)> = Vec::new();
    for binding in rbac.role_bindings {
        let binding_ns = binding.namespace().unwrap_or_default();
        if binding_ns != namespace {
            continue;
        }
        let granted = match binding.role_ref.kind.as_str() {
            "Role" => role_grants(&binding.role_ref.name),
            "ClusterRole" => cluster_role_grants(&binding.role_ref.name),
            _ => false,
        };
        if granted {
            subjects.extend(
                binding
                    .subjects
                    .iter()
                    .flatten()
                    .map(|s| (s, binding_ns.clone())),
            );
        }
    }
    for binding in rbac.cluster_role_bindings {
        if binding.role_ref.kind == "ClusterRole" && cluster_role_grants(&binding.role_ref.name) {
            subjects.extend(
                binding
                    .subjects
                    .iter()
                    .flatten()
                    .map(|s| (s, String::new())),
            );
        }
    }
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for (subject, binding_ns) in subjects {
        match subject.kind.as_str() {
            "User" => {
                users.insert(subject.name.clone());
            }
            "Group" => {
                groups.insert(subject.name.clone());
            }
            "ServiceAccount" => {
                let ns = subject.namespace.clone().unwrap_or(binding_ns);
                users.insert(format!("system:serviceaccount:{ns}:{}", subject.name));
            }
            _ => {}
        }
    }
    users.remove(requester);
    let truncated = users.len() > MAX_LISTED || groups.len() > MAX_LISTED;
    EligibleApprovers {
        users: users.into_iter().take(MAX_LISTED).collect(),
        groups: groups.into_iter().take(MAX_LISTED).collect(),
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(
        groups: &[&str],
        resources: &[&str],
        verbs: &[&str],
        names: &[&str],
    ) -> serde_json::Value {
        json!({"apiGroups": groups, "resources": resources, "verbs": verbs, "resourceNames": names})
    }

    fn role(ns: &str, name: &str, rules: Vec<serde_json::Value>) -> Role {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "rules": rules}))
            .unwrap()
    }

    fn cluster_role(name: &str, rules: Vec<serde_json::Value>) -> ClusterRole {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
    }

    fn binding(ns: &str, kind: &str, role: &str, subjects: serde_json::Value) -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{role}-binding"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": subjects,
        }))
        .unwrap()
    }

    fn cluster_binding(role: &str, subjects: serde_json::Value) -> ClusterRoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{role}-binding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        }))
        .unwrap()
    }

    #[test]
    fn rules_grant_approve_only_on_the_named_policy_group_and_verb() {
        let cases = [
            (
                rule(&["gatehouse.dev"], &["accesspolicies"], &["approve"], &[]),
                true,
            ),
            (
                rule(
                    &["gatehouse.dev"],
                    &["accesspolicies"],
                    &["approve"],
                    &["oncall"],
                ),
                true,
            ),
            (
                rule(
                    &["gatehouse.dev"],
                    &["accesspolicies"],
                    &["approve"],
                    &["other"],
                ),
                false,
            ),
            (rule(&["*"], &["*"], &["*"], &[]), true),
            (
                rule(
                    &["gatehouse.dev"],
                    &["accesspolicies"],
                    &["get", "list"],
                    &[],
                ),
                false,
            ),
            (
                rule(&["gatehouse.dev"], &["accessrequests"], &["approve"], &[]),
                false,
            ),
            (
                rule(&["example.com"], &["accesspolicies"], &["approve"], &[]),
                false,
            ),
        ];
        for (value, want) in cases {
            let parsed: PolicyRule = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(grants_approve(&parsed, "oncall"), want, "{value}");
        }
    }

    #[test]
    fn approvers_come_from_bindings_in_the_namespace_and_cluster_wide() {
        let approve = |names: &[&str]| {
            vec![rule(
                &["gatehouse.dev"],
                &["accesspolicies"],
                &["approve"],
                names,
            )]
        };
        let roles = [
            role("team", "oncall-approver", approve(&["oncall"])),
            role("other", "oncall-approver", approve(&[])),
            role(
                "team",
                "reader",
                vec![rule(&["gatehouse.dev"], &["accesspolicies"], &["get"], &[])],
            ),
        ];
        let cluster_roles = [
            cluster_role("gatehouse-approver", approve(&[])),
            cluster_role("dba", approve(&["dba"])),
        ];
        let role_bindings = [
            binding(
                "team",
                "Role",
                "oncall-approver",
                json!([{"kind": "Group", "name": "sre-leads"}, {"kind": "User", "name": "alice"}]),
            ),
            binding(
                "team",
                "Role",
                "reader",
                json!([{"kind": "User", "name": "reader"}]),
            ),
            binding(
                "team",
                "ClusterRole",
                "dba",
                json!([{"kind": "Group", "name": "dba-leads"}]),
            ),
            binding(
                "other",
                "Role",
                "oncall-approver",
                json!([{"kind": "User", "name": "elsewhere"}]),
            ),
            binding(
                "team",
                "ClusterRole",
                "gatehouse-approver",
                json!([{"kind": "ServiceAccount", "name": "bot"}]),
            ),
        ];
        let cluster_role_bindings = [cluster_binding(
            "gatehouse-approver",
            json!([{"kind": "User", "name": "carol"}]),
        )];
        let rbac = Rbac {
            roles: &roles,
            cluster_roles: &cluster_roles,
            role_bindings: &role_bindings,
            cluster_role_bindings: &cluster_role_bindings,
        };
        let got = eligible(rbac, "team", "oncall", "alice");
        assert_eq!(got.groups, ["sre-leads"]);
        assert_eq!(got.users, ["carol", "system:serviceaccount:team:bot"]);
        assert!(!got.truncated);
        let dba = eligible(rbac, "team", "dba", "nobody");
        assert_eq!(dba.groups, ["dba-leads"]);
        assert_eq!(dba.users, ["carol", "system:serviceaccount:team:bot"]);
    }

    #[test]
    fn the_lists_are_bounded() {
        let subjects: Vec<_> = (0..100)
            .map(|i| json!({"kind": "User", "name": format!("u{i:03}")}))
            .collect();
        let roles = [role(
            "team",
            "r",
            vec![rule(
                &["gatehouse.dev"],
                &["accesspolicies"],
                &["approve"],
                &[],
            )],
        )];
        let bindings = [binding("team", "Role", "r", json!(subjects))];
        let got = eligible(
            Rbac {
                roles: &roles,
                cluster_roles: &[],
                role_bindings: &bindings,
                cluster_role_bindings: &[],
            },
            "team",
            "oncall",
            "x",
        );
        assert_eq!(got.users.len(), MAX_LISTED);
        assert!(got.truncated);
    }
}
