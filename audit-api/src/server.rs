//! The HTTPS server and the index refresh. Data comes from the store (audit batches listed
//! under `audit/` every `--refresh` and on a miss, fetched once each; casts fetched by the key
//! a `recordingStored` event named), from ConfigMap `kube-system/extension-apiserver-
//! authentication` (re-read every minute) and from requests the aggregator forwards; it goes
//! out as JSON (or the cast's bytes) after the front-proxy check ([`crate::authn`]) and a
//! SubjectAccessReview ([`crate::authz`]).
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (more are closed at once), a TLS handshake
//! and a request head must arrive within [`HANDSHAKE_TIMEOUT`], request bodies are never read
//! (only GET is served), and a miss re-lists the store at most once per [`MISS_INTERVAL`].

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gatehouse_store::Store;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::authn::{CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, FrontProxy, RequestHeaderConfig};
use crate::authz::{Authorizer, Refusal, Route, route};
use crate::error::Result;
use crate::index::{AUDIT_PREFIX, Index, parse_batch_key};
use crate::{query, resources};
use gatehouse_runtime::{http::Full, metrics::MetricSet};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time for the TLS handshake, and for each request head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A lookup that misses re-lists the store at most this often.
pub const MISS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the requestheader ConfigMap is re-read.
pub const FRONT_PROXY_REFRESH: Duration = Duration::from_secs(60);

/// The audit API's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    set: MetricSet,
    /// Requests by route and status code.
    pub requests: IntCounterVec,
    /// Events kept in the index.
    pub events: IntGauge,
    /// Sessions kept in the index.
    pub sessions: IntGauge,
    /// Events dropped (oldest first) past `--max-events`.
    pub events_dropped: IntCounter,
    /// Batches skipped because they are not whole.
    pub batches_broken: IntCounter,
    /// Failed store lists or reads.
    pub store_errors: IntCounter,
}

impl Metrics {
    /// Register the metrics.
    pub fn new() -> Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_audit_api_requests_total",
                "Requests by route and status code.",
            ),
            &["route", "code"],
        )?;
        let events = IntGauge::new("gatehouse_audit_api_events", "Audit events in the index.")?;
        let sessions = IntGauge::new("gatehouse_audit_api_sessions", "Sessions in the index.")?;
        let events_dropped = IntCounter::new(
            "gatehouse_audit_api_events_dropped_total",
            "Oldest events dropped from the index past --max-events.",
        )?;
        let batches_broken = IntCounter::new(
            "gatehouse_audit_api_batches_broken_total",
            "Audit batches skipped because they do not parse or disagree with their key.",
        )?;
        let store_errors = IntCounter::new(
            "gatehouse_audit_api_store_errors_total",
            "Failed store lists or reads.",
        )?;
        let set = MetricSet::new(vec![
            Box::new(requests.clone()),
            Box::new(events.clone()),
            Box::new(sessions.clone()),
            Box::new(events_dropped.clone()),
            Box::new(batches_broken.clone()),
            Box::new(store_errors.clone()),
        ])?;
        Ok(Self {
            set,
            requests,
            events,
            sessions,
            events_dropped,
            batches_broken,
            store_errors,
        })
    }

    /// Prometheus text.
    pub fn render(&self) -> Result<String> {
        Ok(self.set.render()?)
    }
}

