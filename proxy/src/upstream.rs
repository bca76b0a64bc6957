//! The proxy's own SSH connection to a target host. Data comes from a [`Grant`] (where, as
//! whom, with which certificate options) and the upstream CA; it goes out as an authenticated
//! russh client handle. The host must prove the identity pinned in its HostGroup; the proxy
//! proves its own with a fresh Ed25519 key and a one-minute certificate whose key id names the
//! engineer and the request, so the target's auth log names the human.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gatehouse_crds::contract::identity;
use gatehouse_ssh_ca::{self as cert, CaKey, UserCertSpec};
use russh::{
    client,
    keys::ssh_key::{getrandom::SysRng, rand_core::UnwrapErr},
    keys::{Algorithm, PrivateKey, PublicKeyOrCertificate},
};

use crate::{
    access::Grant,
    error::{Error, Result},
    hostkey,
    network::AllowedTargets,
    transport,
};

/// Lifetime of an upstream certificate: long enough to authenticate, useless if stolen.
pub const CERT_LIFETIME: Duration = Duration::from_secs(60);
/// Giving up on an unreachable target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the target's host key; remembers why it refused one.
#[derive(Debug)]
pub struct UpstreamHandler {
    grant: Arc<Grant>,
    refusal: Arc<Mutex<Option<String>>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl client::Handler for UpstreamHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match hostkey::verify(key, &self.grant.host, &self.grant.host_ca_keys, unix_now()) {
            Ok(()) => Ok(true),
            Err(message) => {
                if let Ok(mut refusal) = self.refusal.lock() {
                    *refusal = Some(message);
                }
                Ok(false)
            }
        }
    }
}

/// The key id of an upstream certificate.
pub fn upstream_key_id(grant: &Grant, connection: &str) -> String {
    identity::upstream_key_id(
        &grant.request.namespace,
        &grant.request.name,
        &grant.requester,
        connection,
    )
}

/// A fresh key and its certificate for one upstream login.
pub fn credentials(
    grant: &Grant,
    ca: &CaKey,
    connection: &str,
    now: u64,
) -> Result<(PrivateKey, russh::keys::Certificate)> {
    let key = PrivateKey::random(&mut UnwrapErr(SysRng), Algorithm::Ed25519)
        .map_err(Error::GenerateKey)?;
    let public = key.public_key().to_openssh().map_err(Error::GenerateKey)?;
    let (valid_after, _) = cert::validity(now, CERT_LIFETIME);
    let certificate = cert::sign_user_cert(
        ca,
        &UserCertSpec {
            public_key: &public,
            serial: cert::random_serial(),
            key_id: upstream_key_id(grant, connection),
            // Bound to the namespace, HostGroup, host and login: the host's
            // AuthorizedPrincipalsFile accepts nothing else (never the bare login).
            principals: vec![identity::upstream_principal(
                &grant.request.namespace,
                &grant.host_group,
                &grant.host.name,
                &grant.login,
            )],
            valid_after,
            valid_before: now + CERT_LIFETIME.as_secs(),
            extensions: &grant.extensions,
            force_command: grant.force_command.as_deref(),
            source_addresses: &[],
        },
    )
    .map_err(Error::SignUpstreamCertificate)?;
    Ok((key, certificate))
}

/// Connect to the grant's host, verify it, and log in as the grant's login.
pub async fn connect(
    grant: Arc<Grant>,
    ca: &CaKey,
    allowed: &AllowedTargets,
    connection: &str,
) -> Result<client::Handle<UpstreamHandler>> {
    let host = &grant.host;
    let target = format!("{}:{}", host.address, host.port);
    let failed = |message: String| Error::ConnectUpstream {
        target: target.clone(),
        message,
    };
    let mut config = client::Config {
        keepalive_interval: Some(Duration::from_secs(30)),
        // Data packets go out as they come: no Nagle delay on the upstream leg either.
        nodelay: true,
        preferred: transport::preferred(),
        window_size: transport::UPSTREAM_WINDOW,
        maximum_packet_size: transport::UPSTREAM_MAX_PACKET,
        ..client::Config::default()
    };
    if !grant.host_ca_keys.is_empty() {
        // Offer host certificates only where a host CA is configured.
        config.preferred.host_key_certificates = Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
        ]);
    }
    let refusal = Arc::new(Mutex::new(None));
    let handler = UpstreamHandler {
        grant: grant.clone(),
        refusal: refusal.clone(),
    };
    let port = u16::try_from(host.port).map_err(|_| failed(format!("bad port {}", host.port)))?;
    // Resolve once and dial only an allowed address, so a name cannot re-resolve elsewhere.
    let resolved: Vec<SocketAddr> = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((host.address.as_str(), port)),
    )
    .await
    .map_err(|_| {
        failed(format!(
            "resolving {} took longer than {CONNECT_TIMEOUT:?}",
            host.address
        ))
    })?
    .map_err(|e| failed(format!("resolving {}: {e}", host.address)))?
    .collect();
    let Some(address) = resolved
        .iter()
        .copied()
        .find(|a| allowed.allows(a.ip(), a.port()))
    else {
        return Err(failed(format!(
            "{} is outside the targets this proxy may reach (allowed: {}; chart value proxy.allowedTargets)",
            resolved
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            allowed.describe()
        )));
    };
    let connecting = client::connect(Arc::new(config), address, handler);
    let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => return Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(error)) => {
            let why = refusal.lock().ok().and_then(|r| r.clone());
            return Err(failed(why.unwrap_or_else(|| error.to_string())));
        }
        Ok(Ok(handle)) => handle,
    };
    let (key, certificate) = credentials(&grant, ca, connection, unix_now())?;
    let auth = handle
        .authenticate_openssh_cert(grant.login.clone(), Arc::new(key), certificate)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !auth.success() {
        return Err(failed(format!(
            "the target refused login {:?} with the upstream certificate (its sshd must trust the Gatehouse upstream CA and accept principal {:?} for this login: see HostGroup {}/{} status.hosts)",
            grant.login,
            identity::upstream_principal(
                &grant.request.namespace,
                &grant.host_group,
                &grant.host.name,
                &grant.login
            ),
            grant.request.namespace,
            grant.host_group
        )));
    }
    Ok(handle)
}
