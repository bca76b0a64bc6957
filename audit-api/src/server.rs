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
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse_store::Store;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::authn::{CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, FrontProxy, RequestHeaderConfig};
use crate::authz::Authorizer;
use crate::error::Result;
use crate::index::{AUDIT_PREFIX, Index, parse_batch_key};
use gatehouse_runtime::metrics::MetricSet;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time for the TLS handshake, and for each request head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches fetched from the store at once while the index catches up.
pub const PARALLEL_FETCHES: usize = 8;
/// A lookup that misses re-lists the store at most this often.
pub const MISS_INTERVAL: Duration = Duration::from_secs(1);
/// Recordings read from the store at once (the store reads whole objects); more
/// wait their turn.
pub const MAX_RECORDING_READS: usize = 4;
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
    /// Links between consecutive batches whose SHA-256 does not match.
    pub chain_breaks: IntCounter,
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
        let chain_breaks = IntCounter::new(
            "gatehouse_audit_api_chain_breaks_total",
            "Consecutive audit batches of a writer whose recorded SHA-256 does not match.",
        )?;
        let set = MetricSet::new(vec![
            Box::new(chain_breaks.clone()),
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
            chain_breaks,
        })
    }

    /// Prometheus text.
    pub fn render(&self) -> Result<String> {
        Ok(self.set.render()?)
    }
}

/// What the handlers share.
pub struct State<A> {
    pub(crate) index: RwLock<Index>,
    pub(crate) store: Store,
    front_proxy: RwLock<Arc<FrontProxy>>,
    pub(crate) authorizer: A,
    pub(crate) metrics: Metrics,
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    pub(crate) recording_reads: Semaphore,
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
            recording_reads: Semaphore::new(MAX_RECORDING_READS),
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
        let store = &self.store;
        let mut fetches = futures::stream::iter(fresh)
            .map(|key| async move {
                let got = store.get(&key).await;
                (key, got)
            })
            .buffer_unordered(PARALLEL_FETCHES);
        while let Some((key, got)) = fetches.next().await {
            let bytes = match got {
                Ok(bytes) => bytes,
                Err(error) => {
                    // Tried again at the next refresh.
                    self.metrics.store_errors.inc();
                    tracing::warn!(%key, %error, "reading an audit batch failed");
                    continue;
                }
            };
            let Ok(mut index) = self.index.write() else {
                break;
            };
            // Hashes are over the stored bytes: a batch that is not UTF-8 is not one.
            let Ok(text) = String::from_utf8(bytes) else {
                index.skip_batch(&key);
                self.metrics.batches_broken.inc();
                tracing::warn!(%key, "audit batch skipped: not UTF-8");
                continue;
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
        if let Ok(mut index) = self.index.write() {
            for problem in index.take_chain_breaks() {
                self.metrics.chain_breaks.inc();
                tracing::warn!(key = %problem.key, problem = %problem.problem,
                    "audit chain break");
            }
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
    pub(crate) async fn refresh_on_miss(&self) {
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
