//! The durable audit writer (issue 15). Data comes from the operator's and the proxy's audit
//! events ([`AuditWriter::record`]); each is appended to a segment file in a local spool
//! directory and fsynced before `record` returns, so a caller can fail closed. Every second
//! (or 1000 events) the segment is sealed into a batch ([`gatehouse_crds::audit::render_batch`],
//! its header holding the SHA-256 of the writer's previous batch), which is uploaded to
//! `audit/<writer>/<sequence:020>.jsonl` in the store and then deleted from the spool. An
//! outage of the store only delays uploads (retried with backoff, nothing dropped); a killed
//! process loses nothing acknowledged: [`AuditWriter::open`] seals and uploads what it finds.
//!
//! Batches are write-once: each upload is create-only ([`Store::put_new_object`]), so nothing
//! stored is ever replaced. The writer is `<pod name>.<run id>`, the run id drawn at random
//! when the spool is fresh and kept in it ([`spool::WRITER`]): a pod whose spool was lost, or
//! two pods of one name, write separate chains from sequence 0 instead of each other's keys.
//! Should a key be taken anyway (by another writer with other bytes), the batch stays in the
//! spool, the conflict is logged and counted ([`AuditWriter::conflicts`]) and retried.
//!
//! - [`decide`]: the pure decisions (sealing, sequence, backoff, what an upload's answer
//!   means, whose chain a spool holds, torn lines, names);
//! - [`spool`]: the spool files (synchronous, run on the blocking pool);
//! - `task`: the appender and uploader loops.

pub mod decide;
pub mod spool;
mod task;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_crds::audit::AuditEvent;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::objects::Store;
use task::Command;

/// At most this many appends wait for the appender; more are refused at once.
pub const QUEUE_CAPACITY: usize = 4096;

/// A handle to one writer's durable audit log; clones share it.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Command>,
    writer: Arc<str>,
    pending: Arc<AtomicU64>,
    conflicts: Arc<AtomicU64>,
}

impl AuditWriter {
    /// Open the spool in `spool_dir` for pod `pod_name` and recover what an earlier run left
    /// (see [`spool::Spool::open`]): a fresh spool starts a new run, writer
    /// `<pod_name>.<run id>` ([`name`](Self::name)). Returns the handle and the task to
    /// spawn: it appends, seals and uploads to `store`, and ends after
    /// [`shutdown`](Self::shutdown) (or once every handle is dropped) when everything sealed
    /// is stored.
    pub fn open(
        spool_dir: &Path,
        pod_name: &str,
        store: Store,
    ) -> Result<(AuditWriter, impl Future<Output = ()> + Send + 'static)> {
        if !decide::valid_writer(pod_name) {
            return Err(Error::AuditWriterName(pod_name.to_owned()));
        }
        let (spool, recovered) = spool::Spool::open(spool_dir, pod_name)?;
        let writer_name = spool.writer().to_owned();
        if recovered.new_run {
            tracing::info!(
                dir = %spool_dir.display(),
                writer = writer_name,
                "a fresh audit spool: a new run, whose chain starts at sequence 0"
            );
        } else if !writer_name.starts_with(&format!("{pod_name}.")) {
            tracing::info!(
                dir = %spool_dir.display(),
                writer = writer_name,
                pod = pod_name,
                "the audit spool's chain goes on under the writer it names"
            );
        }
        if recovered.torn_bytes > 0 || recovered.invalid_lines > 0 {
            tracing::warn!(
                dir = %spool_dir.display(),
                torn_bytes = recovered.torn_bytes,
                invalid_lines = recovered.invalid_lines,
                "the audit segment left by an earlier run ended in a torn line (never acknowledged) or held lines that are not events: dropped them"
            );
        }
        if recovered.events > 0 || recovered.sealed > 0 || recovered.already_sealed {
            tracing::info!(
                dir = %spool_dir.display(),
                events = recovered.events,
                sealed_batches = recovered.sealed,
                already_sealed = recovered.already_sealed,
                "recovered audit events left by an earlier run; sealing and uploading them"
            );
        }
        let newest_sealed = spool::sealed(spool_dir)?.last().map(|(s, _)| *s);
        let (resolve, resolved) = match spool.chain_known() {
            true => (None, None),
            false => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let (queue, commands) = mpsc::channel(QUEUE_CAPACITY);
        let (sealed_tx, sealed_rx) = watch::channel(newest_sealed);
        let pending = Arc::new(AtomicU64::new(recovered.sealed as u64));
        let conflicts = Arc::new(AtomicU64::new(0));
        let appender = task::append_loop(spool, commands, resolved, sealed_tx, pending.clone());
        let uploader = task::upload_loop(
            spool_dir.to_owned(),
            writer_name.clone(),
            store,
            resolve,
            sealed_rx,
            task::Counts {
                pending: pending.clone(),
                conflicts: conflicts.clone(),
            },
        );
        let run = async move {
            tokio::join!(appender, uploader);
        };
        let handle = AuditWriter {
            queue,
            writer: writer_name.into(),
            pending,
            conflicts,
        };
        Ok((handle, run))
    }

    /// Append `event` durably: Ok once its line is fsynced in the spool. Err (refuse what the
    /// event is about, where that matters): the queue is full, the spool failed, or the
    /// writer stopped.
    pub async fn record(&self, event: &AuditEvent) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let command = Command::Append {
            line: event.to_line(),
            done,
        };
        self.queue.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::AuditQueueFull(QUEUE_CAPACITY),
            mpsc::error::TrySendError::Closed(_) => Error::AuditStopped,
        })?;
        answer.await.map_err(|_| Error::AuditStopped)?
    }

    /// Seal what is open and stop taking events; returns once sealed. The task then ends as
    /// soon as every sealed batch is stored.
    pub async fn shutdown(&self) {
        let (done, sealed) = oneshot::channel();
        if self.queue.send(Command::Shutdown { done }).await.is_ok() {
            let _ = sealed.await;
        }
    }

    /// The writer's name (the chain's, in every batch header and key): `<pod>.<run id>` (the
    /// bare pod name for a spool of an earlier version, whose chain goes on).
    pub fn name(&self) -> &str {
        &self.writer
    }

    /// Sealed batches waiting for the store.
    pub fn pending_batches(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Batches found in conflict since the writer opened: their key held other bytes, so
    /// they were not stored (and stay in the spool, counted in
    /// [`pending_batches`](Self::pending_batches), retried).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
