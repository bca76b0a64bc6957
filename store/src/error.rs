//! The store's one error type: each variant names the operation that failed.

use std::path::PathBuf;

/// Everything that can go wrong reading from or writing to the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the local file to be stored failed.
    #[error("reading {path}: {source}")]
    ReadSource {
        /// The file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// An Object Lock flag's value is not valid.
    #[error("{flag}: {message}")]
    ObjectLockConfig {
        /// The flag (`--s3-object-lock-mode`, `--s3-object-lock-retention`).
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Object Lock is configured but the bucket cannot lock objects (or could not be asked).
    #[error("checking Object Lock on bucket {bucket}: {message}")]
    CheckObjectLock {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// A store request (put, get, list, delete) failed.
    #[error("store object {key}: {message}")]
    Request {
        /// Object key (or prefix).
        key: String,
        /// What failed.
        message: String,
    },
    /// A write-once put found another object (other content) under its key: nothing was
    /// written, the stored object is as it was.
    #[error("store object {key}: refusing to overwrite: {message}")]
    Exists {
        /// Object key.
        key: String,
        /// What is stored there instead.
        message: String,
    },
    /// Configuring the S3 store: a required setting is missing.
    #[error("{0}")]
    S3Options(String),
    /// Reading or writing the audit spool failed.
    #[error("audit spool {path}: {source}")]
    AuditSpool {
        /// The file or directory.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// Opening an audit writer with a name that cannot be a pod name.
    #[error("audit writer name {0:?} is not 1-253 characters of [a-z0-9.-]")]
    AuditWriterName(String),
    /// Recording an audit event: too many appends are waiting.
    #[error("audit event not recorded: {0} appends are already waiting")]
    AuditQueueFull(usize),
    /// Recording an audit event: the open segment is full and cannot be sealed yet (the
    /// writer's last batch in the store is not known: the store is unreachable).
    #[error(
        "audit event not recorded: the open segment is full and the writer's chain in the store is not known yet"
    )]
    AuditSegmentFull,
    /// Recording an audit event: an earlier spool write could not be undone; the writer
    /// refuses every append until it is reopened.
    #[error("audit event not recorded: the audit spool is broken by an earlier write error")]
    AuditBroken,
    /// Recording an audit event: appending to the spool failed (the error, as text).
    #[error("audit event not recorded: {0}")]
    AuditAppend(String),
    /// Opening an audit spool: no random run id could be drawn for a new chain.
    #[error("audit spool: drawing a random run id: {0}")]
    AuditRunId(String),
    /// Recording an audit event: the writer has stopped.
    #[error("audit event not recorded: the audit writer has stopped")]
    AuditStopped,
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
