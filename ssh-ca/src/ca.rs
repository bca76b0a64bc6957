//! A certificate authority's key: generated once, kept as OpenSSH text in a Secret, never
//! printed. Data comes from fresh randomness or the Secret's text; it goes out as the public
//! key line hosts trust, fingerprints for logs, and the signer of certificates and KRLs.

use ssh_key::{
    Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, getrandom::SysRng, rand_core::UnwrapErr,
};

use crate::error::{Error, Result};

/// A certificate authority's private key. `Debug` shows only the public fingerprint.
pub struct CaKey {
    pub(crate) key: PrivateKey,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey")
            .field("fingerprint", &self.fingerprint())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl CaKey {
    /// Generate a new Ed25519 CA key from the operating system's randomness.
    pub fn generate(comment: &str) -> Result<Self> {
        let mut key = PrivateKey::random(&mut UnwrapErr(SysRng), Algorithm::Ed25519)
            .map_err(Error::GenerateKey)?;
        key.set_comment(comment);
        Ok(Self { key })
    }

    /// Read a CA key from OpenSSH private key text (as stored in its Secret).
    pub fn from_openssh(text: &str, secret: &str) -> Result<Self> {
        let key = PrivateKey::from_openssh(text).map_err(|source| Error::ReadCaKey {
            secret: secret.to_owned(),
            source,
        })?;
        Ok(Self { key })
    }

    /// The private key as OpenSSH text, for its Secret. Zeroised on drop.
    pub fn to_openssh(&self) -> Result<zeroize::Zeroizing<String>> {
        self.key
            .to_openssh(LineEnding::LF)
            .map_err(|source| Error::EncodeOpenSsh {
                what: "CA private key",
                source,
            })
    }

    /// The public key as one `ssh-ed25519 AAAA… comment` line (for `TrustedUserCAKeys`).
    pub fn public_key_line(&self) -> Result<String> {
        self.key
            .public_key()
            .to_openssh()
            .map_err(|source| Error::EncodeOpenSsh {
                what: "CA public key",
                source,
            })
    }

    /// SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_key_round_trips_and_never_prints_its_secret() {
        let ca = CaKey::generate("user-ca").unwrap();
        let text = ca.to_openssh().unwrap();
        let back = CaKey::from_openssh(&text, "ns/secret").unwrap();
        assert_eq!(back.fingerprint(), ca.fingerprint());
        let debug = format!("{ca:?}");
        assert!(
            debug.contains("<redacted>") && debug.contains("SHA256:"),
            "{debug}"
        );
        assert!(!debug.contains("OPENSSH PRIVATE KEY"));
        assert!(CaKey::from_openssh("not a key", "ns/secret").is_err());
    }
}
