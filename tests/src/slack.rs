//! A local Slack for the approval bridge's tests (Slack itself cannot be reached here), and a
//! webhook receiver.
//!
//! It speaks the Web API methods the bridge uses as Slack's API reference documents them:
//! `POST /api/<method>` with `Authorization: Bearer <token>`, JSON bodies (form-encoded for
//! `users.info`), every answer HTTP 200 with `{"ok": true, …}` or `{"ok": false, "error": …}`
//! (`not_authed`, `invalid_auth`, `channel_not_found`, `message_not_found`,
//! `invalid_trigger_id`, `user_not_found`); `chat.postMessage` → `channel` and `ts`;
//! `chat.update` of a known `ts`; `conversations.open` → `channel.id` of a DM (`D…`);
//! `views.open` with a `trigger_id`; `users.info` → `user.profile.email`; and Socket Mode's
//! `apps.connections.open` (app-level `xapp-` token) → a `ws://` URL where it sends `hello`,
//! then the envelopes a test pushes, recording the bridge's acknowledgements. Everything it
//! receives is recorded. [`signed_interaction`] builds interactive payloads and signs them
//! exactly as Slack does (`v0=` HMAC-SHA256 of `v0:{ts}:{body}`), and [`post`] delivers them.
//!
//! `POST /hooks/<name>` is a webhook receiver: it records the headers and body, and answers 503
//! to the first `fail_first_hooks` deliveries so retries are exercised.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

use crate::net::LOOPBACK;

/// The bot token the fake accepts.
pub const BOT_TOKEN: &str = "xoxb-gatehouse-test";
/// The app-level token (Socket Mode) the fake accepts.
pub const APP_TOKEN: &str = "xapp-1-gatehouse-test";
/// The signing secret interactions are signed with.
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// One Web API call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method (`chat.postMessage`).
    pub method: String,
    /// Its arguments (the JSON body, or the form fields as a JSON object).
    pub args: Value,
    /// What the fake answered.
    pub answer: Value,
}

/// One webhook POST the receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    /// `/hooks/<name>`.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Raw body.
    pub body: Vec<u8>,
    /// Whether it was answered 2xx.
    pub accepted: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    hooks: Vec<Hook>,
    messages: BTreeMap<String, String>,
    next_ts: u64,
    emails: BTreeMap<String, String>,
    fail_first_hooks: usize,
    sockets: Vec<mpsc::UnboundedSender<String>>,
    acks: Vec<String>,
    down: bool,
}

/// The running fake.
#[derive(Debug, Clone)]
pub struct FakeSlack {
    /// Its loopback port.
    pub port: u16,
    state: Arc<Mutex<State>>,
}

fn ok(value: Value) -> Value {
    let mut value = value;
    value["ok"] = json!(true);
    value
}

fn error(code: &str) -> Value {
    json!({"ok": false, "error": code})
}

