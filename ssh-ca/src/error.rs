//! The SSH CA's one error type: each variant names the operation that failed.

/// Everything that can go wrong while handling keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Generating a key failed.
    #[error("generating key: {0}")]
    GenerateKey(ssh_key::Error),
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
}

/// Result with the SSH CA's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
