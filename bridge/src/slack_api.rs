//! The Slack Web API methods the bridge calls, with serde models of exactly those.
//!
//! Out: `POST <base>/<method>` with `Authorization: Bearer <token>` and a JSON body (the bot
//! token for everything but `apps.connections.open`, which takes the app-level token). In:
//! Slack's answer, HTTP 200 with `{"ok": true|false, "error": …}`, or HTTP 429 with
//! `Retry-After`. The base URL is configurable (`--slack-api-url`), so tests run a local Slack.

use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    http_client::HttpClient,
    metrics::{Metrics, slack_outcome},
};

/// Slack's Web API base.
pub const DEFAULT_API_URL: &str = "https://slack.com/api/";

/// A Web API client.
#[derive(Clone)]
pub struct Slack {
    http: HttpClient,
    base: String,
    bot_token: String,
    app_token: Option<String>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Posted {
    channel: String,
    ts: String,
}

#[derive(Deserialize)]
struct Opened {
    channel: OpenedChannel,
}

#[derive(Deserialize)]
struct OpenedChannel {
    id: String,
}

#[derive(Deserialize)]
struct UserInfo {
    user: UserObject,
}

#[derive(Deserialize)]
struct UserObject {
    #[serde(default)]
    profile: Profile,
}

#[derive(Deserialize, Default)]
struct Profile {
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct Connection {
    url: String,
}

impl Slack {
    /// A client for `base` (ending in `/`, like [`DEFAULT_API_URL`]).
    pub fn new(http: HttpClient, base: &str, bot_token: String, app_token: Option<String>) -> Self {
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        Self {
            http,
            base,
            bot_token,
            app_token,
            metrics: None,
        }
    }

    /// The same client, counting every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn call_with(&self, token: &str, method: &str, body: &Value) -> Result<Value> {
        self.call_raw(
            token,
            method,
            "application/json; charset=utf-8",
            body.to_string(),
        )
        .await
    }

    async fn call_raw(
        &self,
        token: &str,
        method: &str,
        content_type: &str,
        body: String,
    ) -> Result<Value> {
        let result = self.send_raw(token, method, content_type, body).await;
        if let Some(metrics) = &self.metrics {
            metrics
                .slack_calls_total
                .with_label_values(&[method, slack_outcome(&result)])
                .inc();
        }
        result
    }

    async fn send_raw(
        &self,
        token: &str,
        method: &str,
        content_type: &str,
        body: String,
    ) -> Result<Value> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{method}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Http {
                what: method.to_owned(),
                message: e.to_string(),
            })?;
        let response = self.http.send(method, request).await?;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after_secs = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(30);
            return Err(Error::RateLimited {
                method: method.to_owned(),
                retry_after_secs,
            });
        }
        if !response.status().is_success() {
            return Err(Error::Http {
                what: method.to_owned(),
                message: format!("HTTP {}", response.status()),
            });
        }
        let value: Value = serde_json::from_slice(response.body()).map_err(|e| Error::Http {
            what: method.to_owned(),
            message: format!("answer is not JSON: {e}"),
        })?;
        let envelope: Envelope =
            serde_json::from_value(value.clone()).map_err(|e| Error::Http {
                what: method.to_owned(),
                message: format!("answer has no `ok`: {e}"),
            })?;
        if !envelope.ok {
            return Err(Error::Slack {
                method: method.to_owned(),
                error: envelope.error.unwrap_or_default(),
            });
        }
        Ok(value)
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, method: &str, body: &Value) -> Result<T> {
        let value = self.call_with(&self.bot_token, method, body).await?;
        serde_json::from_value(value).map_err(|e| Error::Http {
            what: method.to_owned(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `chat.postMessage`: the message's (channel, ts).
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<&Value>,
    ) -> Result<(String, String)> {
        let mut body = json!({"channel": channel, "text": text, "unfurl_links": false});
        if let Some(blocks) = blocks {
            body["blocks"] = blocks.clone();
        }
        let posted: Posted = self.call("chat.postMessage", &body).await?;
        Ok((posted.channel, posted.ts))
    }

    /// `chat.update` of message `ts` in `channel`.
    pub async fn update(&self, channel: &str, ts: &str, text: &str, blocks: &Value) -> Result<()> {
        let body = json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks});
        self.call_with(&self.bot_token, "chat.update", &body)
            .await
            .map(drop)
    }

    /// `conversations.open` with one user: the DM's channel id.
    pub async fn open_dm(&self, user: &str) -> Result<String> {
        let opened: Opened = self
            .call("conversations.open", &json!({"users": user}))
            .await?;
        Ok(opened.channel.id)
    }

    /// `views.open`: show `view` (a modal) for the click's `trigger_id`.
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<()> {
        let body = json!({"trigger_id": trigger_id, "view": view});
        self.call_with(&self.bot_token, "views.open", &body)
            .await
            .map(drop)
    }

    /// `users.info`: the user's profile email, if Slack shares it.
    pub async fn user_email(&self, user: &str) -> Result<Option<String>> {
        // A read method: Slack takes its arguments form-encoded, not as JSON.
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("user", user)
            .finish();
        let value = self
            .call_raw(
                &self.bot_token,
                "users.info",
                "application/x-www-form-urlencoded",
                body,
            )
            .await?;
        let info: UserInfo = serde_json::from_value(value).map_err(|e| Error::Http {
            what: "users.info".to_owned(),
            message: format!("unexpected answer: {e}"),
        })?;
        Ok(info.user.profile.email)
    }

    /// `apps.connections.open` (app-level token): a Socket Mode WebSocket URL.
    pub async fn open_connection(&self) -> Result<String> {
        let token = self
            .app_token
            .as_deref()
            .ok_or_else(|| Error::SocketMode("no app-level token (SLACK_APP_TOKEN)".to_owned()))?;
        let value = self
            .call_with(token, "apps.connections.open", &json!({}))
            .await?;
        let connection: Connection =
            serde_json::from_value(value).map_err(|e| Error::SocketMode(e.to_string()))?;
        Ok(connection.url)
    }
}
