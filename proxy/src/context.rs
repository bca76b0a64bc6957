//! What every engineer connection and session shares: the live objects, the CA keys, the
//! limiter, metrics, the recording spool and upload queue, the session history writer, the
//! audit log and the shutdown signal. Built once in `main`; read by [`crate::server`] and
//! [`crate::session`].

use std::sync::Mutex;

use gatehouse_ssh_ca::CaKey;
use russh::keys::ssh_key::Fingerprint;

use crate::{
    inventory::Inventory,
    metrics::Metrics,
    network::AllowedTargets,
    ratelimit::RateLimiter,
    recording::{budget::SpoolBudget, live::LiveUploads, uploader::UploadQueue},
    session_history::SessionStatus,
};

/// Where recordings go and whether they can be written.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// Spool directory.
    pub spool_dir: std::path::PathBuf,
    /// Finished spools are handed to the uploader here.
    pub queue: UploadQueue,
    /// What one session and the whole spool may hold.
    pub budget: std::sync::Arc<SpoolBudget>,
    /// Copies live recordings to the store in pieces while sessions run.
    pub live: LiveUploads,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Live objects.
    pub inventory: Inventory,
    /// The user CA's fingerprint: certificates must be signed by it.
    pub user_ca: Fingerprint,
    /// Signs upstream certificates.
    pub upstream_ca: CaKey,
    /// Where upstream connections may go.
    pub allowed_targets: AllowedTargets,
    /// Failed-login limiter.
    pub limiter: Mutex<RateLimiter>,
    /// Metrics.
    pub metrics: Metrics,
    /// Recording spool and upload queue.
    pub recording: RecordingSettings,
    /// Session records in AccessRequest status.
    pub status: SessionStatus,
    /// Audit events: to the log and durably to the store.
    pub audit: crate::audit_log::AuditLog,
    /// Open sessions per request, for the policies' `session.maxSessions`.
    pub request_sessions: crate::session_limits::RequestSessions,
    /// Becomes true when the proxy shuts down: every connection ends with a message.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}
