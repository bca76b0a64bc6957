//! Notification routing on AccessPolicies (`spec.notify`) and the notification records the
//! approval bridge keeps on AccessRequests (`status.notifications`).
//!
//! Data comes from GitOps (the policy's `notify` section: Slack channels and webhook targets)
//! and from the bridge (`gatehouse-bridge`), which writes one record per target into the
//! request's status with its own field manager, so a restarted bridge knows what it already
//! sent. Pure types and helpers; the bridge does the I/O.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Who hears about requests governed by this policy. Delivery never blocks approvals: a Slack
/// or webhook outage delays notifications, never `kubectl annotate`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Slack conversations to post each request to, with Approve/Deny buttons; the message is
    /// updated as the request moves (each approval, Issued, Denied, Revoked, Expired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub slack: Vec<SlackTarget>,

    /// HTTPS endpoints that receive a signed JSON POST for every transition of a request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub webhooks: Vec<WebhookTarget>,
}

/// One Slack conversation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackTarget {
    /// The conversation id (`C0123ABCD` for a channel; a user id `U…` posts to that user's DM
    /// with the bot). Ids, not names: a renamed channel keeps working.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Z0-9]+$"))]
    pub channel: String,
}

/// One generic webhook receiver (PagerDuty, Teams, a custom service).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTarget {
    /// A name for this target, unique within the policy (it keys the delivery record).
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Where to POST (`https://…`; `http://` only for receivers on a trusted network).
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub url: String,

    /// The HMAC-SHA256 key: a Secret in the bridge's own namespace, one of those the chart's
    /// `bridge.webhookSecrets` lets it read (the bridge can read no other Secret).
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the bridge's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The data key holding the HMAC key.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "hmac-key".to_owned()
}

/// What the bridge last delivered to one target for a request. Written by the bridge
/// (server-side apply, field manager `gatehouse-bridge`), keyed by `target`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// `slack:<channel>` (the channel message), `dm:<slack user>` (the requester's DM) or
    /// `webhook:<name>`.
    #[schemars(length(min = 1, max = 128))]
    pub target: String,
    /// The stage last delivered (see [`stage`]).
    #[schemars(length(min = 1, max = 64))]
    pub stage: String,
    /// Slack: the conversation the message is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub channel: Option<String>,
    /// Slack: the message's `ts`, which `chat.update` needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub ts: Option<String>,
}

/// The most records a request keeps: one per Slack channel, webhook and the requester's DM.
pub const MAX_RECORDS: usize = 17;

/// The stage of a request as notifications see it: `pending/<approvals>` while waiting (so each
/// approval is a transition), else the phase in lower case (`issued`, `denied`, `revoked`,
/// `expired`, `failed`); `new` before the operator has looked at it.
pub fn stage(status: Option<&crate::AccessRequestStatus>) -> String {
    let Some(status) = status else {
        return "new".to_owned();
    };
    match status.phase {
        None => "new".to_owned(),
        Some(crate::Phase::Pending) => format!("pending/{}", status.approvals.len()),
        Some(phase) => format!("{phase:?}").to_lowercase(),
    }
}

/// Whether a stage is final (a decision was taken or access ended).
pub fn is_decided(stage: &str) -> bool {
    !(stage == "new" || stage.starts_with("pending/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccessRequestStatus, Phase};

    #[test]
    fn stages_count_approvals_and_name_phases() {
        assert_eq!(stage(None), "new");
        let mut status = AccessRequestStatus {
            phase: Some(Phase::Pending),
            ..AccessRequestStatus::default()
        };
        assert_eq!(stage(Some(&status)), "pending/0");
        assert!(!is_decided("pending/0"));
        status.phase = Some(Phase::Issued);
        assert_eq!(stage(Some(&status)), "issued");
        assert!(is_decided("issued"));
        status.phase = Some(Phase::Revoked);
        assert_eq!(stage(Some(&status)), "revoked");
        assert!(!is_decided("new"));
    }
}
