//! The operator's key material, kept in Secrets in its own namespace.
//!
//! Data comes from the Kubernetes API (existing Secrets) or, only when a Secret is absent, from
//! fresh randomness; it goes out as in-memory keys: the user CA (signs engineers'
//! certificates), the upstream CA (the proxy signs per-session certificates with it; the operator
//! only publishes its public half), and admission's keys (the HMAC key sealing decision records,
//! the webhook serving CA).
//!
//! Every Secret is created with create-if-absent semantics: a `create` that loses a race (409)
//! re-reads the winner's Secret, and an existing Secret is never replaced, even when it is
//! unreadable — a replaced CA would lock every engineer out. Key material is never logged.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use gatehouse_crds::contract::{
    MANAGED_BY_LABEL, managers,
    secrets::{
        ADMISSION, CA_PRIVATE_KEY, CA_PUBLIC_KEY, HOST_PRIVATE_KEY, HOST_PUBLIC_KEY, PROXY_HOST_KEY,
    },
};
use gatehouse_ssh_ca::CaKey;

use crate::{
    decisions::{SealKey, SealKeys},
    error::{Error, Result},
    seal_keys,
};

const WEBHOOK_CA_CERT: &str = "webhook-ca.crt";
const WEBHOOK_CA_KEY: &str = "webhook-ca.key";

/// The webhook serving CA: its certificate (the caBundle) and key (signs serving certificates).
pub struct WebhookCa {
    /// PEM certificate, injected as the webhook configurations' caBundle.
    pub cert_pem: String,
    key_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for WebhookCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCa")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Admission's keys.
#[derive(Debug)]
pub struct AdmissionKeys {
    /// Seal and verify decision records.
    pub seal: SealKeys,
    /// Signs the webhook's serving certificates.
    pub webhook_ca: WebhookCa,
}

fn labels() -> BTreeMap<String, String> {
    [(MANAGED_BY_LABEL.to_owned(), managers::OPERATOR.to_owned())].into()
}

/// Read Secret `name`, or create it from `make()` if absent. Never replaces an existing Secret.
async fn ensure_secret(
    api: &Api<Secret>,
    name: &str,
    make: impl FnOnce() -> Result<BTreeMap<String, ByteString>>,
) -> Result<Secret> {
    let read = |source| Error::ReadSecret {
        name: name.to_owned(),
        source,
    };
    if let Some(existing) = api.get_opt(name).await.map_err(read)? {
        return Ok(existing);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        data: Some(make()?),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            tracing::info!(secret = name, "created Secret");
            Ok(created)
        }
        // Another replica created it first: its key wins, ours is dropped unused.
        Err(kube::Error::Api(status)) if status.code == 409 => api.get(name).await.map_err(read),
        Err(source) => Err(Error::CreateSecret {
            name: name.to_owned(),
            source,
        }),
    }
}

fn field<'a>(secret: &'a Secret, name: &str, key: &str) -> Result<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| bytes.0.as_slice())
        .ok_or_else(|| Error::SecretContent {
            name: name.to_owned(),
            problem: format!("has no data key {key:?}"),
        })
}

fn text<'a>(secret: &'a Secret, name: &str, key: &str) -> Result<&'a str> {
    std::str::from_utf8(field(secret, name, key)?).map_err(|_| Error::SecretContent {
        name: name.to_owned(),
        problem: format!("data key {key:?} is not UTF-8"),
    })
}

/// Ensure the CA Secret `name` exists and return its key.
pub async fn ensure_ca(api: &Api<Secret>, name: &str) -> Result<CaKey> {
    let key = ensure_ed25519(api, name, CA_PRIVATE_KEY, CA_PUBLIC_KEY).await?;
    tracing::info!(secret = name, fingerprint = %key.fingerprint(), "CA ready");
    Ok(key)
}

/// Ensure the proxy host key Secret exists and return the key.
pub async fn ensure_proxy_host_key(api: &Api<Secret>) -> Result<CaKey> {
    let key = ensure_ed25519(api, PROXY_HOST_KEY, HOST_PRIVATE_KEY, HOST_PUBLIC_KEY).await?;
    tracing::info!(secret = PROXY_HOST_KEY, fingerprint = %key.fingerprint(), "proxy host key ready");
    Ok(key)
}

/// An Ed25519 key kept in Secret `name` under `private`/`public`, created once.
async fn ensure_ed25519(
    api: &Api<Secret>,
    name: &str,
    private: &str,
    public: &str,
) -> Result<CaKey> {
    let secret = ensure_secret(api, name, || {
        let key = CaKey::generate(name)?;
        Ok([
            (
                private.to_owned(),
                ByteString(key.to_openssh()?.as_bytes().to_vec()),
            ),
            (
                public.to_owned(),
                ByteString(key.public_key_line()?.into_bytes()),
            ),
        ]
        .into())
    })
    .await?;
    Ok(CaKey::from_openssh(text(&secret, name, private)?, name)?)
}

fn webhook_ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "gatehouse-webhook-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    params
}

