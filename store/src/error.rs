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
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
