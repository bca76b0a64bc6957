//! The AccessRequest state machine. Pure: a request, what the caches show (its HostGroup, the
//! namespace's policies), the verified decision records and the clock in; the next status and
//! the intents that go with it out ("sign this certificate", "publish this revocation",
//! "requeue then"). The controller ([`crate::controller`]) performs the intents.
//!
//! Phases: a new request is matched against policy (`Denied` with `NoMatchingPolicy` when none
//! governs it, after a short grace for lagging caches), waits `Pending` for approvals, is
//! `Issued` once enough distinct approvers approved (or at once under an auto-approve policy),
//! and ends `Denied`, `Revoked`, `Expired` or `Failed`; a deleted Issued request is `Revoked`.

use std::time::Duration;

use gatehouse_crds::{
    AccessPolicy, AccessRequest, AccessRequestStatus, Approval, CertificateExtension, HostGroup,
    Phase,
    conditions::{READY, decision_reasons},
    contract::identity,
    duration,
    policy::{self, Ask},
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, runtime::events::EventType};

use crate::{
    decisions::Decisions,
    request_status::{self, Issued},
    revocations::{self, Revoked},
};

/// How long a new request may wait for the caches to show the policy or HostGroup it needs.
pub const WATCH_LAG_GRACE: Duration = Duration::from_secs(5);
/// How soon a request that waits for the caches is judged again.
pub const WATCH_LAG_RETRY: Duration = Duration::from_millis(500);

/// What the decision reads besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The decision records whose seal verified.
    pub decisions: &'a Decisions,
    /// The request's HostGroup, if the cache has it.
    pub host_group: Option<&'a HostGroup>,
    /// The AccessPolicies of the request's namespace.
    pub policies: &'a [AccessPolicy],
    /// Pending requests nobody approves expire after this long.
    pub pending_ttl: Duration,
    /// Live entries the namespace holds on the revocation list.
    pub revoked_in_namespace: usize,
    /// How many it may hold before it gets no new Direct certificate.
    pub revoked_limit: usize,
    /// Now.
    pub now: Timestamp,
}

/// An Event to publish with a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Normal or Warning.
    pub type_: EventType,
    /// Short CamelCase reason.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// A status to write, with what goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The complete status the operator owns.
    pub status: AccessRequestStatus,
    /// The Event of this transition (published only when the status changes).
    pub note: Option<Note>,
    /// Look at the request again after this long.
    pub requeue: Option<Duration>,
    /// Publish this certificate as revoked before the status says Revoked.
    pub revoke: Option<Revoked>,
}

/// The certificate to sign for an approved request; the controller adds a random serial.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateOrder {
    /// The requester's public key line.
    pub public_key: String,
    /// Key id (sshd logs it).
    pub key_id: String,
    /// Principals.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds.
    pub valid_before: u64,
    /// Extensions the policy grants.
    pub extensions: Vec<CertificateExtension>,
    /// The policy's `force-command`.
    pub force_command: Option<String>,
    /// The policy's `source-address` entries.
    pub source_addresses: Vec<String>,
}

/// Everything needed to finish issuing once the certificate is signed.
#[derive(Debug, Clone, PartialEq)]
pub struct Issuance {
    /// What to sign.
    pub order: CertificateOrder,
    /// The governing policy.
    pub policy: String,
    /// The granted duration, as written in status.
    pub granted: String,
    /// Verified approvals.
    pub approvals: Vec<Approval>,
    /// Look again when the certificate expires.
    pub requeue: Duration,
    /// When the approval that completed the request was given (for the latency metric).
    pub completed_by_approval_at: Option<Timestamp>,
}

/// The next step for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to write: look again after this long, or on the next change.
    Wait(Option<Duration>),
    /// Write this status.
    Write(Transition),
    /// Sign a certificate, then write the Issued status ([`issued`]).
    Issue(Box<Issuance>),
    /// The request is being deleted: write this status first (if any), make sure its
    /// certificate is on the revocation list (if it opens hosts directly), then let it go.
    Release {
        /// Revoked, if it was Issued.
        transition: Option<Transition>,
        /// The list entry that must be published before the request goes.
        revoke: Option<Revoked>,
    },
}

