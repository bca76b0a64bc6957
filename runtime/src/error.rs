//! The plumbing's one error type: each variant names the operation that failed.

/// Everything that can go wrong in the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding a listener failed.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Registering or encoding metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Result with the plumbing's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
