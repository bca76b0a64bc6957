//! AccessRequest: one engineer's ask for a login on a HostGroup, its approvals, the certificate
//! issued for it and the sessions it was used for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;

/// One engineer's request for short-lived SSH access. Created with `kubectl apply`, approved
/// with `kubectl annotate … gatehouse.dev/approve=…`; the operator then signs the requester's
/// public key and writes the OpenSSH certificate into `status.certificate`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "AccessRequest",
    plural = "accessrequests",
    namespaced,
    status = "AccessRequestStatus",
    shortname = "ar",
    category = "gatehouse",
    derive = "PartialEq",
    doc = "AccessRequest is one engineer's request for short-lived SSH access to a HostGroup (or one host in it) as one unix login. Its spec is immutable; the requester identity in spec.requester is stamped by the API server's admission. Approve with `kubectl annotate accessrequest NAME gatehouse.dev/approve=\"message\"`; once approved, status.certificate holds the OpenSSH certificate to use with `ssh -i KEY -o CertificateFile=…`.",
    printcolumn = r#"{"name": "Requester", "type": "string", "jsonPath": ".spec.requester.username"}"#,
    printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".spec.target.hostGroup"}"#,
    printcolumn = r#"{"name": "Host", "type": "string", "jsonPath": ".spec.target.host", "priority": 1}"#,
    printcolumn = r#"{"name": "Login", "type": "string", "jsonPath": ".spec.login"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Expires", "type": "string", "jsonPath": ".status.validBefore", "description": "End of the certificate validity (UTC)"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::IMMUTABLE_RULE).message(rules::IMMUTABLE_SPEC_MESSAGE))]
pub struct AccessRequestSpec {
    /// What to access: a HostGroup in this namespace, optionally one host in it.
    pub target: Target,

    /// The unix login to use on the target (for example `ubuntu`). The governing
    /// AccessPolicy must allow it.
    #[schemars(length(min = 1, max = 32), pattern(rules::LOGIN_PATTERN))]
    pub login: String,

    /// How long access is wanted, from 5m to 24h (for example `30m`, `2h`). The operator
    /// grants at most the policy's maxDuration and records what it granted in
    /// `status.grantedDuration`.
    #[serde(default = "default_duration")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(rules::DURATION_BOUNDS_RULE).message(rules::DURATION_BOUNDS_MESSAGE))]
    pub duration: String,

    /// Why access is needed (a ticket, an incident). Shown to approvers and written into the
    /// session recordings. Required when the policy sets requireReason. At most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(rules::NON_BLANK_RULE).message(rules::NON_BLANK_MESSAGE))]
    pub reason: Option<String>,

    /// The requester's OpenSSH public key, one line as in `~/.ssh/id_ed25519.pub`
    /// (ssh-ed25519, ecdsa-sha2-nistp256/384/521 or an sk- security key). The certificate
    /// certifies this key; the private key never leaves the engineer's machine.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new(rules::USER_PUBLIC_KEY_RULE).message(rules::USER_PUBLIC_KEY_MESSAGE))]
    pub public_key: String,

    /// Who asked. Set by the API server's admission from the authenticated user on create
    /// (anything a client sends here is replaced) and never changed afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Requester>,
}

impl AccessRequestSpec {
    /// The requester's user name as admission stamped it; empty before it is stamped.
    pub fn requester_name(&self) -> &str {
        self.requester
            .as_ref()
            .map(|r| r.username.as_str())
            .unwrap_or_default()
    }
}

fn default_duration() -> String {
    "1h".to_owned()
}

/// What an AccessRequest is for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of a HostGroup in the request's namespace.
    #[schemars(length(min = 1, max = 253), pattern(rules::DNS_SUBDOMAIN_PATTERN))]
    pub host_group: String,

    /// One host of that group (its `spec.hosts[].name`). Empty means any host in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(rules::DNS_LABEL_PATTERN))]
    pub host: Option<String>,
}

/// The authenticated identity that created a request, as the API server saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// User name (for ServiceAccounts `system:serviceaccount:<namespace>:<name>`).
    #[schemars(length(min = 1, max = 253))]
    pub username: String,
    /// The user's UID, when the authenticator provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub uid: Option<String>,
    /// Groups the user belonged to when the request was created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub groups: Vec<String>,
}

