//! The operator binary's audit store flags (`--audit-store none|local|s3`, the spool and the
//! store's settings, named as the proxy's), and the writer they open. Data comes from the
//! command line and the environment; it goes to a [`AuditWriter`] of `gatehouse-store`.

use std::{future::Future, path::PathBuf};

use anyhow::Context as _;
use clap::ValueEnum;
use gatehouse_store::{LocalStore, ObjectLockFlags, S3Options, S3Store, Store, audit::AuditWriter};

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
    /// Directory of the local store.
    #[arg(
        long,
        env = "GATEHOUSE_STORAGE_DIR",
        default_value = "/var/lib/gatehouse/recordings"
    )]
    storage_dir: PathBuf,
    /// The S3 store (with `--audit-store s3`), the proxy's flags.
    #[command(flatten)]
    s3: S3Options,
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
        let store = match self.audit_store {
            AuditStore::None => return Ok(None),
            AuditStore::Local => Store::Local(LocalStore::new(self.storage_dir.clone())),
            AuditStore::S3 => Store::S3(S3Store::new(
                self.s3.clone().config().context("--audit-store s3")?,
            )),
        };
        let store = match (store, lock) {
            (store, None) => store,
            (Store::S3(s3), lock) => Store::S3(s3.with_object_lock(lock)),
            (Store::Local(_), Some(_)) => anyhow::bail!(
                "--s3-object-lock-mode {} needs --audit-store s3",
                self.object_lock.mode
            ),
        };
        store.check_object_lock().await?;
        let opened =
            AuditWriter::open(&self.audit_spool_dir, writer, store).with_context(|| {
                format!("opening the audit spool {}", self.audit_spool_dir.display())
            })?;
        Ok(Some(opened))
    }
}