impl FakeSlack {
    /// Start it on a free loopback port (in this test's runtime). Slack users `emails` are
    /// what `users.info` reports.
    pub async fn start(emails: &[(&str, &str)], fail_first_hooks: usize) -> Self {
        let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
            .await
            .expect("a loopback port for the fake Slack");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(Mutex::new(State {
            next_ts: 1,
            emails: emails
                .iter()
                .map(|(u, e)| ((*u).to_owned(), (*e).to_owned()))
                .collect(),
            fail_first_hooks,
            ..State::default()
        }));
        let fake = Self { port, state };
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(request).await) }
                    });
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                        .ok();
                });
            }
        });
        fake
    }

    /// The Web API base URL to give the bridge.
    pub fn api_url(&self) -> String {
        format!("http://{LOOPBACK}:{}/api/", self.port)
    }

    /// The URL of webhook receiver `name`.
    pub fn hook_url(&self, name: &str) -> String {
        format!("http://{LOOPBACK}:{}/hooks/{name}", self.port)
    }

    /// Every Web API call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls of `method` so far.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Every webhook delivery so far.
    pub fn hooks(&self) -> Vec<Hook> {
        self.state.lock().unwrap().hooks.clone()
    }

    /// Envelope ids the bridge acknowledged over Socket Mode.
    pub fn acks(&self) -> Vec<String> {
        self.state.lock().unwrap().acks.clone()
    }

    /// Number of Socket Mode connections open.
    pub fn sockets(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state.sockets.retain(|s| !s.is_closed());
        state.sockets.len()
    }

    /// While `down`, every Web API call is answered HTTP 503 (Slack unreachable) and not recorded.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Send `message` as it is to every connected Socket Mode client (e.g. a `disconnect`).
    pub fn push_raw(&self, message: &Value) {
        for socket in &self.state.lock().unwrap().sockets {
            socket.send(message.to_string()).ok();
        }
    }

    /// Send an `interactive` envelope with `payload` to every connected Socket Mode client.
    pub fn push_interactive(&self, envelope_id: &str, payload: &Value) {
        let envelope = json!({
            "envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": false,
            "payload": payload,
        })
        .to_string();
        for socket in &self.state.lock().unwrap().sockets {
            socket.send(envelope.clone()).ok();
        }
    }

    async fn handle(self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        if path == "/socket" {
            return self.upgrade(request);
        }
        let headers: BTreeMap<String, String> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        if let Some(name) = path.strip_prefix("/hooks/") {
            return self.hook(name, headers, body);
        }
        let Some(method) = path.strip_prefix("/api/") else {
            return respond(StatusCode::NOT_FOUND, "not found".into());
        };
        if self.state.lock().unwrap().down {
            return respond(StatusCode::SERVICE_UNAVAILABLE, "down".into());
        }
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        let args: Value = if content_type.starts_with("application/json") {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Object(
                url::form_urlencoded::parse(&body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect(),
            )
        };
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        let answer = self.method(method, &auth, &args);
        self.state.lock().unwrap().calls.push(Call {
            method: method.to_owned(),
            args,
            answer: answer.clone(),
        });
        respond(StatusCode::OK, answer.to_string())
    }

    fn method(&self, method: &str, auth: &str, args: &Value) -> Value {
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return error("not_authed");
        };
        let wanted = if method == "apps.connections.open" {
            APP_TOKEN
        } else {
            BOT_TOKEN
        };
        if token != wanted {
            return error("invalid_auth");
        }
        let mut state = self.state.lock().unwrap();
        match method {
            "chat.postMessage" => {
                let Some(channel) = args["channel"].as_str().filter(|c| !c.is_empty()) else {
                    return error("channel_not_found");
                };
                if args["text"].as_str().is_none() && args["blocks"].is_null() {
                    return error("no_text");
                }
                let ts = format!("1700000000.{:06}", state.next_ts);
                state.next_ts += 1;
                state.messages.insert(ts.clone(), channel.to_owned());
                ok(
                    json!({"channel": channel, "ts": ts, "message": {"type": "message", "text": args["text"], "ts": ts}}),
                )
            }
            "chat.update" => {
                let (Some(channel), Some(ts)) = (args["channel"].as_str(), args["ts"].as_str())
                else {
                    return error("message_not_found");
                };
                if state.messages.get(ts).map(String::as_str) != Some(channel) {
                    return error("message_not_found");
                }
                ok(json!({"channel": channel, "ts": ts, "text": args["text"]}))
            }
            "conversations.open" => match args["users"].as_str() {
                Some(user) if !user.is_empty() && !user.contains(',') => {
                    ok(json!({"channel": {"id": format!("D{user}")}}))
                }
                _ => error("users_list_not_supplied"),
            },
            "views.open" => {
                if args["trigger_id"].as_str().is_none_or(str::is_empty) {
                    return error("invalid_trigger_id");
                }
                ok(
                    json!({"view": {"id": "V0001", "type": "modal", "callback_id": args["view"]["callback_id"]}}),
                )
            }
            "users.info" => {
                let user = args["user"].as_str().unwrap_or_default();
                match state.emails.get(user) {
                    Some(email) => ok(json!({"user": {"id": user, "profile": {"email": email}}})),
                    None => error("user_not_found"),
                }
            }
            "apps.connections.open" => ok(json!({
                "url": format!("ws://{LOOPBACK}:{}/socket?ticket=t-{}", self.port, state.next_ts)
            })),
            _ => error("unknown_method"),
        }
    }

    fn hook(
        &self,
        name: &str,
        headers: BTreeMap<String, String>,
        body: Vec<u8>,
    ) -> Response<Full<Bytes>> {
        let mut state = self.state.lock().unwrap();
        let accepted = state.fail_first_hooks == 0;
        state.fail_first_hooks = state.fail_first_hooks.saturating_sub(1);
        state.hooks.push(Hook {
            path: format!("/hooks/{name}"),
            headers,
            body,
            accepted,
        });
        if accepted {
            respond(StatusCode::OK, "ok".into())
        } else {
            respond(StatusCode::SERVICE_UNAVAILABLE, "try later".into())
        }
    }

    /// The WebSocket handshake of Socket Mode's URL, then `hello` and the pushed envelopes.
    fn upgrade(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
            return respond(StatusCode::BAD_REQUEST, "not a WebSocket handshake".into());
        };
        let accept = derive_accept_key(key.as_bytes());
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(request).await else {
                return;
            };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let (sender, mut pushed) = mpsc::unbounded_channel();
            state.lock().unwrap().sockets.push(sender);
            let hello = json!({"type": "hello", "num_connections": 1,
                "debug_info": {"host": "applink-test", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A0GATEHOUSE"}});
            if ws
                .send(Message::Text(hello.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    envelope = pushed.recv() => {
                        let Some(envelope) = envelope else { return };
                        if ws.send(Message::Text(envelope.into())).await.is_err() { return; }
                    }
                    message = ws.next() => {
                        let Some(Ok(message)) = message else { return };
                        if let Message::Text(text) = message
                            && let Ok(ack) = serde_json::from_str::<Value>(&text)
                            && let Some(id) = ack["envelope_id"].as_str()
                        {
                            state.lock().unwrap().acks.push(id.to_owned());
                        }
                    }
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert("upgrade", "websocket".parse().unwrap());
        headers.insert("connection", "Upgrade".parse().unwrap());
        headers.insert("sec-websocket-accept", accept.parse().unwrap());
        response
    }
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    response
}

/// A `block_actions` payload as Slack sends it for a click on button `action_id` (value
/// `value`) by Slack user `user`, on message `ts` in `channel`.
pub fn block_actions(user: &str, action_id: &str, value: &str, channel: &str, ts: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0GATEHOUSE"},
        "api_app_id": "A0GATEHOUSE",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": format!("13345224609.738474920.{user}"),
        "team": {"id": "T0GATEHOUSE", "domain": "gatehouse-test"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "bot_id": "B0GATEHOUSE", "text": "…"},
        "response_url": "https://hooks.slack.invalid/actions/T0GATEHOUSE/1/x",
        "actions": [{
            "action_id": action_id, "block_id": "gatehouse_decision",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true},
            "value": value, "style": "primary", "type": "button", "action_ts": "1700000001.000200",
        }],
    })
}