/// What the handlers share.
pub struct State<A> {
    index: RwLock<Index>,
    store: Store,
    front_proxy: RwLock<Arc<FrontProxy>>,
    authorizer: A,
    metrics: Metrics,
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

impl<A> std::fmt::Debug for State<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl<A: Authorizer> State<A> {
    /// State over `store`, answering from an index of at most `max_events` events.
    pub fn new(
        store: Store,
        front_proxy: FrontProxy,
        authorizer: A,
        metrics: Metrics,
        max_events: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            index: RwLock::new(Index::new(max_events)),
            store,
            front_proxy: RwLock::new(Arc::new(front_proxy)),
            authorizer,
            metrics,
            refreshing: tokio::sync::Mutex::new(None),
        })
    }

    fn front_proxy(&self) -> Option<Arc<FrontProxy>> {
        self.front_proxy.read().ok().map(|f| Arc::clone(&f))
    }

    /// Replace the front-proxy settings (after a re-read of the ConfigMap).
    pub fn set_front_proxy(&self, front_proxy: FrontProxy) {
        if let Ok(mut current) = self.front_proxy.write() {
            *current = Arc::new(front_proxy);
        }
    }

    /// List `audit/` and add every batch not seen yet; returns how many were added.
    pub async fn refresh(&self) -> Result<usize> {
        let mut last = self.refreshing.lock().await;
        *last = Some(Instant::now());
        let keys = self.store.list(AUDIT_PREFIX).await.inspect_err(|_| {
            self.metrics.store_errors.inc();
        })?;
        let fresh: Vec<String> = match self.index.read() {
            Ok(index) => keys
                .into_iter()
                .filter(|k| parse_batch_key(k).is_some() && !index.has_batch(k))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut added = 0;
        for key in fresh {
            let bytes = match self.store.get(&key).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    // Tried again at the next refresh.
                    self.metrics.store_errors.inc();
                    tracing::warn!(%key, %error, "reading an audit batch failed");
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            let Ok(mut index) = self.index.write() else {
                break;
            };
            match index.add_batch(&key, &text) {
                Ok(_) => added += 1,
                Err(problem) => {
                    self.metrics.batches_broken.inc();
                    tracing::warn!(key = %problem.key, problem = %problem.problem,
                        "audit batch skipped");
                }
            }
        }
        if let Ok(index) = self.index.read() {
            self.metrics.events.set(gauge(index.event_count()));
            self.metrics.sessions.set(gauge(index.session_count()));
            let dropped = index.dropped_events();
            let counted = self.metrics.events_dropped.get();
            self.metrics
                .events_dropped
                .inc_by(dropped.saturating_sub(counted));
        }
        Ok(added)
    }

    /// Refresh after a lookup missed, unless one ran within [`MISS_INTERVAL`].
    async fn refresh_on_miss(&self) {
        let recent = {
            let last = self.refreshing.lock().await;
            last.is_some_and(|t| t.elapsed() < MISS_INTERVAL)
        };
        if !recent && let Err(error) = self.refresh().await {
            tracing::warn!(%error, "refreshing the index after a miss failed");
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Read the requestheader settings from `kube-system/extension-apiserver-authentication`.
pub async fn read_front_proxy(client: &Client) -> Result<FrontProxy> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE);
    let config_map = api.get(CONFIGMAP_NAME).await?;
    let data = config_map.data.unwrap_or_default();
    FrontProxy::new(RequestHeaderConfig::from_data(&data)?)
}

/// Re-read the requestheader settings every [`FRONT_PROXY_REFRESH`]; on failure the last
/// good settings stay.
pub async fn keep_front_proxy_fresh<A: Authorizer>(client: Client, state: Arc<State<A>>) {
    loop {
        tokio::time::sleep(FRONT_PROXY_REFRESH).await;
        match read_front_proxy(&client).await {
            Ok(front_proxy) => state.set_front_proxy(front_proxy),
            Err(error) => tracing::warn!(%error, "re-reading the requestheader settings failed"),
        }
    }
}

/// Refresh the index every `every`.
pub async fn keep_index_fresh<A: Authorizer>(state: Arc<State<A>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = state.refresh().await {
            tracing::warn!(%error, "refreshing the index failed");
        }
    }
}

