//! The writer's two loops. The appender owns the spool: it takes appends from the bounded
//! queue (all that are waiting, one fsync for the lot), acknowledges them once durable, and
//! seals the segment when due. The uploader copies sealed batches, in sequence order, to the
//! store, create-only, deletes each once stored, and retries failures with a capped backoff
//! (a key holding other bytes is a conflict: never overwritten, the batch kept); when the
//! spool has no trace of the chain it first learns the writer's last batch from the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::decide::{self, Head, Upload};
use super::spool::{self, Spool};
use crate::error::{Error, Result};
use crate::objects::Store;

/// What the handle asks the appender.
#[derive(Debug)]
pub(super) enum Command {
    /// Append one event line; answered once it is fsynced.
    Append {
        line: String,
        done: oneshot::Sender<Result<()>>,
    },
    /// Seal what is open and stop taking appends; answered once sealed.
    Shutdown { done: oneshot::Sender<()> },
}

/// At shutdown, how long sealing waits for the store to tell where the chain stands (when
/// the spool did not know): after that, what is open stays in the spool for the next start.
const RESOLVE_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// Run `f` on the spool on the blocking pool. None: it panicked (the spool is gone).
async fn on_pool<T: Send + 'static>(
    mut spool: Spool,
    f: impl FnOnce(&mut Spool) -> T + Send + 'static,
) -> Option<(Spool, T)> {
    tokio::task::spawn_blocking(move || {
        let out = f(&mut spool);
        (spool, out)
    })
    .await
    .ok()
}