/// A `view_submission` payload of modal `view` (as the bridge opened it) with `values`.
pub fn view_submission(user: &str, view: &Value, values: Value) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": "T0GATEHOUSE", "domain": "gatehouse-test"},
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0GATEHOUSE"},
        "api_app_id": "A0GATEHOUSE",
        "token": "deprecated-verification-token",
        "trigger_id": format!("13345224609.738474920.{user}.2"),
        "view": {
            "id": "V0001", "type": "modal", "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"], "blocks": view["blocks"],
            "state": {"values": values},
            "hash": "1700000002.abcdef",
        },
        "response_urls": [],
    })
}

/// The form body Slack POSTs for `payload`, and its `X-Slack-Request-Timestamp` and
/// `X-Slack-Signature` headers for Unix time `timestamp`, signed with `secret`.
pub fn signed_interaction(
    payload: &Value,
    secret: &str,
    timestamp: i64,
) -> (String, String, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let ts = timestamp.to_string();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (body, ts, format!("v0={signature}"))
}

/// POST a form body with Slack's signature headers to `port` + `path` (blocking, loopback):
/// the HTTP status.
pub fn post(port: u16, path: &str, body: &str, timestamp: &str, signature: &str) -> u16 {
    let mut stream = TcpStream::connect(SocketAddr::from((LOOPBACK, port)))
        .unwrap_or_else(|e| panic!("connecting to the bridge on {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Slack-Request-Timestamp: {timestamp}\r\nX-Slack-Signature: {signature}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from the bridge: {answer:?}"))
}

/// Check a webhook delivery's signature the way a receiver would: `sha256=` + hex
/// HMAC-SHA256(key, "<X-Gatehouse-Timestamp>.<body>").
pub fn hook_signature_valid(hook: &Hook, key: &[u8]) -> bool {
    let (Some(ts), Some(signature)) = (
        hook.headers.get("x-gatehouse-timestamp"),
        hook.headers.get("x-gatehouse-signature"),
    ) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&hook.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    signature == &format!("sha256={want}")
}
