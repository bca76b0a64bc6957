//! What the handlers share: the index of audit events (refreshed from the store: batches
//! listed under `audit/`, each fetched once, [`PARALLEL_FETCHES`] at a time), the store the
//! casts are read from ([`MAX_RECORDING_READS`] at once), the current front-proxy trust and
//! the metrics. Filled by [`crate::server`], read by [`crate::handlers`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse_store::Store;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::sync::Semaphore;

use crate::authn::FrontProxy;
use crate::authz::Authorizer;
use crate::error::Result;
use crate::index::{AUDIT_PREFIX, Index, parse_batch_key};
use gatehouse_runtime::metrics::MetricSet;

/// Batches fetched from the store at once while the index catches up.
pub const PARALLEL_FETCHES: usize = 8;
/// A lookup that misses re-lists the store at most this often.
pub const MISS_INTERVAL: Duration = Duration::from_secs(1);
/// Recordings read from the store at once (the store reads whole objects); more
/// wait their turn.
pub const MAX_RECORDING_READS: usize = 4;
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

    pub(crate) fn front_proxy(&self) -> Option<Arc<FrontProxy>> {
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
