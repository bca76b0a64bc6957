//! The operator binary's audit store flags (`--audit-store none|local|s3`, the spool and the
//! store's settings, named as the proxy's), and the writer they open. Data comes from the
//! command line and the environment; it goes to a [`AuditWriter`] of `gatehouse-store`.

use std::{future::Future, path::PathBuf};

use anyhow::Context as _;
use clap::ValueEnum;
use gatehouse_store::{LocalStore, ObjectLock, S3Options, S3Store, Store, audit::AuditWriter};

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
    /// S3 endpoint URL (empty: AWS's regional endpoint).
    #[arg(long, env = "GATEHOUSE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "GATEHOUSE_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// S3 region.
    #[arg(long, env = "GATEHOUSE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Path-style S3 URLs (MinIO and most self-hosted servers).
    #[arg(long, env = "GATEHOUSE_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Prefix for object keys.
    #[arg(long, env = "GATEHOUSE_S3_PREFIX", default_value = "")]
    s3_prefix: String,
    /// S3 access key id (the chart reads it from a Secret).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    /// S3 secret access key (the chart reads it from a Secret).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// S3 Object Lock on every audit batch: none, governance or compliance (the proxy's
    /// setting; the bucket must have Object Lock enabled, or the operator does not start).
    #[arg(long, env = "GATEHOUSE_S3_OBJECT_LOCK_MODE", default_value = "none")]
    s3_object_lock_mode: String,
    /// How long each batch stays locked, like 30d (units s, m, h, d).
    #[arg(long, env = "GATEHOUSE_S3_OBJECT_LOCK_RETENTION", default_value = "")]
    s3_object_lock_retention: String,
}

impl AuditFlags {
    /// The writer named `writer` and its task to spawn; None with `--audit-store none`.
    /// Fails closed when Object Lock is asked for and the store cannot lock.
    pub async fn open(
        &self,
        writer: &str,
    ) -> anyhow::Result<Option<(AuditWriter, impl Future<Output = ()> + Send + 'static)>> {
        let lock = ObjectLock::parse(&self.s3_object_lock_mode, &self.s3_object_lock_retention)?;
        let store = match self.audit_store {
            AuditStore::None => return Ok(None),
            AuditStore::Local => Store::Local(LocalStore::new(self.storage_dir.clone())),
            AuditStore::S3 => Store::S3(S3Store::new(
                S3Options {
                    endpoint: self.s3_endpoint.clone(),
                    bucket: self.s3_bucket.clone(),
                    region: self.s3_region.clone(),
                    access_key_id: self.s3_access_key_id.clone(),
                    secret_access_key: self.s3_secret_access_key.clone(),
                    path_style: self.s3_path_style,
                    prefix: self.s3_prefix.clone(),
                }
                .config()
                .context("--audit-store s3")?,
            )),
        };
        let store = match (store, lock) {
            (store, None) => store,
            (Store::S3(s3), lock) => Store::S3(s3.with_object_lock(lock)),
            (Store::Local(_), Some(_)) => anyhow::bail!(
                "--s3-object-lock-mode {} needs --audit-store s3",
                self.s3_object_lock_mode
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
