//! What to send for a request now: new channel messages, updates, the requester's DM, webhook
//! events. Pure: the notifier in [`crate::notifier`] does it and records it.
//!
//! In: the request's stage, its policy's `notify` section, the records of what was already
//! delivered (status.notifications, or newer ones in memory) and the requester's Slack id from
//! the identity mapping. Out: the deliveries still missing, each keyed by its record target.

use gatehouse_crds::notify::{NotificationRecord, NotifySpec, WebhookTarget, is_decided};

/// One delivery to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Post a new message with buttons to `channel`.
    Post {
        /// Record key.
        target: String,
        /// Slack conversation id.
        channel: String,
    },
    /// Rewrite the message already posted.
    Update {
        /// Record key.
        target: String,
        /// Conversation of the message.
        channel: String,
        /// Its ts.
        ts: String,
    },
    /// DM the requester.
    DirectMessage {
        /// Record key.
        target: String,
        /// The requester's Slack user id.
        user: String,
    },
    /// POST a signed event to a webhook.
    Webhook {
        /// Record key.
        target: String,
        /// The policy's webhook target.
        webhook: WebhookTarget,
    },
}

impl Delivery {
    /// The record key this delivery fills.
    pub fn target(&self) -> &str {
        match self {
            Self::Post { target, .. }
            | Self::Update { target, .. }
            | Self::DirectMessage { target, .. }
            | Self::Webhook { target, .. } => target,
        }
    }
}

/// Record key of a Slack channel message.
pub fn slack_target(channel: &str) -> String {
    format!("slack:{channel}")
}

/// Record key of the requester's DM.
pub fn dm_target(user: &str) -> String {
    format!("dm:{user}")
}

/// Record key of a webhook.
pub fn webhook_target(name: &str) -> String {
    format!("webhook:{name}")
}

fn record<'a>(records: &'a [NotificationRecord], target: &str) -> Option<&'a NotificationRecord> {
    records.iter().find(|r| r.target == target)
}

/// The deliveries missing for a request at `stage`.
///
/// - Nothing before the operator matched a policy (`new`): routing is the policy's.
/// - A channel gets one message (posted while the request is pending or issued; a request
///   first seen already ended is not announced), then an update per later stage.
/// - A channel that is the requester's own DM is skipped: nobody is asked to approve their own
///   request.
/// - The requester is DMed once per decided stage (issued, denied, then revoked or expired).
/// - Each webhook gets one event per stage it has not seen.
pub fn plan(
    stage: &str,
    notify: &NotifySpec,
    records: &[NotificationRecord],
    requester_slack: Option<&str>,
) -> Vec<Delivery> {
    if stage == "new" {
        return Vec::new();
    }
    let ended = is_decided(stage) && stage != "issued";
    let mut out = Vec::new();
    for slack in &notify.slack {
        if requester_slack == Some(slack.channel.as_str()) {
            continue;
        }
        let target = slack_target(&slack.channel);
        match record(records, &target) {
            None if ended => {}
            None => out.push(Delivery::Post {
                target,
                channel: slack.channel.clone(),
            }),
            Some(r) if r.stage == stage => {}
            Some(r) => match (&r.channel, &r.ts) {
                (Some(channel), Some(ts)) => out.push(Delivery::Update {
                    target,
                    channel: channel.clone(),
                    ts: ts.clone(),
                }),
                _ => out.push(Delivery::Post {
                    target,
                    channel: slack.channel.clone(),
                }),
            },
        }
    }
    if let Some(user) = requester_slack
        && is_decided(stage)
        && !notify.slack.is_empty()
    {
        let target = dm_target(user);
        if record(records, &target).is_none_or(|r| r.stage != stage) {
            out.push(Delivery::DirectMessage {
                target,
                user: user.to_owned(),
            });
        }
    }
    for webhook in &notify.webhooks {
        let target = webhook_target(&webhook.name);
        if record(records, &target).is_none_or(|r| r.stage != stage) {
            out.push(Delivery::Webhook {
                target,
                webhook: webhook.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::notify::{SecretKeyRef, SlackTarget};

    fn notify() -> NotifySpec {
        NotifySpec {
            slack: vec![
                SlackTarget {
                    channel: "CAPPROVERS".into(),
                },
                SlackTarget {
                    channel: "UALICE".into(),
                },
            ],
            webhooks: vec![WebhookTarget {
                name: "pager".into(),
                url: "https://hooks.example/x".into(),
                secret_ref: SecretKeyRef {
                    name: "k".into(),
                    key: "hmac-key".into(),
                },
            }],
        }
    }

    fn rec(target: &str, stage: &str, ts: Option<&str>) -> NotificationRecord {
        NotificationRecord {
            target: target.into(),
            stage: stage.into(),
            channel: ts.map(|_| "CAPPROVERS".into()),
            ts: ts.map(str::to_owned),
        }
    }

    fn targets(deliveries: &[Delivery]) -> Vec<&str> {
        deliveries.iter().map(Delivery::target).collect()
    }

    #[test]
    fn table() {
        let n = notify();
        let posted = rec("slack:CAPPROVERS", "pending/0", Some("1.2"));
        let hooked = rec("webhook:pager", "pending/0", None);
        type Case<'a> = (
            &'a str,
            Vec<NotificationRecord>,
            Option<&'a str>,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            // No policy yet: nothing.
            ("new", vec![], Some("UALICE"), vec![]),
            // First sight: post (never to the requester's own DM) and the webhook.
            (
                "pending/0",
                vec![],
                Some("UALICE"),
                vec!["slack:CAPPROVERS", "webhook:pager"],
            ),
            // Without a mapped requester the user-id channel is just a channel.
            (
                "pending/0",
                vec![],
                None,
                vec!["slack:CAPPROVERS", "slack:UALICE", "webhook:pager"],
            ),
            // Already delivered at this stage: nothing (a restart re-sends nothing).
            (
                "pending/0",
                vec![posted.clone(), hooked.clone()],
                Some("UALICE"),
                vec![],
            ),
            // An approval: update and a webhook event.
            (
                "pending/1",
                vec![posted.clone(), hooked.clone()],
                Some("UALICE"),
                vec!["slack:CAPPROVERS", "webhook:pager"],
            ),
            // Decided: update, DM the requester, webhook.
            (
                "issued",
                vec![posted.clone(), hooked.clone()],
                Some("UALICE"),
                vec!["slack:CAPPROVERS", "dm:UALICE", "webhook:pager"],
            ),
            // First seen already ended: no new channel message, but the webhook hears it.
            ("expired", vec![], None, vec!["webhook:pager"]),
        ];
        for (i, (stage, records, requester, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                targets(&plan(stage, &n, &records, requester)),
                want,
                "case {i}"
            );
        }
        let updates = plan("issued", &n, &[posted], None);
        assert!(matches!(&updates[0], Delivery::Update { ts, .. } if ts == "1.2"));
    }
}