/// Serve HTTPS on `listener` with `acceptor` (from [`crate::authn::server_config`]).
pub async fn serve<A: Authorizer>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State<A>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; closing");
            continue;
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // Decided once per connection: the certificate does not change within it.
            let front_proxy = state
                .front_proxy()
                .ok_or_else(|| "no requestheader settings".to_owned())
                .and_then(|f| {
                    f.verify_peer(tls.get_ref().1.peer_certificates())
                        .map(|()| f)
                        .map_err(|refusal| refusal.0)
                });
            if let Err(reason) = &front_proxy {
                tracing::debug!(%peer, %reason, "not the front proxy");
            }
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                let front_proxy = front_proxy.clone();
                async move { Ok::<_, Infallible>(handle(&state, front_proxy, request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
}

fn json(code: StatusCode, value: &serde_json::Value) -> Response<Full> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(code: StatusCode, message: &str) -> Response<Full> {
    let reason = match code {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "InternalError",
    };
    json(code, &resources::status(code.as_u16(), reason, message))
}

fn route_label(route: &Route) -> &'static str {
    match route {
        Route::Groups | Route::Group | Route::Resources => "discovery",
        Route::Sessions { .. } => "sessions",
        Route::Session { .. } => "session",
        Route::Recording { .. } => "recording",
        Route::SessionEvents { .. } => "session_events",
        Route::AuditEvents { .. } => "auditevents",
    }
}

/// Answer one request from a connection whose front-proxy check came out as `front_proxy`.
pub async fn handle<A: Authorizer, B>(
    state: &State<A>,
    front_proxy: Result<Arc<FrontProxy>, String>,
    request: Request<B>,
) -> Response<Full> {
    let (label, response) = answer(state, front_proxy, &request).await;
    state
        .metrics
        .requests
        .with_label_values(&[label, response.status().as_str()])
        .inc();
    response
}

async fn answer<A: Authorizer, B>(
    state: &State<A>,
    front_proxy: Result<Arc<FrontProxy>, String>,
    request: &Request<B>,
) -> (&'static str, Response<Full>) {
    // Nothing of the request is read before the caller is known to be the front proxy.
    let front_proxy = match front_proxy {
        Ok(f) => f,
        Err(reason) => {
            return (
                "unauthenticated",
                failure(StatusCode::UNAUTHORIZED, &reason),
            );
        }
    };
    let route = match route(request.method(), request.uri().path()) {
        Ok(route) => route,
        Err(Refusal::NotFound) => {
            return (
                "unknown",
                failure(
                    StatusCode::NOT_FOUND,
                    "the server could not find the requested resource",
                ),
            );
        }
        Err(Refusal::MethodNotAllowed) => {
            return (
                "unknown",
                failure(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only get and list are served",
                ),
            );
        }
    };
    let label = route_label(&route);
    let Some(attributes) = route.attributes() else {
        let body = match route {
            Route::Groups => resources::api_group_list(),
            Route::Group => resources::api_group_value(),
            _ => resources::api_resource_list(),
        };
        return (label, json(StatusCode::OK, &body));
    };
    let user = match front_proxy.user(request.headers()) {
        Ok(user) => user,
        Err(refusal) => return (label, failure(StatusCode::UNAUTHORIZED, &refusal.0)),
    };
    match state.authorizer.allowed(&user, &attributes).await {
        Ok(true) => {}
        Ok(false) => {
            let what = format!(
                "{}{} in namespace {:?}",
                attributes.resource.as_deref().unwrap_or(""),
                attributes
                    .subresource
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default(),
                attributes.namespace.as_deref().unwrap_or(""),
            );
            let message = format!(
                "{} \"{}\" is forbidden: User {:?} cannot {} resource {what} of API group {:?}",
                attributes.resource.as_deref().unwrap_or(""),
                attributes.name.as_deref().unwrap_or(""),
                user.name,
                attributes.verb.as_deref().unwrap_or(""),
                crate::authz::GROUP,
            );
            return (label, failure(StatusCode::FORBIDDEN, &message));
        }
        Err(error) => {
            tracing::warn!(%error, user = %user.name, "SubjectAccessReview failed; refusing");
            return (
                label,
                failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authorization is unavailable; try again",
                ),
            );
        }
    }
    (label, resource(state, route, request.uri().query()).await)
}

fn bad_query(error: &query::QueryError) -> Response<Full> {
    match error {
        query::QueryError::Watch => failure(StatusCode::METHOD_NOT_ALLOWED, &error.message()),
        query::QueryError::Invalid(_) => failure(StatusCode::BAD_REQUEST, &error.message()),
    }
}

