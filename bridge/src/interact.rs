//! Clicks and modal submissions from Slack, over the HTTPS Request URL or Socket Mode.
//!
//! In (HTTP): `POST /slack/interactions`, `application/x-www-form-urlencoded` with one field
//! `payload`; the signature (`X-Slack-Signature` over `v0:{timestamp}:{raw body}`) is checked
//! over the raw bytes before anything parses them, and a bad or stale one is answered 401 and
//! changes nothing. In (Socket Mode): the same payloads, already acknowledged on the socket.
//! Out: a decision annotation written *as the clicking person* — the bridge's client
//! impersonates the Kubernetes identity the mapping names for that Slack user — so admission
//! and RBAC decide exactly as for `kubectl annotate` (self-approval, the `approve` verb,
//! four-eyes). A Slack user the mapping does not name changes nothing. Refusals are shown under
//! the message. Slack is answered at once; the work runs after, bounded to [`MAX_IN_FLIGHT`].

use std::sync::Arc;

use gatehouse_crds::{
    AccessRequest,
    contract::{annotations, bridge},
};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use gatehouse_runtime::http::{Full, text};

use crate::{
    context::Context,
    mapping::Identity,
    message::{self, View},
    signature::verify_slack,
};

/// Path of the Request URL.
pub const PATH: &str = "/slack/interactions";
/// The largest interaction body accepted (Slack's payloads are a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Clicks being worked on at once; more are acknowledged and dropped with a log line.
pub const MAX_IN_FLIGHT: usize = 32;
/// Connections the Request URL server holds open at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers (and an idle kept-alive connection lives).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Time a whole request may take (body included) before the connection is dropped.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest decision message written (admission's limit is 1024 characters).
const MAX_MESSAGE_CHARS: usize = 1000;

/// The interaction handler's state.
#[derive(Debug, Clone)]
pub struct Interactions {
    ctx: Arc<Context>,
    in_flight: Arc<Semaphore>,
}

/// What a click asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Approve `ns/name`.
    Approve {
        /// Request key.
        key: String,
        /// Slack user.
        user: String,
        /// Message location for notices.
        channel: String,
        /// Message ts.
        ts: String,
    },
    /// Open the deny modal.
    AskDenyReason {
        /// Request key.
        key: String,
        /// Modal trigger.
        trigger_id: String,
        /// Message location.
        channel: String,
        /// Message ts.
        ts: String,
    },
    /// Deny with a reason (modal submitted).
    Deny {
        /// Request key.
        key: String,
        /// Slack user.
        user: String,
        /// The reason typed.
        reason: String,
        /// Message location.
        channel: String,
        /// Message ts.
        ts: String,
    },
    /// Nothing the bridge handles.
    Ignore,
}