fn new_admission_data() -> Result<BTreeMap<String, ByteString>> {
    let tls = |source| Error::IssueServingCertificate { source };
    let mut seal = vec![0u8; SealKey::LEN];
    getrandom_fill(&mut seal);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls)?;
    let cert = webhook_ca_params().self_signed(&key).map_err(tls)?;
    Ok([
        (seal_keys::key_name(1), ByteString(seal)),
        (
            WEBHOOK_CA_CERT.to_owned(),
            ByteString(cert.pem().into_bytes()),
        ),
        (
            WEBHOOK_CA_KEY.to_owned(),
            ByteString(key.serialize_pem().into_bytes()),
        ),
    ]
    .into())
}

/// Read the seal keys in force now (every replica, every 30 s: a rotation reaches them all).
pub async fn reload_seal_keys(api: &Api<Secret>, grace: Duration) -> Result<SealKeys> {
    let secret = api
        .get(ADMISSION)
        .await
        .map_err(|source| Error::ReadSecret {
            name: ADMISSION.to_owned(),
            source,
        })?;
    seal_keys_in(&secret, grace)
}

/// Rotate the seal key when it is older than `period` or the Secret asks for it, and drop keys
/// retired more than `grace` ago (the leader, every minute). Returns the version now sealing
/// when it changed. A concurrent change to the Secret conflicts and is retried next time.
pub async fn rotate_seal_keys(
    api: &Api<Secret>,
    period: Duration,
    grace: Duration,
) -> Result<Option<u32>> {
    let read = |source| Error::ReadSecret {
        name: ADMISSION.to_owned(),
        source,
    };
    let mut secret = api.get(ADMISSION).await.map_err(read)?;
    let created = secret
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(jiff::Timestamp::now, |t| t.0);
    let requested = secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(seal_keys::ROTATE_ANNOTATION));
    let Some(rotation) = seal_keys::plan(
        &seal_data(&secret),
        created,
        jiff::Timestamp::now(),
        period,
        grace,
        requested,
    ) else {
        return Ok(None);
    };
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    let new_version = rotation.new_key.as_ref().map(|(version, name)| {
        let mut bytes = vec![0u8; SealKey::LEN];
        getrandom_fill(&mut bytes);
        data.insert(name.clone(), ByteString(bytes));
        *version
    });
    for (name, value) in rotation.set {
        data.insert(name, ByteString(value.into_bytes()));
    }
    for name in &rotation.remove {
        data.remove(name);
    }
    if let Some(annotations) = secret.metadata.annotations.as_mut() {
        annotations.remove(seal_keys::ROTATE_ANNOTATION);
    }
    // replace() carries the resourceVersion read above: a concurrent writer makes it conflict.
    api.replace(ADMISSION, &PostParams::default(), &secret)
        .await
        .map_err(|source| Error::CreateSecret {
            name: ADMISSION.to_owned(),
            source,
        })?;
    if let Some(version) = new_version {
        tracing::info!(secret = ADMISSION, version, "rotated the decision seal key");
    }
    if !rotation.remove.is_empty() {
        tracing::info!(secret = ADMISSION, removed = ?rotation.remove, "removed seal keys past their grace period");
    }
    Ok(new_version)
}

fn getrandom_fill(buf: &mut [u8]) {
    use ssh_key::rand_core::{Rng as _, UnwrapErr};
    UnwrapErr(ssh_key::getrandom::SysRng).fill_bytes(buf);
}

fn seal_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("seal."))
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn seal_keys_in(secret: &Secret, grace: Duration) -> Result<SealKeys> {
    seal_keys::in_force(&seal_data(secret), jiff::Timestamp::now(), grace).map_err(|problem| {
        Error::SecretContent {
            name: ADMISSION.to_owned(),
            problem,
        }
    })
}

/// Ensure admission's Secret exists and return its keys; seal keys retired more than `grace`
/// ago no longer verify.
pub async fn ensure_admission(api: &Api<Secret>, grace: Duration) -> Result<AdmissionKeys> {
    let secret = ensure_secret(api, ADMISSION, new_admission_data).await?;
    Ok(AdmissionKeys {
        seal: seal_keys_in(&secret, grace)?,
        webhook_ca: WebhookCa {
            cert_pem: text(&secret, ADMISSION, WEBHOOK_CA_CERT)?.to_owned(),
            key_pem: zeroize::Zeroizing::new(text(&secret, ADMISSION, WEBHOOK_CA_KEY)?.to_owned()),
        },
    })
}

/// A serving certificate and its key, both DER.
pub struct ServingCertificate {
    /// The leaf certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 private key.
    pub key_der: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl WebhookCa {
    /// Issue a serving certificate for `names` (DNS names or IP addresses), valid for `days`.
    /// Each replica issues its own at start and again before it expires; only the CA is shared.
    pub fn issue(&self, names: &[String], days: i64) -> Result<ServingCertificate> {
        let tls = |source| Error::IssueServingCertificate { source };
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(tls)?;
        let issuer = rcgen::Issuer::new(webhook_ca_params(), ca_key);
        let mut params = CertificateParams::new(names.to_vec()).map_err(tls)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse-webhook");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        // Starts an hour back for clock skew; rotated long before the end.
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        Ok(ServingCertificate {
            cert_der: cert.der().to_vec(),
            key_der: zeroize::Zeroizing::new(key.serialize_der()),
        })
    }
}