fn not_found(namespace: &str, name: &str) -> Response<Full> {
    failure(
        StatusCode::NOT_FOUND,
        &format!("sessions.audit.gatehouse.dev \"{name}\" not found in namespace {namespace:?}"),
    )
}

async fn resource<A: Authorizer>(
    state: &State<A>,
    route: Route,
    raw_query: Option<&str>,
) -> Response<Full> {
    let read = |f: &dyn Fn(&Index) -> Option<Response<Full>>| -> Option<Response<Full>> {
        state.index.read().ok().and_then(|index| f(&index))
    };
    let get = matches!(
        route,
        Route::Session { .. } | Route::Recording { .. } | Route::SessionEvents { .. }
    );
    if get && let Err(error) = query::get_query(raw_query) {
        return bad_query(&error);
    }
    match route {
        Route::Sessions { namespace } => {
            let fields = match query::session_fields(raw_query) {
                Ok(fields) => fields,
                Err(error) => return bad_query(&error),
            };
            read(&|index| {
                let sessions = index.sessions(namespace.as_deref(), &fields);
                Some(json(StatusCode::OK, &resources::session_list(&sessions)))
            })
            .unwrap_or_else(|| failure(StatusCode::INTERNAL_SERVER_ERROR, "index unavailable"))
        }
        Route::AuditEvents { namespace } => {
            let filter = match query::event_query(raw_query, namespace.as_deref()) {
                Ok(filter) => filter,
                Err(error) => return bad_query(&error),
            };
            read(&|index| {
                let events = index.events(&filter);
                Some(json(StatusCode::OK, &resources::audit_event_list(&events)))
            })
            .unwrap_or_else(|| failure(StatusCode::INTERNAL_SERVER_ERROR, "index unavailable"))
        }
        Route::Session { namespace, name } => {
            let get = |index: &Index| {
                index
                    .session(&namespace, &name)
                    .map(|s| json(StatusCode::OK, &resources::session(s)))
            };
            if let Some(found) = read(&get) {
                return found;
            }
            state.refresh_on_miss().await;
            read(&get).unwrap_or_else(|| not_found(&namespace, &name))
        }
        Route::SessionEvents { namespace, name } => {
            let get = |index: &Index| {
                index.session(&namespace, &name)?;
                let events = index.session_events(&namespace, &name);
                Some(json(StatusCode::OK, &resources::audit_event_list(&events)))
            };
            if let Some(found) = read(&get) {
                return found;
            }
            state.refresh_on_miss().await;
            read(&get).unwrap_or_else(|| not_found(&namespace, &name))
        }
        Route::Recording { namespace, name } => recording(state, &namespace, &name).await,
        Route::Groups | Route::Group | Route::Resources => {
            failure(StatusCode::NOT_FOUND, "not a resource")
        }
    }
}

/// The cast of a session: only ever the key a `recordingStored` event named.
async fn recording<A: Authorizer>(state: &State<A>, namespace: &str, name: &str) -> Response<Full> {
    let key_of = |state: &State<A>| -> Option<Option<String>> {
        let index = state.index.read().ok()?;
        let session = index.session(namespace, name)?;
        Some(session.recording.as_ref().map(|r| r.key.clone()))
    };
    let key = match key_of(state) {
        Some(key) => key,
        None => {
            state.refresh_on_miss().await;
            match key_of(state) {
                Some(key) => key,
                None => return not_found(namespace, name),
            }
        }
    };
    let Some(key) = key else {
        return failure(
            StatusCode::NOT_FOUND,
            &format!("session {name:?} has no stored recording (yet)"),
        );
    };
    let bytes = match state.store.get(&key).await {
        Ok(bytes) => bytes,
        Err(error) => {
            state.metrics.store_errors.inc();
            tracing::warn!(%key, %error, "reading a recording failed");
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the recording store is unavailable; try again",
            );
        }
    };
    let sha256 = gatehouse_store::hex(&Sha256::digest(&bytes));
    let mut response = Response::new(Full::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    if let Ok(value) = HeaderValue::from_str(&sha256) {
        headers.insert("x-gatehouse-sha256", value);
    }
    response
}
