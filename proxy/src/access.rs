//! Who may log in through the proxy, to what. Pure: a certificate, the SSH user name, the
//! peer address, the clock and a view of the live objects in; a [`Grant`] or a [`Refusal`]
//! out.
//!
//! russh has already checked the certificate's signature, its validity window and the
//! client's possession of the key. Everything else is checked here: the signing CA, the
//! certificate type, the proxy principal, critical options, and that the AccessRequest the
//! certificate was issued for is still Issued, with this serial and key id, for this login
//! and a host of its HostGroup.

use std::{net::IpAddr, sync::Arc};

use gatehouse_crds::{
    AccessPolicy, AccessRequest, AccessRequestStatus, CertificateExtension, FileContentOptions,
    Host, HostGroup, HostGroupMode, Phase,
    contract::identity::{self, FORCE_COMMAND, SOURCE_ADDRESS},
    policy,
};
use kube::ResourceExt;
use russh::keys::{
    Certificate, HashAlg,
    ssh_key::{Fingerprint, certificate::CertType},
};

use crate::{
    network::source_address_allows,
    user_name::{self, TargetName},
};

/// The live objects the decision reads (reflector stores in the proxy, plain values in tests).
pub trait Lookup {
    /// An AccessRequest by namespace and name.
    fn request(&self, namespace: &str, name: &str) -> Option<Arc<AccessRequest>>;
    /// A HostGroup by namespace and name.
    fn host_group(&self, namespace: &str, name: &str) -> Option<Arc<HostGroup>>;
    /// An AccessPolicy by namespace and name.
    fn policy(&self, namespace: &str, name: &str) -> Option<Arc<AccessPolicy>>;
}

/// The request a grant rests on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID: a re-created request with the same name is a different request.
    pub uid: String,
}

impl std::fmt::Display for RequestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What an accepted login may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The AccessRequest.
    pub request: RequestRef,
    /// The certificate's serial.
    pub serial: u64,
    /// The requester's Kubernetes user name.
    pub requester: String,
    /// Who approved, in order.
    pub approvers: Vec<String>,
    /// The request's reason.
    pub reason: Option<String>,
    /// Unix login on the target.
    pub login: String,
    /// HostGroup name.
    pub host_group: String,
    /// The target host.
    pub host: Host,
    /// The HostGroup's host CA keys.
    pub host_ca_keys: Vec<String>,
    /// Unix seconds after which access ends.
    pub valid_before: u64,
    /// Certificate extensions, passed on to the upstream certificate.
    pub extensions: Vec<CertificateExtension>,
    /// `force-command`, passed on to the upstream certificate.
    pub force_command: Option<String>,
    /// Record what the engineer types.
    pub record_input: bool,
    /// Refuse or end sessions that cannot be recorded.
    pub recording_required: bool,
    /// The policy's `recording.allowForwards`: port forwards under `recording_required`.
    pub allow_forwards: bool,
    /// The policy's `recording.fileContent.maxBytesPerFile`: SFTP file content kept per file.
    pub sftp_content_bytes: Option<u64>,
    /// The policy's `session.idleTimeout` (an unparsable one, which the CRD's CEL rule keeps
    /// out, counts as the shortest allowed, 5 s: fail closed).
    pub idle_timeout: Option<std::time::Duration>,
    /// The policy's `session.maxSessions`.
    pub max_sessions: Option<u32>,
}

impl Grant {
    /// Whether the certificate grants an extension.
    pub fn permits(&self, extension: CertificateExtension) -> bool {
        self.extensions.contains(&extension)
    }
}

/// Why a login was refused: a short metric label and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Metric label (`untrusted_ca`, `not_issued`, …).
    pub reason: &'static str,
    /// What was wrong, naming the object and the rule.
    pub message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// Critical options the proxy understands; any other makes the certificate unusable, as in
/// OpenSSH.
const KNOWN_CRITICAL_OPTIONS: [&str; 2] = [FORCE_COMMAND, SOURCE_ADDRESS];

