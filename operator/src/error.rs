//! The operator's one error type: each variant names the operation that failed.

use std::time::Duration;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Generating a CA key failed.
    #[error("generating CA key: {0}")]
    GenerateCaKey(ssh_key::Error),
    /// A CA Secret holds something that is not an OpenSSH private key.
    #[error("reading CA key from Secret {secret}: {source}")]
    ReadCaKey {
        /// namespace/name of the Secret.
        secret: String,
        /// Parse error.
        source: ssh_key::Error,
    },
    /// Encoding a key or certificate as OpenSSH text failed.
    #[error("encoding {what}: {source}")]
    EncodeOpenSsh {
        /// What was being encoded.
        what: &'static str,
        /// Encoder error.
        source: ssh_key::Error,
    },
    /// The requester's public key could not be used.
    #[error("spec.publicKey: {0}")]
    ParsePublicKey(String),
    /// Signing a certificate failed.
    #[error("signing certificate: {0}")]
    SignCertificate(ssh_key::Error),
    /// Writing status or events failed after retries.
    #[error("patching status of {object}: {source}")]
    PatchStatus {
        /// namespace/name of the object.
        object: String,
        /// API error.
        source: kube::Error,
    },
    /// An object lacks a field the API server should always set.
    #[error("{object} has no {field}")]
    MissingField {
        /// The object.
        object: String,
        /// The field.
        field: &'static str,
    },
    /// Serialising an object failed.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What.
        what: &'static str,
        /// Error.
        source: serde_json::Error,
    },
    /// The clock is before 1970 or beyond what certificates can express.
    #[error("system clock unusable: {0:?}")]
    Clock(Duration),
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