fn to_duration(span: jiff::SignedDuration) -> Duration {
    span.try_into().unwrap_or(Duration::ZERO)
}

/// A terminal transition; `Revoked` from a status with a certificate publishes its revocation.
fn end(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    phase: Phase,
    denied: Option<&'static str>,
    message: String,
    now: &Time,
) -> Transition {
    let type_ = if phase == Phase::Expired {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let reason = match (phase, denied) {
        (Phase::Denied, Some(reason)) => reason,
        (Phase::Denied, None) => "Denied",
        (Phase::Expired, _) => "Expired",
        (Phase::Revoked, _) => "Revoked",
        _ => "Failed",
    };
    let revoke = (phase == Phase::Revoked)
        .then(|| revocations::entry_for(&request.namespace().unwrap_or_default(), previous, now.0))
        .flatten();
    Transition {
        status: request_status::ended(
            previous,
            phase,
            denied,
            &message,
            now,
            request.metadata.generation,
        ),
        note: Some(Note {
            type_,
            reason,
            message,
        }),
        requeue: None,
        revoke,
    }
}

/// Decide the next step for `request`.
pub fn decide(request: &AccessRequest, facts: &Facts<'_>) -> Decision {
    let previous = request.status.clone().unwrap_or_default();
    let now = Time(facts.now);
    if request.metadata.deletion_timestamp.is_some() {
        let transition = (previous.phase == Some(Phase::Issued)).then(|| {
            end(
                request,
                &previous,
                Phase::Revoked,
                None,
                "AccessRequest deleted".to_owned(),
                &now,
            )
        });
        // Issued or already Revoked: either way its certificate must be listed before it goes.
        let revoke = matches!(previous.phase, Some(Phase::Issued | Phase::Revoked))
            .then(|| {
                revocations::entry_for(
                    &request.namespace().unwrap_or_default(),
                    &previous,
                    facts.now,
                )
            })
            .flatten();
        return Decision::Release { transition, revoke };
    }
    if previous.phase.is_some_and(Phase::is_terminal) {
        return Decision::Wait(None);
    }
    let decisions = facts.decisions;
    if let Some(record) = &decisions.revoked {
        let message = format!(
            "revoked by {}: {}",
            record.user,
            record.message.as_deref().unwrap_or("no reason given")
        );
        return Decision::Write(end(request, &previous, Phase::Revoked, None, message, &now));
    }
    if let Some(record) = &decisions.denied {
        let message = format!(
            "denied by {}: {}",
            record.user,
            record.message.as_deref().unwrap_or("no reason given")
        );
        return Decision::Write(end(
            request,
            &previous,
            Phase::Denied,
            Some(decision_reasons::DENIED_BY_APPROVER),
            message,
            &now,
        ));
    }
    if previous.phase == Some(Phase::Issued) {
        return still_issued(request, &previous, facts, &now);
    }
    let created = request
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(facts.now, |t| t.0);
    let deadline = created
        + jiff::SignedDuration::try_from(facts.pending_ttl).unwrap_or(jiff::SignedDuration::MAX);
    if facts.now >= deadline {
        let ttl = duration::format(facts.pending_ttl);
        return Decision::Write(end(
            request,
            &previous,
            Phase::Expired,
            None,
            format!("not approved within the pending TTL of {ttl}"),
            &now,
        ));
    }
    match governed(request, &previous, facts) {
        Ok(governed) => approve_or_wait(request, &previous, facts, governed, deadline, &now),
        Err(message) => {
            // A first "no matching policy" is permanent, but the request, its policy and its
            // HostGroup arrive on separate watches in no guaranteed order (a GitOps sync applies
            // them together): a young request is judged again shortly instead.
            let young = to_duration(facts.now.duration_since(created)) < WATCH_LAG_GRACE;
            if previous.policy.is_none() && young {
                return Decision::Wait(Some(WATCH_LAG_RETRY));
            }
            Decision::Write(end(
                request,
                &previous,
                Phase::Denied,
                Some(decision_reasons::NO_MATCHING_POLICY),
                message,
                &now,
            ))
        }
    }
}

/// An Issued request: still valid (look again at expiry), expired, withdrawn by a policy or
/// HostGroup change, or broken.
fn still_issued(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    facts: &Facts<'_>,
    now: &Time,
) -> Decision {
    let at = facts.now;
    let Some(valid_before) = previous.valid_before.as_ref().map(|t| t.0) else {
        return Decision::Write(end(
            request,
            previous,
            Phase::Failed,
            None,
            "Issued without validBefore".into(),
            now,
        ));
    };
    if at >= valid_before {
        return Decision::Write(end(
            request,
            previous,
            Phase::Expired,
            None,
            format!("certificate expired at {valid_before}"),
            now,
        ));
    }
    // Removing access removes it: a GitOps revert of the policy or HostGroup ends the grant.
    let policy_name = previous.policy.as_deref().unwrap_or_default();
    let policy = facts
        .policies
        .iter()
        .find(|p| p.name_any() == policy_name && p.namespace() == request.namespace());
    if let Err(withdrawal) = policy::still_covers(request, policy_name, policy, facts.host_group) {
        return Decision::Write(end(
            request,
            previous,
            Phase::Revoked,
            None,
            format!("access withdrawn: {withdrawal}"),
            now,
        ));
    }
    Decision::Wait(Some(
        to_duration(valid_before.duration_since(at)) + Duration::from_secs(1),
    ))
}

/// The policy that governs a request, what it grants, and where.
struct Governed<'a> {
    policy: &'a AccessPolicy,
    terms: policy::Terms,
    host_group: &'a HostGroup,
}