/// Decide a certificate login for SSH user name `user` from `peer` at unix time `now`.
pub fn authorize(
    cert: &Certificate,
    user: &str,
    peer: IpAddr,
    now: u64,
    user_ca: &Fingerprint,
    lookup: &dyn Lookup,
) -> Result<Grant, Refusal> {
    // Signature and validity again (cheap), but against the user CA only.
    cert.validate_at(now, [user_ca]).map_err(|e| {
        refuse(
            "untrusted_ca",
            format!(
                "certificate signed by {} is not valid for the Gatehouse user CA {user_ca}: {e}",
                cert.signature_key().fingerprint(HashAlg::Sha256)
            ),
        )
    })?;
    if cert.cert_type() != CertType::User {
        return Err(refuse("cert_type", "a host certificate cannot log in"));
    }
    for (name, value) in cert.critical_options().iter() {
        if !KNOWN_CRITICAL_OPTIONS.contains(&name.as_str()) {
            return Err(refuse(
                "critical_option",
                format!("unsupported critical option {name:?}"),
            ));
        }
        if name == SOURCE_ADDRESS && !source_address_allows(value, peer) {
            return Err(refuse(
                "source_address",
                format!("source-address {value:?} does not allow {peer}"),
            ));
        }
    }
    let (namespace, name) = request_named(cert).ok_or_else(|| {
        refuse(
            "principal",
            format!(
                "certificate principals {:?} include no gatehouse-proxy:<namespace>/<request>",
                cert.valid_principals()
            ),
        )
    })?;
    let request = lookup.request(namespace, name).ok_or_else(|| {
        refuse(
            "no_request",
            format!("AccessRequest {namespace}/{name} does not exist"),
        )
    })?;
    let Live {
        status,
        policy,
        group,
    } = live(&request, lookup)?;
    // The certificate must be the one this request issued, not one of a deleted namesake.
    if status.serial.as_deref() != Some(cert.serial().to_string().as_str())
        || status.key_id.as_deref() != Some(cert.key_id())
    {
        return Err(refuse(
            "stale_certificate",
            format!(
                "certificate serial {} is not the one AccessRequest {namespace}/{name} issued",
                cert.serial()
            ),
        ));
    }
    let valid_before = status
        .valid_before
        .as_ref()
        .map(|t| t.0.as_second())
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0)
        .min(cert.valid_before());
    if valid_before <= now {
        return Err(refuse(
            "expired",
            format!("AccessRequest {namespace}/{name} expired"),
        ));
    }
    let TargetName {
        login,
        host: wanted_host,
    } = user_name::parse(user).map_err(|e| refuse("user_name", e.0))?;
    if login != request.spec.login {
        return Err(refuse(
            "login",
            format!(
                "login {login:?} is not the login {:?} AccessRequest {namespace}/{name} grants",
                request.spec.login
            ),
        ));
    }
    let group_name = &request.spec.target.host_group;
    if group.spec.mode != HostGroupMode::Proxied {
        return Err(refuse(
            "not_proxied",
            format!("HostGroup {namespace}/{group_name} is not mode Proxied"),
        ));
    }
    let host = choose_host(
        &group,
        wanted_host.as_deref(),
        request.spec.target.host.as_deref(),
    )?;
    let recording = &policy.spec.recording;
    let (record_input, recording_required) = (recording.record_input, recording.required);
    let limits = &policy.spec.session;
    let idle_timeout = limits.idle_timeout.as_deref().map(|text| {
        gatehouse_crds::duration::parse(text).unwrap_or(std::time::Duration::from_secs(5))
    });
    let max_sessions = limits
        .max_sessions
        .map(|max| u32::try_from(max.max(1)).unwrap_or(1));
    Ok(Grant {
        request: RequestRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: request.uid().unwrap_or_default(),
        },
        serial: cert.serial(),
        requester: request.spec.requester_name().to_owned(),
        approvers: status.approvals.iter().map(|a| a.user.clone()).collect(),
        reason: request.spec.reason.clone(),
        login,
        host_group: group_name.clone(),
        host,
        host_ca_keys: group.spec.host_ca_keys.clone(),
        valid_before,
        extensions: extensions(cert),
        force_command: cert
            .critical_options()
            .get(FORCE_COMMAND)
            .map(|c| c.to_string()),
        record_input,
        recording_required,
        allow_forwards: recording.allow_forwards,
        sftp_content_bytes: recording
            .file_content
            .as_ref()
            // The schema bounds it; clamped again so an object stored before the bound (or
            // written past the API server) cannot lift it.
            .map(|c| {
                u64::try_from(
                    c.max_bytes_per_file
                        .clamp(1, FileContentOptions::MAX_BYTES_PER_FILE),
                )
                .unwrap_or(1)
            }),
        idle_timeout,
        max_sessions,
    })
}

