//! The bridge's one error type: each variant names the operation that failed.

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Kubernetes configuration (in-cluster or KUBECONFIG).
    #[error("loading the Kubernetes client configuration: {0}")]
    KubeConfig(String),
    /// Building a client (for example one impersonating a mapped user).
    #[error("building a Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    /// Reading the identity mapping ConfigMap.
    #[error("reading ConfigMap {name}: {source}")]
    ReadMapping {
        /// The ConfigMap.
        name: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The identity mapping does not parse or names an identity the bridge refuses.
    #[error("identity mapping {name}: {message}")]
    BadMapping {
        /// The ConfigMap.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the notification records into a request's status.
    #[error("writing status.notifications of {what}: {source}")]
    WriteRecords {
        /// `AccessRequest ns/name`.
        what: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// Reading a webhook's HMAC key Secret.
    #[error("reading webhook key Secret {name}: {message}")]
    ReadWebhookKey {
        /// The Secret.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Setting up TLS (root certificates).
    #[error("setting up TLS: {0}")]
    Tls(String),
    /// An HTTP call (Slack Web API, a webhook) failed on the wire.
    #[error("calling {what}: {message}")]
    Http {
        /// The method or URL.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// Slack answered `ok: false`.
    #[error("Slack {method} answered error {error:?}")]
    Slack {
        /// The Web API method.
        method: String,
        /// Slack's error code (`channel_not_found`, `invalid_auth`, …).
        error: String,
    },
    /// Slack answered HTTP 429.
    #[error("Slack {method} is rate limited; retry after {retry_after_secs} s")]
    RateLimited {
        /// The Web API method.
        method: String,
        /// Seconds Slack asked us to wait.
        retry_after_secs: u64,
    },
    /// Registering or rendering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Rendering metrics failed.
    #[error(transparent)]
    RenderMetrics(#[from] gatehouse_runtime::Error),
    /// The Socket Mode WebSocket failed.
    #[error("Socket Mode connection: {0}")]
    SocketMode(String),
}

/// Result with the bridge's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
