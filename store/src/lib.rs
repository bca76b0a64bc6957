//! Gatehouse's object store: recordings and audit batches in an S3 bucket (any S3-compatible
//! server) or a local directory. Data comes from the proxy's spool files and the audit writers'
//! batches; it goes to the bucket, and back out to readers (the audit API) by key and prefix.
//! No Kubernetes here: callers decide keys and what the objects mean, except for [`audit`],
//! the durable writer of audit batches (`audit/<writer>/<sequence>.jsonl`).

pub mod audit;
mod error;
mod flags;
mod lock;
mod multipart;
mod objects;
mod once;
mod payload;
mod pieces;

pub use error::{Error, Result};
pub use flags::{StorageKind, StoreFlags};
pub use lock::{LockMode, MAX_RETENTION, MODE_FLAG, ObjectLock, ObjectLockFlags, RETENTION_FLAG};
pub use objects::{LocalStore, S3Config, S3Options, S3Store, Store, StoredRecording, hex};
