//! AccessPolicy: who may get which logins on which HostGroups, for how long, with how many
//! approvals, and with which certificate and recording options.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;

/// Who may get what. An AccessRequest is governed by an AccessPolicy in its namespace whose
/// subjects include the requester, whose hostSelector selects the target HostGroup and whose
/// logins include the requested login. Approving requests under a policy is the RBAC verb
/// `approve` on `accesspolicies` (optionally limited with resourceNames).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    namespaced,
    status = "AccessPolicyStatus",
    shortname = "ap",
    category = "gatehouse",
    derive = "PartialEq",
    doc = "AccessPolicy says who (subjects) may get which unix logins on which HostGroups (hostSelector), for how long (maxDuration), after how many approvals, and with which certificate and recording options. Approving requests under a policy is the RBAC verb `approve` on resource `accesspolicies` in group gatehouse.dev.",
    printcolumn = r#"{"name": "Logins", "type": "string", "jsonPath": ".spec.logins"}"#,
    printcolumn = r#"{"name": "Max Duration", "type": "string", "jsonPath": ".spec.maxDuration"}"#,
    printcolumn = r#"{"name": "Approvals", "type": "integer", "jsonPath": ".spec.approval.required"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::FORWARDS_RECORDED_RULE).message(rules::FORWARDS_RECORDED_MESSAGE).field_path(".certificate.extensions").optional_old_self(true))]
pub struct AccessPolicySpec {
    /// Who this policy applies to: users, groups and ServiceAccounts as the Kubernetes API server
    /// authenticates them. A requester matches if any subject matches.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<Subject>,

    /// Which HostGroups (in this namespace) the policy covers, by their labels. All terms must
    /// match (AND). An empty selector (`{}`) selects every HostGroup in the namespace.
    pub host_selector: LabelSelector,

    /// Unix logins the policy allows on the selected hosts (for example `ubuntu`, `postgres`).
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 32), pattern(rules::LOGIN_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub logins: Vec<String>,

    /// The longest access a request under this policy is granted, as a duration from 5m to 24h
    /// (for example `30m`, `8h`). Longer requests are granted this much.
    #[serde(default = "default_max_duration")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(rules::DURATION_BOUNDS_RULE).message(rules::DURATION_BOUNDS_MESSAGE))]
    pub max_duration: String,

    /// How requests under this policy are approved.
    #[serde(default)]
    pub approval: ApprovalPolicy,

    /// Whether requests must give a `spec.reason`. Requests without one are denied.
    #[serde(default)]
    pub require_reason: bool,

    /// What the issued certificates permit.
    #[serde(default)]
    pub certificate: CertificateOptions,

    /// How sessions under this policy are recorded.
    #[serde(default)]
    pub recording: RecordingOptions,

    /// Who hears about requests under this policy (Slack channels, webhooks), through the
    /// approval bridge (`gatehouse-bridge`). Absent: nobody is notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::notify::NotifySpec>,

    /// Limits on the sessions themselves, enforced by the proxy.
    #[serde(default, skip_serializing_if = "SessionOptions::is_empty")]
    pub session: SessionOptions,

    /// Open AccessRequests (not Denied, Expired, Revoked or Failed, and not being deleted) one
    /// requester may have under this policy in its namespace, 1 to 1000; admission refuses the
    /// next one. Unlimited when unset. Counted from the operator's watch cache, so simultaneous
    /// creates may overshoot by what the cache has not seen yet; a ResourceQuota on
    /// `count/accessrequests.gatehouse.dev` is the namespace's hard cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_open_requests_per_requester: Option<i32>,
}

impl AccessPolicySpec {
    /// Whether certificates under this policy would grant port forwards that the proxy then
    /// refuses (`permit-port-forwarding` under `recording.required` without
    /// `recording.allowForwards`): what [`rules::FORWARDS_RECORDED_RULE`] refuses.
    pub fn grants_unrecordable_forwards(&self) -> bool {
        self.certificate
            .extensions
            .contains(&CertificateExtension::PermitPortForwarding)
            && self.recording.required
            && !self.recording.allow_forwards
    }
}

