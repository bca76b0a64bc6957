//! The operator binary's audit store flags (`--audit-store none|local|s3`, the spool and the
//! store's settings, named as the proxy's), and the writer they open. Data comes from the
//! command line and the environment; it goes to a [`AuditWriter`] of `gatehouse-store`.

use std::{future::Future, path::PathBuf};

use anyhow::Context as _;
use clap::ValueEnum;
use gatehouse_store::{ObjectLockFlags, StorageKind, StoreFlags, audit::AuditWriter};

/// Where audit events are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditStore {
    /// Nowhere: the log only.
    None,
    /// A local directory (`--storage-dir`).
    Local,
    /// An S3-compatible bucket (the `--s3-*` flags).
    S3,
}

/// The audit flags.
#[derive(Debug, clap::Args)]
pub struct AuditFlags {
    /// Where audit events go besides the log: `none`, or batches under `audit/` in a local
    /// directory or an S3 bucket (the recordings' store).
    #[arg(
        long,
        env = "GATEHOUSE_AUDIT_STORE",
        value_enum,
        default_value = "none"
    )]
    audit_store: AuditStore,
    /// Where audit events are spooled until their batches are in the store.
    #[arg(
        long,
        env = "GATEHOUSE_AUDIT_SPOOL_DIR",
        default_value = "/var/lib/gatehouse/audit-spool"
    )]
    audit_spool_dir: PathBuf,
    /// Where the store is (`--storage-dir`, the proxy's `--s3-*` flags).
    #[command(flatten)]
    store: StoreFlags,
    /// S3 Object Lock on every audit batch (the proxy's setting).
    #[command(flatten)]
    object_lock: ObjectLockFlags,
}

impl AuditFlags {
    /// The writer named `writer` and its task to spawn; None with `--audit-store none`.
    /// Fails closed when Object Lock is asked for and the store cannot lock.
    pub async fn open(
        &self,
        writer: &str,
    ) -> anyhow::Result<Option<(AuditWriter, impl Future<Output = ()> + Send + 'static)>> {
        let lock = self.object_lock.lock()?;
        let kind = match self.audit_store {
            AuditStore::None => return Ok(None),
            AuditStore::Local => StorageKind::Local,
            AuditStore::S3 => StorageKind::S3,
        };
        let store = self.store.open(kind, lock).context("--audit-store")?;
        store.check_object_lock().await?;
        let opened =
            AuditWriter::open(&self.audit_spool_dir, writer, store).with_context(|| {
                format!("opening the audit spool {}", self.audit_spool_dir.display())
            })?;
        Ok(Some(opened))
    }
}
