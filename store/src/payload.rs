//! One SHA-256 per uploaded byte. Data comes from the bytes of a PutObject or UploadPart body,
//! hashed once by the caller; the digest goes into the request three ways: the `sha256`
//! metadata (hex), the `x-amz-checksum-sha256` of locked writes (base64), and SigV4's
//! `x-amz-content-sha256` (hex), which the SDK would otherwise compute itself by hashing the
//! in-memory body again. The requests are byte for byte what the SDK would send; only the
//! second and third passes over the body are gone. The server checks the body against the
//! signed hash, so bytes that changed after they were hashed are refused, not stored.

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use sha2::{Digest, Sha256};

use crate::lock::base64;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of one request body (or of a whole object, for its metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadDigest([u8; 32]);

impl PayloadDigest {
    /// The digest of `data`.
    pub(crate) fn of(data: &[u8]) -> PayloadDigest {
        PayloadDigest::finish(Sha256::new_with_prefix(data))
    }

    /// The digest `hasher` has computed.
    pub(crate) fn finish(hasher: Sha256) -> PayloadDigest {
        PayloadDigest(hasher.finalize().into())
    }

    /// Lowercase hex: the `sha256` metadata, and what SigV4 signs.
    pub(crate) fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Base64: the value of `x-amz-checksum-sha256`.
    pub(crate) fn base64(&self) -> String {
        base64(&self.0)
    }

    /// An interceptor that hands this digest to the SigV4 signer as the payload's hash.
    pub(crate) fn signer(&self) -> SignWithDigest {
        SignWithDigest { hex: self.hex() }
    }
}

/// Tells the signer the body's SHA-256 (hex) instead of letting it hash the body; set per
/// request with `.customize().interceptor(..)`, before each attempt is signed.
#[derive(Debug)]
pub(crate) struct SignWithDigest {
    hex: String,
}

impl Intercept for SignWithDigest {
    fn name(&self) -> &'static str {
        "SignWithDigest"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Only where the SDK would sign the body as it is: a streaming choice of its own (an
        // aws-chunked body with trailers) is signed its way, never with a hash of other bytes.
        if cfg.load::<PayloadSigningOverride>().is_none() {
            cfg.interceptor_state()
                .store_put(PayloadSigningOverride::Precomputed(self.hex.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_digest_in_the_three_encodings() {
        let digest = PayloadDigest::of(b"abc");
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(digest.hex(), expected);
        assert_eq!(
            digest.base64(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(digest.signer().hex, expected);
        let mut hasher = Sha256::new();
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(PayloadDigest::finish(hasher), digest);
    }
}