/// Find the governing policy, or say which rule refuses the request.
fn governed<'a>(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    facts: &Facts<'a>,
) -> Result<Governed<'a>, String> {
    let namespace = request.namespace().unwrap_or_default();
    let target = &request.spec.target;
    let Some(host_group) = facts.host_group else {
        return Err(format!(
            "HostGroup {} does not exist in namespace {namespace}",
            target.host_group
        ));
    };
    if let Some(host) = &target.host
        && !host_group.spec.hosts.iter().any(|h| &h.name == host)
    {
        return Err(format!(
            "host {host} is not in HostGroup {}",
            target.host_group
        ));
    }
    let mut policies: Vec<&AccessPolicy> = facts
        .policies
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    // Approvals were given under the recorded policy: keep judging the request by it alone.
    if let Some(recorded) = &previous.policy {
        policies.retain(|p| &p.name_any() == recorded);
        if policies.is_empty() {
            return Err(format!(
                "AccessPolicy {recorded}, which governed this request, no longer exists"
            ));
        }
    }
    let labels = host_group.labels().clone();
    let ask = Ask {
        namespace: &namespace,
        requester: request.spec.requester.as_ref(),
        host_group: &target.host_group,
        host_group_labels: &labels,
        login: &request.spec.login,
        duration: &request.spec.duration,
        reason: request.spec.reason.as_deref(),
    };
    let (policy, terms) = policy::govern(policies, &ask).map_err(|refusal| refusal.to_string())?;
    Ok(Governed {
        policy,
        terms,
        host_group,
    })
}

