//! The HTTPS server and the index refresh. Data comes from the store (audit batches listed
//! under `audit/` every `--refresh` and on a miss, each fetched once, [`PARALLEL_FETCHES`] at
//! a time; casts fetched by the key a `recordingStored` event named), from ConfigMap
//! `kube-system/extension-apiserver-authentication` (re-read every minute) and from requests
//! the aggregator forwards; it goes out as JSON (or the cast's bytes) after the front-proxy
//! check ([`crate::authn`]) and a SubjectAccessReview ([`crate::authz`]).
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (more are closed at once; one that is not
//! the front proxy's closes after its first answer), a TLS handshake
//! and a request head must arrive within [`HANDSHAKE_TIMEOUT`], request bodies are never read
//! (only GET is served), a miss re-lists the store at most once per [`MISS_INTERVAL`], and
//! at most [`MAX_RECORDING_READS`] casts are read from the store at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::authn::{CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, FrontProxy, RequestHeaderConfig};
use crate::authz::Authorizer;
use crate::error::Result;
pub use crate::state::{MAX_RECORDING_READS, MISS_INTERVAL, Metrics, PARALLEL_FETCHES, State};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time for the TLS handshake, and for each request head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the requestheader ConfigMap is re-read.
pub const FRONT_PROXY_REFRESH: Duration = Duration::from_secs(60);

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
            // Only the front proxy keeps a connection open: anyone else gets one 401 and the
            // connection closes, so strangers cannot hold the connection slots.
            let keep_alive = front_proxy.is_ok();
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                let front_proxy = front_proxy.clone();
                async move {
                    Ok::<_, Infallible>(crate::handlers::handle(&state, front_proxy, request).await)
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
}
