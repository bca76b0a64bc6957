//! Generic webhooks: one signed JSON POST per request transition, for PagerDuty, Teams or a
//! custom receiver.
//!
//! In: deliveries the notifier plans ([`crate::plan::Delivery::Webhook`]), each with its event
//! body, and the HMAC key from a Secret in the bridge's namespace (the only Secrets it may
//! read). Out: `POST url` with `Content-Type: application/json`, `X-Gatehouse-Timestamp`
//! (Unix seconds), `X-Gatehouse-Event-Id` (`<request uid>/<stage>`) and
//! `X-Gatehouse-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`; a 2xx answer
//! is delivered. Up to [`ATTEMPTS`] tries with doubling backoff from 1 s; then the event is
//! dropped and logged. Events are sent one at a time, in order. A key Secret must name the
//! namespaces it signs for (annotation `gatehouse.dev/webhook-namespaces`, `*` for all), so one
//! team's policy cannot have events signed with another team's key; otherwise the event is
//! dropped at once. The queue is bounded ([`crate::queue::QUEUE_CAPACITY`]): when full, the event is
//! planned again on a later pass. Delivered or dropped, the stage is recorded on the request,
//! so a restart sends nothing twice.

use std::{sync::Arc, time::Duration};

use gatehouse_crds::{
    AccessRequest,
    contract::bridge,
    notify::{NotificationRecord, WebhookTarget},
};
use http::{Method, Request, header};
use http_body_util::Full;
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};

use crate::{
    context::Context,
    error::{Error, Result},
    message::View,
    queue::Job,
    signature::sign_webhook,
};

/// Tries per event.
pub const ATTEMPTS: u32 = 6;

/// The event body for `request` at `stage`.
pub fn event(request: &AccessRequest, view: &View, time: &str) -> Value {
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let phase = request
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"));
    json!({
        "type": "gatehouse.accessrequest.transition",
        "id": format!("{uid}/{}", view.stage),
        "time": time,
        "stage": view.stage,
        "phase": phase,
        "message": view.status_message,
        "request": {
            "namespace": view.namespace,
            "name": view.name,
            "uid": uid,
            "requester": view.requester,
            "hostGroup": request.spec.target.host_group,
            "host": request.spec.target.host,
            "login": view.login,
            "duration": view.duration,
            "reason": view.reason,
            "policy": view.policy,
        },
        "approvals": {"required": view.required, "received": view.approvers, "eligible": view.eligible},
    })
}

/// Whether a key Secret annotated `allowed` (see
/// [`bridge::WEBHOOK_NAMESPACES_ANNOTATION`]) may sign events of `namespace`'s requests. Pure.
pub fn lends_to(allowed: Option<&str>, namespace: &str) -> bool {
    allowed.is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|n| n == "*" || n == namespace)
    })
}

async fn key(ctx: &Context, webhook: &WebhookTarget, namespace: &str) -> Result<Vec<u8>> {
    let name = &webhook.secret_ref.name;
    let failed = |message: String| Error::ReadWebhookKey {
        name: name.clone(),
        message,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let secret = api.get(name).await.map_err(|e| failed(e.to_string()))?;
    let allowed = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(bridge::WEBHOOK_NAMESPACES_ANNOTATION))
        .map(String::as_str);
    if !lends_to(allowed, namespace) {
        return Err(failed(format!(
            "its annotation {} does not list namespace {namespace:?}",
            bridge::WEBHOOK_NAMESPACES_ANNOTATION
        )));
    }
    let key = secret
        .data
        .and_then(|mut d| d.remove(&webhook.secret_ref.key))
        .ok_or_else(|| failed(format!("no key {:?}", webhook.secret_ref.key)))?;
    if key.0.is_empty() {
        return Err(failed("the key is empty".to_owned()));
    }
    Ok(key.0)
}

async fn attempt(ctx: &Context, job: &Job, key: &[u8]) -> Result<()> {
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri(&job.webhook.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "gatehouse-bridge")
        .header(bridge::TIMESTAMP_HEADER, &timestamp)
        .header(bridge::EVENT_ID_HEADER, &job.id)
        .header(
            bridge::SIGNATURE_HEADER,
            sign_webhook(key, &timestamp, &job.body),
        )
        .body(Full::new(Bytes::from(job.body.clone())))
        .map_err(|e| Error::Http {
            what: job.webhook.url.clone(),
            message: e.to_string(),
        })?;
    let response = ctx.http.send(&job.webhook.url, request).await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(Error::Http {
            what: job.webhook.url.clone(),
            message: format!("HTTP {}", response.status()),
        })
    }
}

fn count(ctx: &Context, outcome: &str) {
    ctx.metrics
        .webhook_deliveries_total
        .with_label_values(&[outcome])
        .inc();
}

async fn deliver(ctx: &Context, job: &Job) -> bool {
    let namespace = job
        .request
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    // A key that is missing or not lent to this namespace is configuration, not an outage:
    // the event is dropped at once rather than delaying every other receiver's.
    let key = match key(ctx, &job.webhook, namespace).await {
        Ok(key) => key,
        Err(error) => {
            tracing::error!(%error, event = %job.id, webhook = %job.webhook.name, "webhook event not sent");
            count(ctx, "no_key");
            return false;
        }
    };
    let mut backoff = Duration::from_secs(1);
    for n in 1..=ATTEMPTS {
        match attempt(ctx, job, &key).await {
            Ok(()) => {
                count(ctx, "delivered");
                return true;
            }
            Err(error) if n < ATTEMPTS => {
                count(ctx, "retried");
                tracing::warn!(%error, event = %job.id, webhook = %job.webhook.name, attempt = n, "webhook delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(error) => {
                tracing::error!(%error, event = %job.id, webhook = %job.webhook.name, "webhook delivery failed {ATTEMPTS} times; dropping the event");
                count(ctx, "dropped");
            }
        }
    }
    false
}

/// Deliver queued events, one at a time, until the queue closes.
pub async fn run(ctx: Arc<Context>) {
    let Some(mut receiver) = ctx.webhooks.take_receiver() else {
        return;
    };
    while let Some(job) = receiver.recv().await {
        let delivered = deliver(&ctx, &job).await;
        let record = NotificationRecord {
            target: job.target.clone(),
            stage: job.stage.clone(),
            channel: None,
            ts: None,
        };
        if let Err(error) = ctx.records.set(&ctx.client, &job.request, record).await {
            tracing::warn!(%error, event = %job.id, delivered, "recording the webhook delivery failed");
        }
        ctx.webhooks.done(&job);
    }
}

#[cfg(test)]
mod tests {
    use super::lends_to;

    #[test]
    fn a_key_signs_only_for_the_namespaces_it_names() {
        assert!(lends_to(Some("*"), "team"));
        assert!(lends_to(Some("a, team ,b"), "team"));
        assert!(!lends_to(Some("a,b"), "team"));
        assert!(!lends_to(Some(""), "team"));
        assert!(!lends_to(None, "team"));
        assert!(!lends_to(Some("team-2"), "team"));
    }
}
