//! The audit API's one error type: each variant names the operation that failed.

/// Everything that can go wrong serving the audit API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or parsing the serving certificate or key failed.
    #[error("reading the serving certificate: {0}")]
    ReadServingCert(String),
    /// Building the TLS configuration failed.
    #[error("configuring TLS: {0}")]
    ConfigureTls(#[from] rustls::Error),
    /// The requestheader settings in `kube-system/extension-apiserver-authentication` are
    /// missing or unusable.
    #[error("reading the requestheader configuration: {0}")]
    ReadRequestHeaderConfig(String),
    /// Reading a ConfigMap or creating a SubjectAccessReview failed.
    #[error("calling the Kubernetes API: {0}")]
    KubeApi(#[from] kube::Error),
    /// Listing or reading the store failed.
    #[error("reading the store: {0}")]
    ReadStore(#[from] gatehouse_store::Error),
    /// Registering or rendering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding a listener failed.
    #[error("listening: {0}")]
    Listen(#[from] gatehouse_runtime::Error),
}

/// Result with the audit API's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
