//! The proxy's one error type: each variant names the operation that failed.

use std::path::PathBuf;

/// Everything that can go wrong in the proxy (refused logins are not errors: see
/// [`crate::access::Refusal`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Generating the per-session upstream key failed.
    #[error("generating upstream session key: {0}")]
    GenerateKey(russh::keys::ssh_key::Error),
    /// Signing the upstream certificate failed.
    #[error("signing upstream certificate: {0}")]
    SignUpstreamCertificate(gatehouse_ssh_ca::Error),
    /// Connecting or authenticating to the target host failed.
    #[error("connecting to {target}: {message}")]
    ConnectUpstream {
        /// host:port.
        target: String,
        /// What failed.
        message: String,
    },
    /// Writing a session's spool file failed.
    #[error("writing recording spool {path}: {source}")]
    WriteSpool {
        /// Spool file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// A recording reached its spool budget (per session or per replica).
    #[error("{message}")]
    SpoolBudget {
        /// Which limit, e.g. "this session's recording reached its limit of 1.0 GiB (…)".
        message: String,
    },
    /// An SFTP stream could not be followed for the audit.
    #[error("{0}")]
    AuditSftp(String),
    /// Reading a spooled recording (for upload) failed.
    #[error("reading recording spool {path}: {source}")]
    ReadSpool {
        /// Spool file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// A spool metadata file could not be parsed.
    #[error("parsing recording metadata {path}: {source}")]
    ParseSpoolMeta {
        /// Metadata file.
        path: PathBuf,
        /// JSON error.
        source: serde_json::Error,
    },
    /// Uploading a recording to the store failed.
    #[error("uploading recording {key}: {message}")]
    Upload {
        /// Object key.
        key: String,
        /// What failed.
        message: String,
    },
    /// A store request (put, get, list, delete) failed.
    #[error(transparent)]
    Store(#[from] gatehouse_store::Error),
    /// Writing a session record into the AccessRequest status failed.
    #[error("writing session record to AccessRequest {request}: {source}")]
    WriteSessionStatus {
        /// namespace/name.
        request: String,
        /// API error.
        source: kube::Error,
    },
    /// Recording an audit event durably failed (what it is about is refused).
    #[error("recording an audit event: {0}")]
    RecordAudit(gatehouse_store::Error),
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Serving or rendering health and metrics failed.
    #[error(transparent)]
    Serve(#[from] gatehouse_runtime::Error),
}

/// Result with the proxy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
