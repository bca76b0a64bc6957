//! Authentication: only the API server's front proxy may speak for users. Data comes from
//! ConfigMap `kube-system/extension-apiserver-authentication` (the requestheader client CA,
//! allowed names and header names, read by [`crate::server`] at start and on every refresh),
//! the TLS handshake (the client's certificate chain) and the request headers; it goes to the
//! handlers as a [`UserInfo`], or as a refusal (401).
//!
//! The handshake takes any client certificate whose holder proves its key (the signature check
//! is rustls'), so that a missing or foreign certificate gets an HTTP 401 instead of a broken
//! handshake; right after, [`FrontProxy::verify_peer`] checks the chain with rustls'
//! [`WebPkiClientVerifier`] against the requestheader CA and the CN against the allowed names.
//! The `X-Remote-*` headers are read only after that check passed.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use crate::error::{Error, Result};
use crate::serving::ServingCert;

/// The ConfigMap the API server publishes its front-proxy settings in.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
/// Its name.
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";
/// Most groups taken from the headers.
const MAX_GROUPS: usize = 256;
/// Most extra values in all.
const MAX_EXTRA_VALUES: usize = 256;

/// The user the front proxy vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID, when the API server sends one.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (keys lowercased and unescaped, as the API server does).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a caller is not authenticated (a 401): a decision, not an error of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated(pub String);

/// The requestheader settings, as the API server publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// PEM of the CA(s) that sign the front proxy's client certificate.
    pub client_ca_pem: String,
    /// CNs allowed to act as the front proxy (empty: any certificate from the CA).
    pub allowed_names: Vec<String>,
    /// Headers holding the user name (the first present wins).
    pub username_headers: Vec<String>,
    /// Headers holding the UID.
    pub uid_headers: Vec<String>,
    /// Headers holding groups.
    pub group_headers: Vec<String>,
    /// Prefixes of headers holding extra attributes.
    pub extra_headers_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// From the ConfigMap's data. Without a client CA or a username header nobody can be
    /// authenticated: that is an error (the server does not start, or keeps its last settings).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self> {
        let bad = |m: String| Error::ReadRequestHeaderConfig(m);
        let list = |key: &str| -> Result<Vec<String>> {
            match data.get(key).map(|v| v.trim()) {
                None | Some("") => Ok(Vec::new()),
                Some(text) => serde_json::from_str::<Vec<String>>(text)
                    .map_err(|e| bad(format!("{key} is not a JSON list of strings: {e}"))),
            }
        };
        let client_ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|v| !v.trim().is_empty())
            .cloned()
            .ok_or_else(|| bad("no requestheader-client-ca-file".to_owned()))?;
        let username_headers = list("requestheader-username-headers")?;
        if username_headers.is_empty() {
            return Err(bad("no requestheader-username-headers".to_owned()));
        }
        Ok(Self {
            client_ca_pem,
            allowed_names: list("requestheader-allowed-names")?,
            username_headers,
            uid_headers: list("requestheader-uid-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_headers_prefixes: list("requestheader-extra-headers-prefix")?
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        })
    }
}

/// The front proxy's settings with the verifier for its certificate.
#[derive(Debug, Clone)]
pub struct FrontProxy {
    config: RequestHeaderConfig,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl FrontProxy {
    /// Build the verifier for `config`'s CA.
    pub fn new(config: RequestHeaderConfig) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(config.client_ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::ReadRequestHeaderConfig(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| Error::ReadRequestHeaderConfig(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(Error::ReadRequestHeaderConfig(
                "requestheader-client-ca-file holds no certificate".to_owned(),
            ));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Error::ReadRequestHeaderConfig(e.to_string()))?;
        Ok(Self { config, verifier })
    }

    /// The settings.
    pub fn config(&self) -> &RequestHeaderConfig {
        &self.config
    }

    /// Whether `chain` (the peer's certificates, end entity first) is the front proxy's: it
    /// chains to the requestheader CA (for client authentication, valid now) and its CN is
    /// allowed.
    pub fn verify_peer(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<(), Unauthenticated> {
        let refuse = |m: &str| Err(Unauthenticated(m.to_owned()));
        let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return refuse("no client certificate");
        };
        if let Err(error) =
            self.verifier
                .verify_client_cert(end_entity, intermediates, UnixTime::now())
        {
            return Err(Unauthenticated(format!(
                "the client certificate is not the front proxy's: {error}"
            )));
        }
        if self.config.allowed_names.is_empty() {
            return Ok(());
        }
        match common_name(end_entity) {
            Some(cn) if self.config.allowed_names.contains(&cn) => Ok(()),
            Some(cn) => Err(Unauthenticated(format!(
                "client certificate CN {cn:?} is not in requestheader-allowed-names"
            ))),
            None => refuse("the client certificate has no CN"),
        }
    }

    /// The user named by the headers (call only after [`verify_peer`](Self::verify_peer)).
    pub fn user(&self, headers: &HeaderMap) -> Result<UserInfo, Unauthenticated> {
        let first = |names: &[String]| {
            names.iter().find_map(|name| {
                headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        let Some(name) = first(&self.config.username_headers) else {
            return Err(Unauthenticated(
                "no user name in the request headers".to_owned(),
            ));
        };
        let mut user = UserInfo {
            name,
            uid: first(&self.config.uid_headers),
            ..UserInfo::default()
        };
        for header in &self.config.group_headers {
            for value in headers.get_all(header.as_str()) {
                if user.groups.len() >= MAX_GROUPS {
                    return Err(Unauthenticated("too many groups".to_owned()));
                }
                let value = value
                    .to_str()
                    .map_err(|_| Unauthenticated("a group header is not text".to_owned()))?;
                user.groups.push(value.to_owned());
            }
        }
        let mut extras = 0;
        for (name, value) in headers {
            let name = name.as_str();
            let Some(key) = self
                .config
                .extra_headers_prefixes
                .iter()
                .find_map(|p| name.strip_prefix(p.as_str()))
            else {
                continue;
            };
            extras += 1;
            if extras > MAX_EXTRA_VALUES {
                return Err(Unauthenticated("too many extra headers".to_owned()));
            }
            let value = value
                .to_str()
                .map_err(|_| Unauthenticated("an extra header is not text".to_owned()))?;
            let key = unescape(key).to_ascii_lowercase();
            user.extra.entry(key).or_default().push(value.to_owned());
        }
        Ok(user)
    }
}

/// Percent-decoding of an extra header's key (the API server escapes what headers cannot
/// carry).
fn unescape(key: &str) -> String {
    form_urlencoded::parse(format!("k={}", key.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The subject CN of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The one crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The handshake's client-certificate check: any certificate is taken if its holder proves the
/// key; whether it is the front proxy's is decided after the handshake by
/// [`FrontProxy::verify_peer`] (so the answer can be a 401).
#[derive(Debug)]
struct ProofOfKeyOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ProofOfKeyOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS server configuration: `serving` is the certificate; client certificates are asked
/// for and checked for proof of key (see [`ProofOfKeyOnly`]).
pub fn server_config(serving: Arc<ServingCert>) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(ProofOfKeyOnly {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
#[path = "authn_tests.rs"]
mod tests;
