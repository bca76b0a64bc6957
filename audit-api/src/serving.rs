//! The serving certificate. Data comes from `--tls-cert-file` and `--tls-private-key-file`
//! (a mounted Secret), read at start and re-read every [`RELOAD_EVERY`]; it goes to rustls as
//! the certificate of every new handshake. A rotated Secret is picked up without a restart; a
//! file that does not parse (a half-written update) keeps the last good certificate.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::authn::provider;
use crate::error::{Error, Result};

/// How often the files are re-read.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// The certificate served, replaceable while serving.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<CertifiedKey>>);

fn certified(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::ReadServingCert(e.to_string()))?;
    if chain.is_empty() {
        return Err(Error::ReadServingCert(
            "the certificate file holds no certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::ReadServingCert(format!("the key file: {e}")))?;
    let signer = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

impl ServingCert {
    /// From PEM: the chain (leaf first) and its private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        Ok(Self(RwLock::new(certified(cert_pem, key_pem)?)))
    }

    /// Serve this chain and key from the next handshake on; on error the current one stays.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let fresh = certified(cert_pem, key_pem)?;
        if let Ok(mut current) = self.0.write() {
            *current = fresh;
        }
        Ok(())
    }

    /// The chain served now.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.0.read().map(|c| c.cert.clone()).unwrap_or_default()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|key| Arc::clone(&key))
    }
}

/// Re-read `cert` and `key` every [`RELOAD_EVERY`] into `serving` when they changed.
pub async fn keep_fresh(serving: Arc<ServingCert>, cert: PathBuf, key: PathBuf) {
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let (Ok(cert_pem), Ok(key_pem)) =
            (tokio::fs::read(&cert).await, tokio::fs::read(&key).await)
        else {
            tracing::warn!(cert = %cert.display(), "re-reading the serving certificate failed");
            continue;
        };
        let files = (cert_pem, key_pem);
        if last.as_ref() == Some(&files) {
            continue;
        }
        match serving.replace(&files.0, &files.1) {
            Ok(()) => tracing::info!("serving certificate (re)loaded"),
            Err(error) => {
                tracing::warn!(%error, "the serving certificate files do not parse; keeping the last")
            }
        }
        last = Some(files);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_new_pair_replaces_the_served_one_and_a_bad_one_does_not() {
        let (a_cert, a_key) = pair("a");
        let (b_cert, b_key) = pair("b");
        let serving = ServingCert::from_pem(a_cert.as_bytes(), a_key.as_bytes()).unwrap();
        let cn = |s: &ServingCert| crate::authn::common_name(&s.chain()[0]);
        assert_eq!(cn(&serving).as_deref(), Some("a"));
        serving
            .replace(b_cert.as_bytes(), b_key.as_bytes())
            .unwrap();
        assert_eq!(cn(&serving).as_deref(), Some("b"));
        // Half-written files, or a key of another certificate: refused, b stays.
        assert!(serving.replace(b"", b_key.as_bytes()).is_err());
        assert!(serving.replace(b_cert.as_bytes(), b"junk").is_err());
        assert!(
            serving
                .replace(b_cert.as_bytes(), a_key.as_bytes())
                .is_err()
        );
        assert_eq!(cn(&serving).as_deref(), Some("b"));
        assert!(ServingCert::from_pem(a_cert.as_bytes(), b_key.as_bytes()).is_err());
    }
}