fn choose_host(
    group: &HostGroup,
    wanted: Option<&str>,
    requested: Option<&str>,
) -> Result<Host, Refusal> {
    let names = || {
        group
            .spec
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = match (wanted, requested) {
        (Some(w), Some(r)) if w != r => {
            return Err(refuse(
                "host",
                format!("host {w:?} is not the host {r:?} the AccessRequest is for"),
            ));
        }
        (Some(w), _) => w,
        (None, Some(r)) => r,
        (None, None) => match group.spec.hosts.as_slice() {
            [only] => only.name.as_str(),
            _ => {
                return Err(refuse(
                    "host",
                    format!(
                        "name a host as LOGIN@HOST; HostGroup {} has {}",
                        group.name_any(),
                        names()
                    ),
                ));
            }
        },
    };
    group
        .spec
        .hosts
        .iter()
        .find(|h| h.name == name)
        .cloned()
        .ok_or_else(|| {
            refuse(
                "host",
                format!(
                    "host {name:?} is not in HostGroup {} (hosts: {})",
                    group.name_any(),
                    names()
                ),
            )
        })
}

fn extensions(cert: &Certificate) -> Vec<CertificateExtension> {
    use CertificateExtension::*;
    [
        PermitPty,
        PermitPortForwarding,
        PermitAgentForwarding,
        PermitX11Forwarding,
        PermitUserRc,
    ]
    .into_iter()
    .filter(|e| cert.extensions().contains_key(e.openssh_name()))
    .collect()
}

/// The request a certificate names through its proxy principal, if it names one.
pub fn request_named(cert: &Certificate) -> Option<(&str, &str)> {
    cert.valid_principals()
        .iter()
        .find_map(|p| identity::parse_proxied_principal(p))
}

/// Whether a refusal may come from watch caches that have not caught up with the API server
/// yet (so asking it again is worth it): a missing or not yet Issued request, a certificate that
/// does not match what the cache shows, or a policy or HostGroup the cache does not have yet.
pub fn may_be_cache_lag(refusal: &Refusal) -> bool {
    matches!(
        refusal.reason,
        "no_request" | "not_issued" | "stale_certificate" | "withdrawn"
    )
}

/// What a live request rests on.
struct Live {
    status: AccessRequestStatus,
    policy: Arc<AccessPolicy>,
    group: Arc<HostGroup>,
}

/// The request as it stands must still grant access: not being deleted (the operator may be
/// down and its finalizer keep the object), Issued, and still covered by its policy and
/// HostGroup (removing access in Git removes it, without waiting for the operator).
fn live(request: &AccessRequest, lookup: &dyn Lookup) -> Result<Live, Refusal> {
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    if request.metadata.deletion_timestamp.is_some() {
        return Err(refuse(
            "revoked",
            format!("AccessRequest {namespace}/{name} was deleted"),
        ));
    }
    let status = request.status.clone().unwrap_or_default();
    match status.phase {
        Some(Phase::Issued) => {}
        Some(Phase::Expired) => {
            return Err(refuse(
                "expired",
                format!("AccessRequest {namespace}/{name} expired"),
            ));
        }
        phase => {
            // Say why, as the operator recorded it ("revoked by bob: …", "access withdrawn: …").
            let why = status
                .conditions
                .iter()
                .find(|c| c.type_ == gatehouse_crds::conditions::READY)
                .map(|c| c.message.as_str())
                .filter(|m| !m.is_empty() && phase.is_some_and(Phase::is_terminal))
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            return Err(refuse(
                "not_issued",
                format!(
                    "AccessRequest {namespace}/{name} is {}, not Issued{why}",
                    phase
                        .map(|p| format!("{p:?}"))
                        .unwrap_or_else(|| "new".into())
                ),
            ));
        }
    }
    let policy_name = status.policy.clone().unwrap_or_default();
    let policy = lookup.policy(&namespace, &policy_name);
    let group = lookup.host_group(&namespace, &request.spec.target.host_group);
    if let Err(withdrawal) =
        policy::still_covers(request, &policy_name, policy.as_deref(), group.as_deref())
    {
        return Err(refuse(
            "withdrawn",
            format!("access withdrawn: {withdrawal}"),
        ));
    }
    match (policy, group) {
        (Some(policy), Some(group)) => Ok(Live {
            status,
            policy,
            group,
        }),
        // still_covers refuses both cases; this keeps the compiler and the reader sure.
        _ => Err(refuse("withdrawn", "access withdrawn")),
    }
}

/// Whether a grant still holds: the request still exists with the same UID, is live (see
/// [`live`]) with the same serial, its host is still in its HostGroup at the same address, and
/// it has not reached validBefore. The error is the message shown to the engineer when the
/// proxy ends the session, and a metric label.
pub fn still_valid(grant: &Grant, lookup: &dyn Lookup, now: u64) -> Result<(), Refusal> {
    let RequestRef {
        namespace, name, ..
    } = &grant.request;
    let deleted = || {
        refuse(
            "revoked",
            format!("AccessRequest {namespace}/{name} was deleted"),
        )
    };
    let request = lookup.request(namespace, name).ok_or_else(deleted)?;
    if request.uid().as_deref() != Some(grant.request.uid.as_str()) {
        return Err(deleted());
    }
    // A live session of a request that left Issued was revoked, whatever its phase says.
    let Live { status, group, .. } =
        live(&request, lookup).map_err(|refusal| match refusal.reason {
            "not_issued" => Refusal {
                reason: "revoked",
                message: refusal.message.replace(", not Issued", ""),
            },
            _ => refusal,
        })?;
    if status.serial != Some(grant.serial.to_string()) {
        return Err(refuse(
            "revoked",
            format!("AccessRequest {namespace}/{name} was issued a new certificate"),
        ));
    }
    let same_host = group.spec.hosts.iter().any(|h| {
        h.name == grant.host.name && h.address == grant.host.address && h.port == grant.host.port
    });
    if !same_host {
        return Err(refuse(
            "withdrawn",
            format!(
                "access withdrawn: host {} is no longer in HostGroup {namespace}/{} at {}:{}",
                grant.host.name, grant.host_group, grant.host.address, grant.host.port
            ),
        ));
    }
    if grant.valid_before <= now {
        return Err(refuse(
            "expired",
            format!("AccessRequest {namespace}/{name} reached its validBefore"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
