//! The notifier: on every watch change (and every 10 s, for retries) it compares each
//! request's stage with what was delivered and sends what is missing — channel messages and
//! their updates, the requester's DM, webhook events — recording each delivery on the request.
//!
//! In: the AccessRequest and AccessPolicy watch caches, the identity mapping, the records.
//! Out: Slack Web API calls, webhook jobs, `status.notifications` writes. A failure is logged
//! and retried on the next pass; it never touches the request itself, so approvals by kubectl
//! never wait for Slack.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_crds::{
    AccessPolicy, AccessRequest,
    notify::{self, NotificationRecord},
};
use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::{
    context::Context,
    error::{Error, Result},
    message::{self, View},
    plan::{Delivery, plan},
    queue::Job,
    webhooks,
};

/// How often a pass runs without a watch change (retries of failed deliveries).
pub const RESYNC: Duration = Duration::from_secs(10);

/// The longest pause a `Retry-After` from Slack can impose.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(300);

/// Run passes forever.
pub async fn run(ctx: Arc<Context>) {
    let mut slack_paused_until = None;
    loop {
        tokio::select! {
            () = ctx.nudge.notified() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        pass(&ctx, &mut slack_paused_until).await;
    }
}

fn policy_of(ctx: &Context, request: &AccessRequest) -> Option<Arc<AccessPolicy>> {
    let name = request.status.as_ref()?.policy.as_deref()?;
    let namespace = request.namespace()?;
    ctx.policies.get(&ObjectRef::new(name).within(&namespace))
}

/// One pass over every watched request. Slack is not called before `slack_paused_until` (set
/// from a 429's `Retry-After`, at most [`MAX_RATE_LIMIT_PAUSE`]), nor again in a pass once it
/// failed; webhooks are planned regardless.
pub async fn pass(ctx: &Context, slack_paused_until: &mut Option<Instant>) {
    let requests = ctx.requests.state();
    let live: HashSet<String> = requests.iter().filter_map(|r| r.uid()).collect();
    ctx.records.retain(&live);
    let mapping = ctx.mapping();
    let mut slack_down = slack_paused_until.is_some_and(|until| Instant::now() < until);
    for request in requests {
        let Some(policy) = policy_of(ctx, &request) else {
            continue;
        };
        let Some(notify) = policy.spec.notify.as_ref() else {
            continue;
        };
        let stage = notify::stage(request.status.as_ref());
        let records = ctx.records.current(&request);
        let requester = request.spec.requester_name();
        let requester_slack = mapping.slack_user_of(requester);
        let view = View::of(&request, Some(&policy));
        for delivery in plan(&stage, notify, &records, requester_slack) {
            if slack_down && !matches!(delivery, Delivery::Webhook { .. }) {
                continue;
            }
            match deliver(ctx, &request, &view, delivery).await {
                Ok(()) => {}
                Err(error @ (Error::Slack { .. } | Error::WriteRecords { .. })) => {
                    tracing::warn!(%error, request = %view.key(), "notification failed; retrying on the next pass");
                }
                Err(
                    error @ Error::RateLimited {
                        retry_after_secs, ..
                    },
                ) => {
                    let pause = Duration::from_secs(retry_after_secs).min(MAX_RATE_LIMIT_PAUSE);
                    tracing::warn!(%error, ?pause, "Slack rate limit; pausing Slack deliveries");
                    *slack_paused_until = Some(Instant::now() + pause);
                    slack_down = true;
                }
                Err(error) => {
                    // Slack unreachable or rate limited: stop calling it until the next pass.
                    tracing::warn!(%error, request = %view.key(), "Slack is unavailable; retrying on the next pass");
                    slack_down = true;
                }
            }
        }
    }
}

async fn deliver(
    ctx: &Context,
    request: &AccessRequest,
    view: &View,
    delivery: Delivery,
) -> Result<()> {
    let record = |target: String, channel: Option<String>, ts: Option<String>| NotificationRecord {
        target,
        stage: view.stage.clone(),
        channel,
        ts,
    };
    if let Delivery::Webhook { target, webhook } = delivery {
        let time = jiff::Timestamp::now().to_string();
        let body = webhooks::event(request, view, &time)
            .to_string()
            .into_bytes();
        let job = Job {
            request: request.clone(),
            id: format!("{}/{}", request.uid().unwrap_or_default(), view.stage),
            target,
            stage: view.stage.clone(),
            webhook,
            body,
        };
        if !ctx.webhooks.enqueue(job) {
            tracing::warn!(request = %view.key(), "webhook queue full; the event is planned again on the next pass");
        }
        return Ok(());
    }
    let Some(slack) = ctx.slack.as_ref() else {
        return Ok(());
    };
    let record = match delivery {
        Delivery::Post { target, channel } => {
            let (channel, ts) = slack
                .post_message(
                    &channel,
                    &message::text(view),
                    Some(&message::blocks(view, None)),
                )
                .await?;
            tracing::info!(request = %view.key(), %channel, %ts, stage = %view.stage, "posted to Slack");
            record(target, Some(channel), Some(ts))
        }
        Delivery::Update {
            target,
            channel,
            ts,
        } => {
            slack
                .update(
                    &channel,
                    &ts,
                    &message::text(view),
                    &message::blocks(view, None),
                )
                .await?;
            tracing::info!(request = %view.key(), %channel, %ts, stage = %view.stage, "updated the Slack message");
            record(target, Some(channel), Some(ts))
        }
        Delivery::DirectMessage { target, user } => {
            let channel = slack.open_dm(&user).await?;
            let (channel, ts) = slack
                .post_message(&channel, &message::dm_text(view), None)
                .await?;
            tracing::info!(request = %view.key(), %user, stage = %view.stage, "told the requester");
            record(target, Some(channel), Some(ts))
        }
        Delivery::Webhook { .. } => return Ok(()),
    };
    ctx.records.set(&ctx.client, request, record).await
}