fn s(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Read a payload (`block_actions` or `view_submission`). Pure.
pub fn intent(payload: &Value) -> Intent {
    match payload["type"].as_str() {
        Some("block_actions") => {
            let Some(action) = payload["actions"].as_array().and_then(|a| a.first()) else {
                return Intent::Ignore;
            };
            let key = s(&action["value"]);
            let channel = payload["container"]["channel_id"]
                .as_str()
                .map_or_else(|| s(&payload["channel"]["id"]), str::to_owned);
            let ts = payload["container"]["message_ts"]
                .as_str()
                .map_or_else(|| s(&payload["message"]["ts"]), str::to_owned);
            match action["action_id"].as_str() {
                Some(message::APPROVE_ACTION) => Intent::Approve {
                    key,
                    user: s(&payload["user"]["id"]),
                    channel,
                    ts,
                },
                Some(message::DENY_ACTION) => Intent::AskDenyReason {
                    key,
                    trigger_id: s(&payload["trigger_id"]),
                    channel,
                    ts,
                },
                _ => Intent::Ignore,
            }
        }
        Some("view_submission") if payload["view"]["callback_id"] == message::DENY_CALLBACK => {
            let metadata: Value =
                serde_json::from_str(payload["view"]["private_metadata"].as_str().unwrap_or("{}"))
                    .unwrap_or_default();
            let reason =
                s(&payload["view"]["state"]["values"][message::REASON_BLOCK]
                    [message::REASON_INPUT]["value"]);
            Intent::Deny {
                key: s(&metadata["request"]),
                user: s(&payload["user"]["id"]),
                reason,
                channel: s(&metadata["channel"]),
                ts: s(&metadata["ts"]),
            }
        }
        _ => Intent::Ignore,
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

impl Interactions {
    /// Handlers for `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Serve one HTTP request to the Request URL.
    pub async fn http(self, request: Request<Incoming>) -> Response<Full> {
        if request.uri().path() != PATH {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        let Some(secret) = self.ctx.signing_secret.clone() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no signing secret configured\n",
            );
        };
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let timestamp = header("x-slack-request-timestamp");
        let signature = header("x-slack-signature");
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                self.count("too_large");
                return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
            }
        };
        // The signature first, over the raw bytes: nothing unsigned is parsed.
        let now = jiff::Timestamp::now().as_second();
        if let Err(rejection) = verify_slack(
            &secret,
            timestamp.as_deref(),
            signature.as_deref(),
            &body,
            now,
        ) {
            tracing::warn!(%rejection, "refused a Slack request");
            self.count("bad_signature");
            return text(StatusCode::UNAUTHORIZED, format!("{rejection}\n"));
        }
        let payload = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "payload")
            .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok());
        let Some(payload) = payload else {
            self.count("not_a_payload");
            return text(StatusCode::BAD_REQUEST, "no JSON payload field\n");
        };
        self.accept(payload);
        let mut response = Response::new(Full::from(""));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        response
    }

    fn count(&self, outcome: &str) {
        self.ctx
            .metrics
            .interactions_total
            .with_label_values(&[outcome])
            .inc();
    }

    /// Take a verified payload (HTTP, or Socket Mode's envelope): acknowledged by the caller at
    /// once, worked on in the background.
    pub fn accept(&self, payload: Value) {
        let intent = intent(&payload);
        if intent == Intent::Ignore {
            return;
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            tracing::warn!("too many Slack interactions in flight; dropping one");
            self.count("busy");
            return;
        };
        self.count("accepted");
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            work(&ctx, intent).await;
            drop(permit);
        });
    }
}