fn default_max_duration() -> String {
    "1h".to_owned()
}

/// One subject of a policy, as the Kubernetes API server names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::SUBJECT_NAMESPACE_RULE).message(rules::SUBJECT_NAMESPACE_MESSAGE))]
pub struct Subject {
    /// Kind of subject: `User`, `Group` or `ServiceAccount`.
    pub kind: SubjectKind,
    /// The user name, group name or ServiceAccount name, exactly as the API server
    /// authenticates it (for example `alice`, `sre-leads`, `deployer`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of a ServiceAccount subject; defaults to the policy's namespace. Only valid
    /// for kind `ServiceAccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(rules::DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// Kinds of policy subjects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    /// A user name from the API server's authentication (certificate CN, OIDC claim, token).
    User,
    /// A group from the API server's authentication.
    Group,
    /// A Kubernetes ServiceAccount (authenticates as `system:serviceaccount:<ns>:<name>`).
    ServiceAccount,
}

/// How requests are approved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicy {
    /// Number of distinct approvers required, none of them the requester. `0` approves
    /// requests at once (auto-approve); `2` is four-eyes.
    #[serde(default = "default_required_approvals")]
    #[schemars(range(min = 0, max = 5))]
    pub required: i32,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required: default_required_approvals(),
        }
    }
}

fn default_required_approvals() -> i32 {
    1
}

/// Options placed in issued OpenSSH certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateOptions {
    /// OpenSSH certificate extensions granted (each a permission). Default: `permit-pty` only.
    #[serde(default = "default_extensions")]
    #[schemars(length(max = 5))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub extensions: Vec<CertificateExtension>,

    /// If set, the only command the certificate may run (OpenSSH critical option
    /// `force-command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub force_command: Option<String>,

    /// If set, the addresses the certificate may be used from (OpenSSH critical option
    /// `source-address`): IP addresses or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new(rules::SOURCE_ADDRESSES_RULE).message(rules::SOURCE_ADDRESS_MESSAGE))]
    pub source_addresses: Vec<String>,
}

impl Default for CertificateOptions {
    fn default() -> Self {
        Self {
            extensions: default_extensions(),
            force_command: None,
            source_addresses: Vec::new(),
        }
    }
}

fn default_extensions() -> Vec<CertificateExtension> {
    vec![CertificateExtension::PermitPty]
}

/// OpenSSH user-certificate extensions Gatehouse may grant.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum CertificateExtension {
    /// Allocate a terminal (interactive shells).
    #[serde(rename = "permit-pty")]
    PermitPty,
    /// Local and remote port forwarding.
    #[serde(rename = "permit-port-forwarding")]
    PermitPortForwarding,
    /// ssh-agent forwarding.
    #[serde(rename = "permit-agent-forwarding")]
    PermitAgentForwarding,
    /// X11 forwarding.
    #[serde(rename = "permit-X11-forwarding")]
    PermitX11Forwarding,
    /// Running `~/.ssh/rc` on login.
    #[serde(rename = "permit-user-rc")]
    PermitUserRc,
}

impl CertificateExtension {
    /// The extension's name in an OpenSSH certificate.
    pub fn openssh_name(self) -> &'static str {
        match self {
            Self::PermitPty => "permit-pty",
            Self::PermitPortForwarding => "permit-port-forwarding",
            Self::PermitAgentForwarding => "permit-agent-forwarding",
            Self::PermitX11Forwarding => "permit-X11-forwarding",
            Self::PermitUserRc => "permit-user-rc",
        }
    }
}

