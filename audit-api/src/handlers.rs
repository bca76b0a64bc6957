//! The request handlers. Data comes from one request (already on a connection whose
//! front-proxy check is done) and the shared [`State`]: the index and the store. It goes out as
//! a response: a metav1 Status for every refusal, JSON (or a Table for `kubectl get`), or a
//! cast's bytes. The order is fixed: front proxy → route → user → SubjectAccessReview →
//! query → answer, so nothing a caller wrote is looked at before the step that vouches for it.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::authn::FrontProxy;
use crate::authz::{Authorizer, Refusal, Route, route};
use crate::index::Index;
use crate::state::State;
use crate::{query, resources};
use gatehouse_runtime::http::Full;

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
        Route::Player { .. } => "player",
        Route::Asset { .. } => "player_asset",
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
    let (label, mut response) = answer(state, front_proxy, &request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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
            let message = crate::authz::forbidden_message(&user, &attributes);
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
    let table = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(resources::wants_table);
    (
        label,
        resource(state, route, request.uri().query(), table).await,
    )
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
    table: bool,
) -> Response<Full> {
    let read = |f: &dyn Fn(&Index) -> Option<Response<Full>>| -> Option<Response<Full>> {
        state.index.read().ok().and_then(|index| f(&index))
    };
    let get = matches!(
        route,
        Route::Session { .. }
            | Route::Recording { .. }
            | Route::SessionEvents { .. }
            | Route::Player { .. }
            | Route::Asset { .. }
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
                let body = if table {
                    resources::session_table(&sessions)
                } else {
                    resources::session_list(&sessions)
                };
                Some(json(StatusCode::OK, &body))
            })
            .unwrap_or_else(|| failure(StatusCode::INTERNAL_SERVER_ERROR, "index unavailable"))
        }
        Route::AuditEvents { namespace } => {
            let (filter, page) = match query::event_query(raw_query, namespace.as_deref()) {
                Ok(parsed) => parsed,
                Err(error) => return bad_query(&error),
            };
            read(&|index| {
                let mut events = index.events(&filter, page.saturating_add(1));
                let more = events.len() > page;
                events.truncate(page);
                let token = more
                    .then(|| events.last().map(|(key, _)| key.token()))
                    .flatten();
                let list = if table {
                    resources::audit_event_table(&events, token.as_deref())
                } else {
                    resources::audit_event_list(&events, token.as_deref())
                };
                Some(json(StatusCode::OK, &list))
            })
            .unwrap_or_else(|| failure(StatusCode::INTERNAL_SERVER_ERROR, "index unavailable"))
        }
        Route::Session { namespace, name } => {
            let get = |index: &Index| {
                index.session(&namespace, &name).map(|s| {
                    let body = if table {
                        resources::session_table(&[s])
                    } else {
                        resources::session(s)
                    };
                    json(StatusCode::OK, &body)
                })
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
                Some(json(
                    StatusCode::OK,
                    &resources::audit_event_list(&events, None),
                ))
            };
            if let Some(found) = read(&get) {
                return found;
            }
            state.refresh_on_miss().await;
            read(&get).unwrap_or_else(|| not_found(&namespace, &name))
        }
        Route::Recording { namespace, name } => recording(state, &namespace, &name).await,
        Route::Player { namespace, name } => player(state, &namespace, &name).await,
        Route::Asset { file, .. } => asset(&file),
        Route::Groups | Route::Group | Route::Resources => {
            failure(StatusCode::NOT_FOUND, "not a resource")
        }
    }
}

/// The player page of a known session, with the Content-Security-Policy the page names.
async fn player<A: Authorizer>(state: &State<A>, namespace: &str, name: &str) -> Response<Full> {
    let known = |state: &State<A>| {
        state
            .index
            .read()
            .ok()
            .is_some_and(|index| index.session(namespace, name).is_some())
    };
    if !known(state) {
        state.refresh_on_miss().await;
        if !known(state) {
            return not_found(namespace, name);
        }
    }
    let page = crate::player::page(namespace, name);
    let mut response = Response::new(Full::from(page.html));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    match HeaderValue::from_str(&page.content_security_policy) {
        Ok(csp) => {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        // A page whose policy cannot be sent is not served.
        Err(_) => return failure(StatusCode::INTERNAL_SERVER_ERROR, "player unavailable"),
    }
    response
}

/// One of the player's fixed files; any other name is a 404 (no client text reaches a path).
fn asset(name: &str) -> Response<Full> {
    let Some(asset) = crate::player::asset(name) else {
        return failure(StatusCode::NOT_FOUND, "no such player file");
    };
    let mut response = Response::new(Full::from(asset.bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    response
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
    let Ok(_turn) = state.recording_reads.acquire().await else {
        return failure(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
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