/// Pending until enough approvals, then the certificate order.
fn approve_or_wait(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    facts: &Facts<'_>,
    governed: Governed<'_>,
    deadline: Timestamp,
    now: &Time,
) -> Decision {
    let Governed {
        policy,
        terms,
        host_group,
    } = governed;
    let granted = duration::format(terms.duration);
    let approvals = request_status::approvals(facts.decisions);
    let required = terms.required_approvals;
    if approvals.len() < usize::try_from(required).unwrap_or(usize::MAX) {
        let next = request_status::pending(
            previous,
            &terms.policy,
            &granted,
            approvals,
            required,
            now,
            request.metadata.generation,
        );
        let note = if previous.phase != Some(Phase::Pending) {
            Some(Note {
                type_: EventType::Normal,
                reason: "Pending",
                message: next
                    .conditions
                    .iter()
                    .find(|c| c.type_ == READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            })
        } else if next.approvals.len() > previous.approvals.len() {
            Some(Note {
                type_: EventType::Normal,
                reason: "ApprovalRecorded",
                message: format!(
                    "approved by {}",
                    request_status::approver_names(&next.approvals)
                ),
            })
        } else {
            None
        };
        return Decision::Write(Transition {
            status: next,
            note,
            requeue: Some(to_duration(deadline.duration_since(facts.now)) + Duration::from_secs(1)),
            revoke: None,
        });
    }
    // The key passed the CRD's format rule but may still be unusable: then it never succeeds.
    if let Err(problem) = gatehouse_ssh_ca::parse_user_public_key(&request.spec.public_key) {
        return Decision::Write(end(
            request,
            previous,
            Phase::Failed,
            None,
            problem.to_string(),
            now,
        ));
    }
    // Revoked Direct certificates stay listed until they expire: a namespace that revoked too
    // many gets no new one until some do, so revoking can never exhaust the list.
    if host_group.spec.mode == gatehouse_crds::HostGroupMode::Direct
        && facts.revoked_in_namespace >= facts.revoked_limit
    {
        let namespace = request.namespace().unwrap_or_default();
        let mut paused = request_status::pending(
            previous,
            &terms.policy,
            &granted,
            approvals,
            required,
            now,
            request.metadata.generation,
        );
        gatehouse_crds::conditions::set_condition(
            &mut paused.conditions,
            READY,
            false,
            gatehouse_crds::conditions::reasons::PENDING,
            &format!(
                "approved, but namespace {namespace} holds {} revoked Direct certificates that are still valid (limit {}): issuing resumes as they expire",
                facts.revoked_in_namespace, facts.revoked_limit
            ),
            now,
            request.metadata.generation,
        );
        return Decision::Write(Transition {
            status: paused,
            note: None,
            requeue: Some(Duration::from_secs(30)),
            revoke: None,
        });
    }
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let requester = request.spec.requester_name();
    let (valid_after, valid_before) =
        gatehouse_ssh_ca::validity(facts.now.as_second().unsigned_abs(), terms.duration);
    let certificate = &policy.spec.certificate;
    let order = CertificateOrder {
        public_key: request.spec.public_key.clone(),
        key_id: identity::user_key_id(&namespace, &name, &uid, requester),
        principals: identity::request_principals(
            host_group.spec.mode,
            &namespace,
            &name,
            &request.spec.target.host_group,
            request.spec.target.host.as_deref(),
            &request.spec.login,
        ),
        valid_after,
        valid_before,
        extensions: certificate.extensions.clone(),
        force_command: certificate.force_command.clone(),
        source_addresses: certificate.source_addresses.clone(),
    };
    let completed_by_approval_at = facts
        .decisions
        .approvals
        .iter()
        .filter_map(request_status::record_time)
        .map(|t| t.0)
        .max();
    Decision::Issue(Box::new(Issuance {
        order,
        policy: terms.policy,
        granted,
        approvals: request_status::approvals(facts.decisions),
        requeue: terms.duration + Duration::from_secs(1),
        completed_by_approval_at,
    }))
}

/// The Issued transition for a signed certificate (`line` is its OpenSSH text).
pub fn issued(
    request: &AccessRequest,
    issuance: &Issuance,
    serial: u64,
    line: String,
    at: Timestamp,
) -> Transition {
    let order = &issuance.order;
    let time = |secs: u64| {
        Time(Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX)).unwrap_or(at))
    };
    let certificate = Issued {
        certificate: line,
        serial,
        key_id: order.key_id.clone(),
        principals: order.principals.clone(),
        valid_after: time(order.valid_after),
        valid_before: time(order.valid_before),
    };
    let message = format!(
        "certificate serial {serial} issued for {}, principals [{}]",
        issuance.granted,
        order.principals.join(", ")
    );
    let previous = request.status.clone().unwrap_or_default();
    Transition {
        status: request_status::issued(
            &previous,
            &issuance.policy,
            &issuance.granted,
            issuance.approvals.clone(),
            certificate,
            &Time(at),
            request.metadata.generation,
        ),
        note: Some(Note {
            type_: EventType::Normal,
            reason: "Issued",
            message,
        }),
        requeue: Some(issuance.requeue),
        revoke: None,
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