/// The appender. `resolved` brings the chain from the store when the spool did not know it;
/// `sealed` tells the uploader the newest sealed sequence.
pub(super) async fn append_loop(
    mut spool: Spool,
    mut queue: mpsc::Receiver<Command>,
    mut resolved: Option<oneshot::Receiver<Option<Head>>>,
    sealed: watch::Sender<Option<u64>>,
    pending: Arc<AtomicU64>,
) {
    // A leftover segment is sealed at once.
    let mut first = (spool.events() > 0).then(|| Instant::now() - decide::SEAL_AFTER);
    let mut stopped: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    loop {
        if !open
            && let Some(rx) = resolved.take()
            && let Ok(Ok(head)) = tokio::time::timeout(RESOLVE_AT_SHUTDOWN, rx).await
        {
            spool.set_head(head);
        }
        let now = Instant::now();
        if !open || decide::seal_due(spool.events(), first.map(Instant::into_std), now.into_std()) {
            let Some((back, result)) = on_pool(spool, Spool::seal).await else {
                tracing::error!("the audit spool task panicked; audit events are refused");
                return;
            };
            spool = back;
            match result {
                Ok(Some(sequence)) => {
                    pending.fetch_add(1, Ordering::Relaxed);
                    sealed.send_replace(Some(sequence));
                    first = None;
                }
                // The chain is not known yet: look again in a second (or when it is).
                Ok(None) if spool.events() > 0 => first = Some(now),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "sealing the audit segment failed; retrying in 1s");
                    first = Some(now);
                }
            }
        }
        if !open {
            if spool.events() > 0 {
                tracing::warn!(
                    events = spool.events(),
                    "audit events not sealed at shutdown stay in the spool for the next start"
                );
            }
            for done in stopped {
                let _ = done.send(());
            }
            return;
        }
        let wake = first.map(|f| f + decide::SEAL_AFTER);
        tokio::select! {
            head = async {
                match resolved.as_mut() {
                    Some(rx) => rx.await.ok(),
                    None => std::future::pending().await,
                }
            }, if resolved.is_some() => {
                resolved = None;
                if let Some(head) = head {
                    spool.set_head(head);
                }
            }
            command = queue.recv() => match command {
                None => open = false,
                Some(Command::Shutdown { done }) => {
                    stopped.push(done);
                    // What is queued still gets appended; then `recv` ends the loop.
                    queue.close();
                }
                Some(Command::Append { line, done }) => {
                    let mut group = vec![(line, done)];
                    let room = decide::room(spool.events());
                    while group.len() < room {
                        match queue.try_recv() {
                            Ok(Command::Append { line, done }) => group.push((line, done)),
                            Ok(Command::Shutdown { done }) => {
                                stopped.push(done);
                                queue.close();
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if room == 0 {
                        for (_, done) in group {
                            let _ = done.send(Err(Error::AuditSegmentFull));
                        }
                        continue;
                    }
                    let (lines, waiting): (Vec<String>, Vec<_>) = group.into_iter().unzip();
                    let Some((back, result)) = on_pool(spool, move |s| s.append(&lines)).await
                    else {
                        tracing::error!("the audit spool task panicked; audit events are refused");
                        return;
                    };
                    spool = back;
                    match result {
                        Ok(()) => {
                            first.get_or_insert_with(Instant::now);
                            for done in waiting {
                                let _ = done.send(Ok(()));
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "appending audit events failed; they are refused");
                            let text = error.to_string();
                            for done in waiting {
                                let _ = done.send(Err(Error::AuditAppend(text.clone())));
                            }
                        }
                    }
                }
            },
            () = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// The writer's last batch in the store (None: it has none), retried with backoff until the
/// store answers.
async fn resolve_from_store(store: &Store, writer: &str) -> Option<Head> {
    let prefix = decide::writer_prefix(writer);
    let mut attempt = 0;
    loop {
        let found = async {
            let keys = store.list(&prefix).await?;
            let newest = keys
                .iter()
                .filter_map(|k| k.strip_prefix(&prefix).and_then(decide::parse_batch_name))
                .max();
            let Some(sequence) = newest else {
                return Ok(None);
            };
            let bytes = store.get(&decide::batch_key(writer, sequence)).await?;
            Ok::<_, Error>(Some(spool::head_of(sequence, &bytes)))
        };
        match found.await {
            Ok(head) => {
                tracing::info!(
                    writer,
                    last = head.as_ref().map(|h| h.sequence),
                    "audit chain continues after the store's newest batch"
                );
                return head;
            }
            Err(error) => {
                let wait = decide::backoff(attempt);
                tracing::warn!(%error, retry_in = ?wait, "reading the audit chain from the store failed");
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Sealed batches of `dir` up to `upto`, by sequence.
async fn waiting(dir: &Path, upto: Option<u64>) -> Vec<(u64, PathBuf)> {
    let dir = dir.to_owned();
    let listed = tokio::task::spawn_blocking(move || spool::sealed(&dir)).await;
    match listed {
        Ok(Ok(found)) => found
            .into_iter()
            .filter(|(s, _)| upto.is_some_and(|u| *s <= u))
            .collect(),
        Ok(Err(error)) => {
            tracing::error!(%error, "listing the audit spool failed");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// The uploader's counters, shared with the handle.
#[derive(Debug)]
pub(super) struct Counts {
    /// Sealed batches not stored yet.
    pub(super) pending: Arc<AtomicU64>,
    /// Batches whose key held other bytes.
    pub(super) conflicts: Arc<AtomicU64>,
}

/// Store one sealed batch create-only, retrying until it is stored, then delete its file. A
/// key holding other bytes is never overwritten: the batch stays (and is retried) until
/// someone removes what took its key.
async fn upload(store: &Store, writer: &str, sequence: u64, path: &Path, counts: &Counts) {
    let key = decide::batch_key(writer, sequence);
    let mut attempt = 0;
    let mut conflicted = false;
    loop {
        let result = match tokio::fs::read(path).await {
            Ok(bytes) => store.put_new_object(&key, bytes).await,
            Err(source) => Err(Error::AuditSpool {
                path: path.to_owned(),
                source,
            }),
        };
        let outcome = decide::upload_outcome(&result);
        let Err(error) = result else {
            break;
        };
        let wait = decide::backoff(attempt);
        if outcome == Upload::Conflict {
            if !conflicted {
                conflicted = true;
                counts.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            tracing::error!(%error, key, path = %path.display(), retry_in = ?wait, "another audit batch is already stored under this batch's key: it is not overwritten, and this batch stays in the spool (no later batch is stored before it)");
        } else {
            tracing::warn!(%error, key, retry_in = ?wait, "storing an audit batch failed; it stays in the spool");
        }
        tokio::time::sleep(wait).await;
        attempt = attempt.saturating_add(1);
    }
    if let Err(error) = tokio::fs::remove_file(path).await {
        // Stored already: the next start uploads the same bytes again, found stored: done.
        tracing::warn!(%error, path = %path.display(), "removing a stored audit batch from the spool failed");
    }
    tracing::debug!(key, "audit batch stored");
}

/// The uploader: returns once the appender is gone and every sealed batch is stored.
pub(super) async fn upload_loop(
    dir: PathBuf,
    writer: String,
    store: Store,
    resolve: Option<oneshot::Sender<Option<Head>>>,
    mut sealed: watch::Receiver<Option<u64>>,
    counts: Counts,
) {
    if let Some(mut resolve) = resolve {
        let head = tokio::select! {
            head = resolve_from_store(&store, &writer) => Some(head),
            // The appender stopped first: what it holds waits in the spool for the next start.
            () = resolve.closed() => None,
        };
        if let Some(head) = head {
            let _ = resolve.send(head);
        }
    }
    loop {
        let upto = *sealed.borrow_and_update();
        let batches = waiting(&dir, upto).await;
        for (sequence, path) in &batches {
            upload(&store, &writer, *sequence, path, &counts).await;
            decrement(&counts.pending);
        }
        if !batches.is_empty() {
            continue;
        }
        if sealed.changed().await.is_err() {
            // The appender is gone: one last look for what it sealed at the end.
            let upto = *sealed.borrow();
            let rest = waiting(&dir, upto).await;
            if rest.is_empty() {
                return;
            }
            for (sequence, path) in &rest {
                upload(&store, &writer, *sequence, path, &counts).await;
                decrement(&counts.pending);
            }
            return;
        }
    }
}

fn decrement(pending: &AtomicU64) {
    let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(n.saturating_sub(1))
    });
}
