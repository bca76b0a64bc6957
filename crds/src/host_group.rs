//! HostGroup: a set of SSH targets that policies select by label.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;

/// A set of SSH targets reached through Gatehouse. The HostGroup's labels are its tags
/// (for example `env=prod`, `role=db`, `team=platform`): AccessPolicies select HostGroups by
/// these labels.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "HostGroup",
    plural = "hostgroups",
    namespaced,
    status = "HostGroupStatus",
    shortname = "hg",
    category = "gatehouse",
    derive = "PartialEq",
    doc = "HostGroup is a set of SSH targets. Its labels are the tags AccessPolicies select on (env=prod, role=db, team=platform). Each host is reached through the Gatehouse proxy (mode Proxied) or directly with a Gatehouse certificate (mode Direct); its identity is pinned by host keys or a host CA.",
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"}"#,
    printcolumn = r#"{"name": "Hosts", "type": "integer", "jsonPath": ".status.hostCount"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::HOST_TRUST_RULE).message(rules::HOST_TRUST_MESSAGE))]
pub struct HostGroupSpec {
    /// How engineers reach these hosts. `Proxied` (default): only through the recording
    /// Gatehouse proxy, which authenticates to the hosts with its own short-lived certificates
    /// (hosts trust only the upstream CA). `Direct`: hosts also trust the Gatehouse user CA, so
    /// engineers may connect to them straight from their `ssh` client (not recorded).
    #[serde(default)]
    pub mode: HostGroupMode,

    /// The SSH targets in this group. Host names are unique within the group.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub hosts: Vec<Host>,

    /// OpenSSH public keys of certificate authorities that sign these hosts' host certificates
    /// (`ssh-ed25519 AAAA…` lines). When set, a host presenting a host certificate signed by one
    /// of these keys, naming the host's address or name as a principal, is trusted; pinned
    /// `hostKeys` remain accepted too.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "hostCAKeys")]
    #[schemars(
        length(max = 8),
        inner(length(max = 16384), pattern(rules::HOST_PUBLIC_KEY_PATTERN))
    )]
    pub host_ca_keys: Vec<String>,
}

/// How engineers reach the hosts of a HostGroup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum HostGroupMode {
    /// Only through the Gatehouse proxy, which records every session.
    #[default]
    Proxied,
    /// Directly with the engineer's Gatehouse certificate; the hosts trust the user CA.
    Direct,
}

/// One SSH target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Name of the host inside the group (a DNS label such as `prod-db-01`). Engineers name it
    /// when they connect (`ssh -p 2222 login@prod-db-01@proxy`).
    #[schemars(length(min = 1, max = 63), pattern(rules::DNS_LABEL_PATTERN))]
    pub name: String,

    /// Where the SSH server listens: a DNS name or an IP address, without scheme or port.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(rules::ADDRESS_RULE).message(rules::ADDRESS_MESSAGE))]
    pub address: String,

    /// TCP port of the SSH server.
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The host's OpenSSH public host keys (`ssh-ed25519 AAAA…` lines, as in
    /// `/etc/ssh/ssh_host_ed25519_key.pub`). Gatehouse refuses a host presenting any other key.
    /// Required unless `hostCAKeys` is set on the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(max = 16384), pattern(rules::HOST_PUBLIC_KEY_PATTERN))
    )]
    pub host_keys: Vec<String>,
}

fn default_ssh_port() -> i32 {
    22
}

/// Observed state of a HostGroup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostGroupStatus {
    /// Current conditions. `Ready` is True when the group is valid and usable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Number of hosts in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_count: Option<i32>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// What each host's sshd must accept, written by the operator: per host, per login the
    /// namespace's policies allow on this group, the content of
    /// `AuthorizedPrincipalsFile /etc/ssh/gatehouse_principals/<login>`. Principals name the
    /// namespace, the HostGroup, the host and the login, so a HostGroup elsewhere that points at
    /// the same machine opens nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub hosts: Vec<HostStatus>,
}

/// What one host's sshd must accept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The host's name in `spec.hosts`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Login → the content of its AuthorizedPrincipalsFile on this host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorized_principals: BTreeMap<String, String>,
}