/// How sessions are recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingOptions {
    /// Record what the engineer types (asciinema `i` events) as well as what the host prints.
    /// Off by default: input can contain passwords typed at prompts.
    #[serde(default)]
    pub record_input: bool,

    /// Fail closed: refuse or end a session when it cannot be recorded. On by default.
    #[serde(default = "default_true")]
    pub required: bool,

    /// Allow port forwards (`ssh -L`/`-D`/`-W`) although `required` is on. A forward's content
    /// is not recorded, so under `required` they are refused unless this is set; the
    /// certificate must also grant `permit-port-forwarding`. Off by default.
    #[serde(default)]
    pub allow_forwards: bool,

    /// Keep the content of SFTP file transfers (`sftp`, `scp`) in the recording: the bytes
    /// written and read through each file, up to a bound per file, as `"m"` events next to the
    /// audit events. Off when unset: transfers are audited (paths, flags, byte counts) without
    /// their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_content: Option<FileContentOptions>,
}

impl Default for RecordingOptions {
    fn default() -> Self {
        Self {
            record_input: false,
            required: true,
            allow_forwards: false,
            file_content: None,
        }
    }
}

/// How much SFTP file content a recording keeps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileContentOptions {
    /// Bytes kept per file and direction (written, read), from 1 to 16777216 (16 MiB); the rest
    /// of a larger file is counted, not kept. Default 1048576 (1 MiB). Everything kept counts
    /// against the session's spool budget (`--spool-max-session-bytes`).
    #[serde(default = "default_max_bytes_per_file")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub max_bytes_per_file: i64,
}

impl FileContentOptions {
    /// The largest `maxBytesPerFile` (16 MiB), which the schema enforces.
    pub const MAX_BYTES_PER_FILE: i64 = 16_777_216;
}

impl Default for FileContentOptions {
    fn default() -> Self {
        Self {
            max_bytes_per_file: default_max_bytes_per_file(),
        }
    }
}

fn default_max_bytes_per_file() -> i64 {
    1 << 20
}

fn default_true() -> bool {
    true
}

/// Limits on proxied sessions; each ends the session with a message naming the rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionOptions {
    /// End a session when nothing crossed it (no input, no output) for this long, from 5s to
    /// 24h (like 15m). Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(rules::IDLE_TIMEOUT_RULE).message(rules::IDLE_TIMEOUT_MESSAGE))]
    pub idle_timeout: Option<String>,

    /// Session channels one request may have open at once (per proxy replica), 1 to 100.
    /// Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_sessions: Option<i32>,
}

impl SessionOptions {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.idle_timeout.is_none() && self.max_sessions.is_none()
    }
}

/// Observed state of an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// Current conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrecordable_forwards_are_port_forwarding_under_required_recording_without_allow() {
        use CertificateExtension::{PermitPortForwarding as Fwd, PermitPty as Pty};
        // (extensions, required, allowForwards, refused)
        for (extensions, required, allow, refused) in [
            (vec![Pty], true, false, false),
            (vec![Pty, Fwd], true, false, true),
            (vec![Fwd], true, false, true),
            (vec![Pty, Fwd], true, true, false),
            (vec![Pty, Fwd], false, false, false),
            (vec![Pty, Fwd], false, true, false),
            (vec![], true, false, false),
        ] {
            let spec = AccessPolicySpec {
                subjects: vec![],
                host_selector: LabelSelector::default(),
                logins: vec!["ubuntu".into()],
                max_duration: default_max_duration(),
                approval: ApprovalPolicy::default(),
                require_reason: false,
                certificate: CertificateOptions {
                    extensions: extensions.clone(),
                    ..CertificateOptions::default()
                },
                recording: RecordingOptions {
                    required,
                    allow_forwards: allow,
                    ..RecordingOptions::default()
                },
                notify: None,
                session: SessionOptions::default(),
                max_open_requests_per_requester: None,
            };
            assert_eq!(
                spec.grants_unrecordable_forwards(),
                refused,
                "{extensions:?} required={required} allowForwards={allow}"
            );
        }
    }
}