/// Serve the Request URL on `listener`: at most [`MAX_CONNECTIONS`] connections, each with
/// [`HEADER_TIMEOUT`] to send its headers and [`REQUEST_TIMEOUT`] in all, so the public endpoint
/// cannot be held open by slow or idle clients.
pub async fn serve(listener: tokio::net::TcpListener, interactions: Interactions) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let interactions = interactions.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let interactions = interactions.clone();
                async move { Ok::<_, std::convert::Infallible>(interactions.http(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
                Ok(Err(error)) => tracing::debug!(%error, %peer, "connection ended with an error"),
                Err(_) => tracing::debug!(%peer, "connection took too long; dropped"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
}

/// The Kubernetes identity of Slack user `user`: by id, else by the profile email.
async fn identify(ctx: &Context, user: &str) -> Option<Identity> {
    let mapping = ctx.mapping();
    if let Some(identity) = mapping.by_slack_user(user) {
        return Some(identity);
    }
    if !mapping.has_email_entries() {
        return None;
    }
    let email = ctx.slack.as_ref()?.user_email(user).await.ok()??;
    mapping.by_email(&email)
}

/// Write `annotation=value` on `ns/name` as `identity`. The API server's answer, as a refusal
/// message, on failure.
async fn decide_as(
    ctx: &Context,
    identity: &Identity,
    namespace: &str,
    name: &str,
    annotation: &str,
    value: &str,
) -> Result<(), String> {
    let mut config = ctx.base_config.clone();
    config.auth_info.impersonate = Some(identity.username.clone());
    config.auth_info.impersonate_groups =
        (!identity.groups.is_empty()).then(|| identity.groups.clone());
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let api: Api<AccessRequest> = Api::namespaced(client, namespace);
    let patch = json!({"metadata": {"annotations": {annotation: value}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message.clone()),
        Err(error) => Err(error.to_string()),
    }
}

/// Rewrite the message at (`channel`, `ts`) for `key` with `notice` under it.
async fn notice(ctx: &Context, key: &str, channel: &str, ts: &str, notice: &str) {
    let Some(slack) = ctx.slack.as_ref() else {
        return;
    };
    if channel.is_empty() || ts.is_empty() {
        return;
    }
    let request = message::parse_key(key).and_then(|(ns, name)| {
        ctx.requests
            .get(&ObjectRef::<AccessRequest>::new(&name).within(&ns))
    });
    let Some(request) = request else {
        return;
    };
    let policy = request
        .status
        .as_ref()
        .and_then(|s| s.policy.clone())
        .and_then(|p| {
            ctx.policies.get(
                &ObjectRef::new(&p).within(request.metadata.namespace.as_deref().unwrap_or("")),
            )
        });
    let view = View::of(&request, policy.as_deref());
    if let Err(error) = slack
        .update(
            channel,
            ts,
            &message::text(&view),
            &message::blocks(&view, Some(notice)),
        )
        .await
    {
        tracing::warn!(%error, request = key, "showing a notice in Slack failed");
    }
}

fn decided(ctx: &Context, verb: &str, outcome: &str) {
    ctx.metrics
        .decisions_total
        .with_label_values(&[verb, outcome])
        .inc();
}

async fn work(ctx: &Context, intent: Intent) {
    let (key, user, channel, ts, annotation, value, verb) = match intent {
        Intent::Ignore => return,
        Intent::AskDenyReason {
            key,
            trigger_id,
            channel,
            ts,
        } => {
            if let Some(slack) = ctx.slack.as_ref()
                && let Err(error) = slack
                    .open_view(&trigger_id, &message::deny_modal(&key, &channel, &ts))
                    .await
            {
                tracing::warn!(%error, request = %key, "opening the deny modal failed");
            }
            return;
        }
        Intent::Approve {
            key,
            user,
            channel,
            ts,
        } => {
            let value = format!("{} {user}", bridge::SLACK_MESSAGE_PREFIX);
            (
                key,
                user,
                channel,
                ts,
                annotations::APPROVE,
                value,
                "approval",
            )
        }
        Intent::Deny {
            key,
            user,
            reason,
            channel,
            ts,
        } => {
            let value = truncate(&format!(
                "{} {user}: {}",
                bridge::SLACK_MESSAGE_PREFIX,
                reason.trim()
            ));
            (key, user, channel, ts, annotations::DENY, value, "denial")
        }
    };
    let Some((namespace, name)) = message::parse_key(&key) else {
        tracing::warn!(value = %key, "a Slack action named no request");
        return;
    };
    let Some(identity) = identify(ctx, &user).await else {
        tracing::warn!(slack_user = %user, request = %key, "a Slack user without a Kubernetes identity clicked; nothing changed");
        let text = format!(
            "Slack user {user} is not mapped to a Kubernetes identity (ConfigMap {}), so their {verb} changed nothing",
            bridge::IDENTITIES_CONFIGMAP
        );
        decided(ctx, verb, "unmapped");
        notice(ctx, &key, &channel, &ts, &text).await;
        return;
    };
    match decide_as(ctx, &identity, &namespace, &name, annotation, &value).await {
        Ok(()) => {
            tracing::info!(slack_user = %user, user = %identity.username, request = %key, %verb, "decision recorded from Slack");
            decided(ctx, verb, "recorded");
            // The watch updates the message when the operator moves the request.
            ctx.nudge.notify_one();
        }
        Err(refusal) => {
            tracing::info!(slack_user = %user, user = %identity.username, request = %key, %refusal, "decision from Slack refused");
            decided(ctx, verb, "refused");
            let text = format!("{verb} by {} refused: {refusal}", identity.username);
            notice(ctx, &key, &channel, &ts, &text).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_intents() {
        let click = json!({
            "type": "block_actions", "user": {"id": "UBOB"}, "trigger_id": "t1",
            "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1"},
            "channel": {"id": "C1"},
            "actions": [{"action_id": message::APPROVE_ACTION, "value": "team/r1"}],
        });
        assert_eq!(
            intent(&click),
            Intent::Approve {
                key: "team/r1".into(),
                user: "UBOB".into(),
                channel: "C1".into(),
                ts: "1.2".into()
            }
        );
        let mut deny = click.clone();
        deny["actions"][0]["action_id"] = json!(message::DENY_ACTION);
        assert!(
            matches!(intent(&deny), Intent::AskDenyReason { trigger_id, .. } if trigger_id == "t1")
        );
        let submit = json!({
            "type": "view_submission", "user": {"id": "UBOB"},
            "view": {"callback_id": message::DENY_CALLBACK,
                     "private_metadata": json!({"request": "team/r1", "channel": "C1", "ts": "1.2"}).to_string(),
                     "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": "freeze"}}}}},
        });
        assert!(
            matches!(intent(&submit), Intent::Deny { reason, key, .. } if reason == "freeze" && key == "team/r1")
        );
        assert_eq!(intent(&json!({"type": "shortcut"})), Intent::Ignore);
        let mut other = click;
        other["actions"][0]["action_id"] = json!("something_else");
        assert_eq!(intent(&other), Intent::Ignore);
    }
}
