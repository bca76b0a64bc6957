//! The operator's one error type: each variant names the operation that failed.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CA key or certificate operation failed (generating, reading, signing, encoding).
    #[error(transparent)]
    Certificate(#[from] gatehouse_ssh_ca::Error),
    /// Reading a Secret from the API failed.
    #[error("reading Secret {name}: {source}")]
    ReadSecret {
        /// Secret name (in the operator's namespace).
        name: String,
        /// API error.
        source: kube::Error,
    },
    /// Creating a Secret failed (other than losing a create race).
    #[error("creating Secret {name}: {source}")]
    CreateSecret {
        /// Secret name.
        name: String,
        /// API error.
        source: kube::Error,
    },
    /// A Secret exists but does not hold what Gatehouse stored there. It is never replaced.
    #[error(
        "Secret {name} {problem}; it is never replaced automatically (delete it only if you mean to rotate)"
    )]
    SecretContent {
        /// Secret name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Generating the webhook serving CA or a serving certificate failed.
    #[error("issuing webhook serving certificate: {source}")]
    IssueServingCertificate {
        /// rcgen error.
        source: rcgen::Error,
    },
    /// The webhook's client CA file could not be used.
    #[error("--webhook-client-ca-file: {0}")]
    ReadClientCa(String),
    /// Building the webhook's TLS configuration failed.
    #[error("configuring webhook TLS: {0}")]
    ConfigureTls(rustls::Error),
    /// Injecting the caBundle into a webhook configuration failed.
    #[error("injecting caBundle into {kind} {name}: {source}")]
    InjectCaBundle {
        /// MutatingWebhookConfiguration or ValidatingWebhookConfiguration.
        kind: &'static str,
        /// Its name.
        name: String,
        /// API error.
        source: kube::Error,
    },
    /// Asking the API server whether a user may approve failed.
    #[error("SubjectAccessReview for {user}: {source}")]
    ReviewAccess {
        /// The user being checked.
        user: String,
        /// API error.
        source: kube::Error,
    },
    /// Reading an object the reconciler needs failed.
    #[error("reading {what}: {source}")]
    ReadObject {
        /// Kind and name.
        what: String,
        /// API error.
        source: kube::Error,
    },
    /// Writing an AccessRequest's or HostGroup's status failed.
    #[error("writing status of {what}: {source}")]
    WriteStatus {
        /// Kind and namespace/name.
        what: String,
        /// API error.
        source: kube::Error,
    },
    /// Adding or removing the AccessRequest finalizer failed.
    #[error("updating finalizer of {what}: {source}")]
    UpdateFinalizer {
        /// namespace/name.
        what: String,
        /// API error.
        source: kube::Error,
    },
    /// Publishing a ConfigMap (CA keys, principals, revocations) failed.
    #[error("publishing ConfigMap {name}: {source}")]
    PublishConfigMap {
        /// ConfigMap name.
        name: String,
        /// API error.
        source: kube::Error,
    },
    /// The stored revocation list does not parse: publishing stops rather than lose entries.
    #[error(
        "ConfigMap {configmap} holds a revocation list that does not parse ({problem}); fix or delete its revoked.json only if no revoked certificate is still valid"
    )]
    CorruptRevocationList {
        /// The ConfigMap.
        configmap: &'static str,
        /// What the parser said.
        problem: String,
    },
    /// The revocation list would not fit in its ConfigMap.
    #[error(
        "the revocation list would hold {entries} entries ({bytes} bytes), more than a ConfigMap can store"
    )]
    RevocationListFull {
        /// Entries.
        entries: usize,
        /// Bytes as stored.
        bytes: usize,
    },
    /// Serving HTTP (health, metrics) failed.
    #[error(transparent)]
    Serve(#[from] gatehouse_runtime::Error),
    /// Registering or encoding metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