/// Observed state of an AccessRequest. Written by the operator (and by the proxy for
/// `sessions`) with server-side apply.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestStatus {
    /// Where the request is in its life, mirroring the reason of the `Ready` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Conditions, cert-manager style: `Approved` and `Denied` are only ever True, mutually
    /// exclusive and permanent; `Ready` says whether a usable certificate exists, with reason
    /// `Pending`, `Issued`, `Denied`, `Expired`, `Revoked` or `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Name of the AccessPolicy that governs this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub policy: Option<String>,

    /// The access actually granted: `spec.duration` clamped to the policy's maxDuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub granted_duration: Option<String>,

    /// Who may approve this request while it is Pending: the users and groups that RBAC grants
    /// the verb `approve` on its policy (`accesspolicies/<status.policy>`), as the operator
    /// computed them from Roles, ClusterRoles and their bindings at its last reconcile. The
    /// requester is never listed (admission refuses their own approval). Cleared once the
    /// request leaves Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_approvers: Option<EligibleApprovers>,

    /// Approvals recorded by admission, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub approvals: Vec<Approval>,

    /// The issued OpenSSH user certificate, one `-cert.pub` line. Save it next to the private
    /// key as `id_ed25519-cert.pub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub certificate: Option<String>,

    /// The certificate's serial number (decimal; 64-bit unsigned, so kept as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), pattern(r"^[0-9]+$"))]
    pub serial: Option<String>,

    /// The certificate's key id, naming the request and the requester; target hosts log it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::contract::identity::MAX_KEY_ID_BYTES))]
    pub key_id: Option<String>,

    /// Principals in the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = crate::contract::identity::MAX_PRINCIPAL_BYTES)))]
    pub principals: Vec<String>,

    /// Start of the certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_after: Option<Time>,

    /// End of the certificate's validity; access ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_before: Option<Time>,

    /// Sessions opened with this request through the proxy, oldest first. Bounded, but not a
    /// ring: the first 8 sessions, every live one, the 24 most recent failed ones and the most
    /// recent of the rest are kept (their recordings all stay in storage); `sessionsTotal`
    /// counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub sessions: Vec<SessionRecord>,

    /// What the approval bridge delivered per notification target (Slack message ts, the stage
    /// last sent), so a restarted bridge sends nothing twice. Written by `gatehouse-bridge` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::notify::MAX_RECORDS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["target".into()]))]
    pub notifications: Vec<crate::notify::NotificationRecord>,

    /// How many sessions this request was used for through the proxy, including those no
    /// longer listed in `sessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub sessions_total: Option<i64>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where an AccessRequest is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for approvals.
    Pending,
    /// A certificate was issued and is valid.
    Issued,
    /// Denied by an approver or by policy. Terminal.
    Denied,
    /// The certificate (or the pending request) expired. Terminal.
    Expired,
    /// Revoked by the requester or an approver, or deleted. Terminal.
    Revoked,
    /// Could not be issued (for example a public key the operator could not parse). Terminal.
    Failed,
}

impl Phase {
    /// Whether the request can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Denied | Self::Expired | Self::Revoked | Self::Failed
        )
    }
}

/// The subjects RBAC lets approve a request (see `status.eligibleApprovers`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EligibleApprovers {
    /// User names (ServiceAccounts as `system:serviceaccount:<ns>:<name>`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub users: Vec<String>,
    /// Group names, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub groups: Vec<String>,
    /// Whether more subjects were found than the lists hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One approval, as recorded by admission from the approver's authenticated identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The approver's user name.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// When the approval was given.
    pub time: Time,
    /// The approver's message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// One SSH session opened through the proxy with this request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// Session id, unique per proxy; also in the recording's file name and header.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// Name of the host the session went to.
    #[schemars(length(max = 63))]
    pub host: String,
    /// Unix login used on the host.
    #[schemars(length(max = 32))]
    pub login: String,
    /// When the session started.
    pub start_time: Time,
    /// Which session of the request this is: 1 for the first, counting every session ever
    /// recorded (the highest is `sessionsTotal`). Orders sessions that started in the same
    /// second, which `startTime` cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub number: Option<i64>,
    /// When the session ended; empty while it is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// The program's exit status on the target, once it ended with one (none: still live,
    /// killed by a signal, or cut off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295_i64))]
    pub exit_status: Option<i64>,
    /// The session's recording, once uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recording>,
    /// For a port forward (`ssh -L`, `-D`, `-W`): where it went and how much it carried. A
    /// forward is not a terminal and has no recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardRecord>,
}

/// A port forward through the proxy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardRecord {
    /// `host:port` as the engineer asked for it, seen from the target.
    #[schemars(length(max = 300))]
    pub destination: String,
    /// Bytes from the engineer to the destination (so far, while live).
    #[schemars(range(min = 0))]
    pub bytes_to_target: i64,
    /// Bytes from the destination to the engineer.
    #[schemars(range(min = 0))]
    pub bytes_to_client: i64,
}

/// Where a session recording is stored and how to verify it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// Object key of the asciinema v2 recording in the recording store, like
    /// `recordings/2026-11-22/alice_prod-db-01_<session>.cast`.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// SHA-256 of the uploaded recording, lowercase hex.
    #[schemars(pattern(r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// Size of the recording in bytes.
    #[schemars(range(min = 0))]
    pub bytes: i64,
}
