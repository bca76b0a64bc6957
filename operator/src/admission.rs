//! Admission decisions for AccessRequests: who asked, who may approve, deny or revoke.
//!
//! Data comes from the API server's AdmissionReview (the caller's authenticated identity, the
//! object before and after the change) plus, for approvers, the answer of a
//! SubjectAccessReview the webhook asks for. It goes out as a verdict: allow unchanged, allow
//! with the object mutated (requester stamped, a sealed decision record appended, the trigger
//! annotation removed), or deny with a message that names the rule. Pure functions only; the
//! HTTPS server in [`crate::webhook`] does the I/O.

use std::collections::BTreeMap;

use gatehouse_crds::{
    AccessPolicy, AccessRequest, AccessRequestSpec, AccessRequestStatus, HostGroup, Phase,
    Requester, Target,
    contract::{self, annotations::DECISIONS},
    policy::{self, Ask},
};
use k8s_openapi::{
    api::authentication::v1::UserInfo, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::{
    decisions::{self, DecisionKind, DecisionRecord, SealKeys},
    ownership,
};

/// Longest approve/deny/revoke message admission records (the CRD's limit for status.approvals).
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The three trigger annotations, in a fixed order.
const TRIGGERS: [DecisionKind; 3] = [
    DecisionKind::Approve,
    DecisionKind::Deny,
    DecisionKind::Revoke,
];

/// The authenticated caller of an admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name (`system:serviceaccount:NS:NAME` for ServiceAccounts).
    pub username: String,
    /// UID, when the authenticator provides one.
    pub uid: Option<String>,
    /// Groups, as authenticated.
    pub groups: Vec<String>,
    /// Whether the caller is the Gatehouse operator itself (it manages the finalizer).
    pub operator: bool,
}

impl Caller {
    /// Read the caller from an AdmissionRequest's userInfo; `operator` is the operator's own
    /// user name, as the API server authenticates it.
    pub fn from_user_info(info: &UserInfo, operator: &str) -> Self {
        let username = info.username.clone().unwrap_or_default();
        Self {
            operator: !operator.is_empty() && username == operator,
            username,
            uid: info.uid.clone().filter(|uid| !uid.is_empty()),
            groups: info.groups.clone().unwrap_or_default(),
        }
    }

    /// The `spec.requester` admission stamps for this caller.
    pub fn as_requester(&self) -> Requester {
        Requester {
            username: self.username.clone(),
            uid: self.uid.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// What the caller must additionally be allowed to do before a decision is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// Nothing more (the requester revoking their own request).
    None,
    /// Verb `approve` on `accesspolicies/<policy>` in the request's namespace.
    ApproverOf {
        /// The governing policy (status.policy).
        policy: String,
    },
}

/// First stage of a decision: what the change asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing Gatehouse guards changed.
    Allow,
    /// A create: stamp `spec.requester` from the caller.
    StampRequester(Requester),
    /// An approve/deny/revoke annotation was set: record it if `authority` holds.
    Decide {
        /// Which decision.
        kind: DecisionKind,
        /// The annotation's value (none when empty).
        message: Option<String>,
        /// What the caller must be allowed on top of being a Gatehouse user.
        authority: Authority,
    },
    /// A change with no decision in it (labels, other annotations) by someone who is not the
    /// requester: allowed only if `authority` holds (the request's approvers may; nobody else).
    AllowIf(Authority),
    /// Refused, with the message the API server returns to the caller.
    Deny(String),
}

fn annotations(object: &AccessRequest) -> Option<&BTreeMap<String, String>> {
    object.metadata.annotations.as_ref()
}

fn annotation<'a>(object: &'a AccessRequest, key: &str) -> Option<&'a str> {
    annotations(object)
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn describe(object: &AccessRequest) -> String {
    format!(
        "AccessRequest {}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Plan a CREATE: the requester is whoever the API server authenticated; decisions cannot be
/// smuggled in with the object.
/// The refusal of a new request that already carries a trigger or the decisions annotation.
fn decision_annotation_at_creation(object: &AccessRequest) -> Option<String> {
    TRIGGERS
        .iter()
        .map(|k| k.trigger_annotation())
        .chain([DECISIONS])
        .find(|key| annotation(object, key).is_some())
        .map(|key| {
            format!(
                "metadata.annotations[{key}] cannot be set when an AccessRequest is created: \
                 approvals, denials and revocations are recorded after it exists, by someone with the right to make them"
            )
        })
}

pub fn plan_create(caller: &Caller, object: &AccessRequest) -> Plan {
    if !caller.operator
        && let Err(message) = ownership::check(None, object)
    {
        return Plan::Deny(message);
    }
    if let Some(message) = decision_annotation_at_creation(object) {
        return Plan::Deny(message);
    }
    let stamped = caller.as_requester();
    match &object.spec.requester {
        // Stamping also adds the revocation finalizer: set at creation, it costs no later write.
        None => Plan::StampRequester(stamped),
        Some(given) if *given == stamped => Plan::StampRequester(stamped),
        Some(given) => Plan::Deny(format!(
            "spec.requester is set by admission from the authenticated user and must be left empty: \
             it says {:?} but you are {:?}",
            given.username, caller.username
        )),
    }
}

/// Plan an UPDATE of the main resource (the status subresource is not sent to the webhook).
pub fn plan_update(
    caller: &Caller,
    old: &AccessRequest,
    new: &AccessRequest,
    key: &SealKeys,
) -> Plan {
    if caller.operator {
        return Plan::Allow;
    }
    if annotation(old, DECISIONS) != annotation(new, DECISIONS) {
        return Plan::Deny(format!(
            "metadata.annotations[{DECISIONS}] is written by Gatehouse admission only and cannot be \
             set, changed or removed: annotate with gatehouse.dev/approve, gatehouse.dev/deny or gatehouse.dev/revoke instead"
        ));
    }
    // A trigger counts when it is new or its value changed; admission removes accepted ones.
    let set: Vec<(DecisionKind, &str)> = TRIGGERS
        .iter()
        .filter_map(|kind| {
            let value = annotation(new, kind.trigger_annotation())?;
            (annotation(old, kind.trigger_annotation()) != Some(value)).then_some((*kind, value))
        })
        .collect();
    if let Err(message) = ownership::check(Some(old), new) {
        return Plan::Deny(message);
    }
    let requester = old.spec.requester.as_ref().map(|r| r.username.as_str());
    // A spec change is refused by the API server's own rule (the spec is immutable), with its
    // message; status never comes here. So only metadata needs an owner's say.
    let metadata_unchanged = (old.metadata.labels == new.metadata.labels
        && old.metadata.annotations == new.metadata.annotations)
        || old.spec != new.spec;
    let (kind, value) = match set.as_slice() {
        // A request belongs to its requester: anyone else changing it must be its approver. The
        // spec is immutable (CEL says so, naming the rule), and status never comes here.
        [] if requester == Some(caller.username.as_str()) || metadata_unchanged => {
            return Plan::Allow;
        }
        [] => {
            return match old.status.as_ref().and_then(|s| s.policy.clone()) {
                Some(policy) => Plan::AllowIf(Authority::ApproverOf { policy }),
                None => Plan::Deny(format!(
                    "only the requester of {} may change it while it has no governing policy",
                    describe(old)
                )),
            };
        }
        [one] => *one,
        _ => {
            return Plan::Deny(
                "set only one of gatehouse.dev/approve, gatehouse.dev/deny and gatehouse.dev/revoke at a time".to_owned(),
            );
        }
    };
    if value.chars().count() > MAX_MESSAGE_LEN {
        return Plan::Deny(format!(
            "metadata.annotations[{}] must be at most {MAX_MESSAGE_LEN} characters",
            kind.trigger_annotation()
        ));
    }
    let what = describe(old);
    let phase = old.status.as_ref().and_then(|s| s.phase);
    let uid = old.metadata.uid.as_deref().unwrap_or_default();
    let decisions = decisions::tally(key, uid, requester, annotation(old, DECISIONS));
    let ended = if decisions.revoked.is_some() {
        Some("Revoked".to_owned())
    } else if decisions.denied.is_some() {
        Some("Denied".to_owned())
    } else {
        phase.filter(|p| p.is_terminal()).map(|p| format!("{p:?}"))
    };
    if let Some(ended) = ended {
        return Plan::Deny(format!(
            "{what} is already {ended}: it accepts no further {} (create a new AccessRequest)",
            kind.verb()
        ));
    }
    // Once issued, only revocation changes anything: a "deny" would leave a valid certificate.
    if phase == Some(Phase::Issued) && kind != DecisionKind::Revoke {
        return Plan::Deny(format!(
            "{what} is already Issued: it takes no further {}; use gatehouse.dev/revoke to end it",
            kind.verb()
        ));
    }
    let is_requester = requester == Some(caller.username.as_str());
    if is_requester && kind != DecisionKind::Revoke {
        return Plan::Deny(format!(
            "{} requested {what} and cannot {} it: another approver must (four-eyes)",
            caller.username,
            kind.verb()
        ));
    }
    if kind == DecisionKind::Approve
        && decisions
            .approvals
            .iter()
            .any(|a| a.user == caller.username)
    {
        return Plan::Deny(format!(
            "{} has already approved {what}; each approval must come from a different approver",
            caller.username
        ));
    }
    let message = (!value.is_empty()).then(|| value.to_owned());
    if is_requester {
        return Plan::Decide {
            kind,
            message,
            authority: Authority::None,
        };
    }
    match old.status.as_ref().and_then(|s| s.policy.clone()) {
        Some(policy) => Plan::Decide {
            kind,
            message,
            authority: Authority::ApproverOf { policy },
        },
        None => Plan::Deny(format!(
            "{what} has no governing policy yet (status.policy is empty), so nobody can be authorized to {} it: \
             wait until `kubectl get accessrequest` shows it Pending and retry",
            kind.verb()
        )),
    }
}

/// Whether a request counts against its requester's open-request cap: it is not being deleted
/// and its phase is not terminal (no phase yet, `Pending` — approved or not — and `Issued`
/// count; `Denied`, `Expired`, `Revoked` and `Failed` do not).
pub fn is_open(request: &AccessRequest) -> bool {
    request.metadata.deletion_timestamp.is_none()
        && !request
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_terminal)
}

/// Most request names a cap refusal lists.
/// Reduce a cached request to what [`open_request_cap`] reads of the requests it counts: name,
/// namespace, deletion, requester name, phase and policy. The webhook's cache holds every
/// request in the cluster; the certificate, key, conditions and decision records it would
/// otherwise keep are most of a request's size. Everything not listed here is dropped, so a
/// field added to AccessRequest later is not kept by accident.
pub fn keep_for_open_request_cap(request: &mut AccessRequest) {
    let metadata = std::mem::take(&mut request.metadata);
    request.metadata = ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        resource_version: metadata.resource_version,
        deletion_timestamp: metadata.deletion_timestamp,
        ..ObjectMeta::default()
    };
    let requester = request.spec.requester.take().map(|r| Requester {
        username: r.username,
        uid: None,
        groups: Vec::new(),
    });
    request.spec = AccessRequestSpec {
        target: Target {
            host_group: String::new(),
            host: None,
        },
        login: String::new(),
        duration: String::new(),
        reason: None,
        public_key: String::new(),
        requester,
    };
    request.status = request.status.take().map(|s| AccessRequestStatus {
        phase: s.phase,
        policy: s.policy,
        ..AccessRequestStatus::default()
    });
}

const CAP_NAMES_LISTED: usize = 5;

/// The cap check of a CREATE that [`plan_create`] allowed: the policy that would govern the new
/// request (chosen from the caches exactly as the operator chooses, with the admission-verified
/// `requester`) may cap how many open requests one requester has under it. Counted: the
/// requester's open requests in the namespace governed by that policy, and those not governed
/// yet (no `status.policy`: they may end up under it). Returns the refusal, naming the policy,
/// the field and the limit; None when the request may be created (no governing policy is the
/// operator's to deny, with its own message).
pub fn open_request_cap<'a>(
    requester: &Requester,
    object: &AccessRequest,
    policies: impl IntoIterator<Item = &'a AccessPolicy>,
    host_groups: impl IntoIterator<Item = &'a HostGroup>,
    requests: impl IntoIterator<Item = &'a AccessRequest>,
) -> Option<String> {
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let in_namespace = |ns: &Option<String>| ns.as_deref() == Some(namespace);
    let group = host_groups.into_iter().find(|g| {
        in_namespace(&g.metadata.namespace)
            && g.metadata.name.as_deref() == Some(object.spec.target.host_group.as_str())
    })?;
    let labels = group.metadata.labels.clone().unwrap_or_default();
    let ask = Ask {
        namespace,
        requester: Some(requester),
        host_group: &object.spec.target.host_group,
        host_group_labels: &labels,
        login: &object.spec.login,
        duration: &object.spec.duration,
        reason: object.spec.reason.as_deref(),
    };
    let policies = policies
        .into_iter()
        .filter(|p| in_namespace(&p.metadata.namespace));
    let (governing, terms) = policy::govern(policies, &ask).ok()?;
    let limit = governing.spec.max_open_requests_per_requester?;
    let mut open: Vec<&str> = requests
        .into_iter()
        .filter(|r| in_namespace(&r.metadata.namespace))
        .filter(|r| {
            r.spec.requester.as_ref().map(|q| q.username.as_str())
                == Some(requester.username.as_str())
        })
        .filter(|r| is_open(r))
        .filter(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.policy.as_deref())
                .is_none_or(|p| p == terms.policy)
        })
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    let count = open.len();
    if i64::try_from(count).unwrap_or(i64::MAX) < i64::from(limit) {
        return None;
    }
    open.sort_unstable();
    let mut listed = open
        .iter()
        .take(CAP_NAMES_LISTED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if count > CAP_NAMES_LISTED {
        listed.push_str(&format!(", and {} more", count - CAP_NAMES_LISTED));
    }
    Some(format!(
        "AccessPolicy {namespace}/{} allows at most {limit} open AccessRequest(s) per requester \
         (spec.maxOpenRequestsPerRequester: {limit}) and {} already has {count} ({listed}): \
         withdraw one (annotate it gatehouse.dev/revoke, or delete it) or wait until one ends",
        terms.policy, requester.username
    ))
}

/// Add the finalizer that turns deleting an Issued request into a recorded revocation.
pub fn add_revocation_finalizer(object: &mut AccessRequest) {
    let finalizers = object.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers
        .iter()
        .any(|f| f == contract::REVOCATION_FINALIZER)
    {
        finalizers.push(contract::REVOCATION_FINALIZER.to_owned());
    }
}

/// The message for someone who is neither the requester nor an approver changing a request.
pub fn not_yours(caller: &Caller, object: &AccessRequest, policy: &str) -> String {
    format!(
        "{} may not change {}: only its requester, its approvers (verb \"approve\" on accesspolicies.gatehouse.dev \"{policy}\") and Gatehouse may",
        caller.username,
        describe(object)
    )
}

/// The message for a caller the SubjectAccessReview refused.
pub fn not_an_approver(
    caller: &Caller,
    namespace: &str,
    policy: &str,
    kind: DecisionKind,
) -> String {
    format!(
        "{} may not {} this request: that needs verb \"approve\" on accesspolicies.gatehouse.dev \"{policy}\" \
         in namespace {namespace:?} (the policy that governs it)",
        caller.username,
        kind.verb()
    )
}

/// The object after an accepted decision: the trigger annotation removed and a sealed record
/// appended to the decisions annotation.
pub fn record_decision(
    object: &AccessRequest,
    caller: &Caller,
    kind: DecisionKind,
    message: Option<&str>,
    now_rfc3339: &str,
    key: &SealKeys,
) -> AccessRequest {
    let mut out = object.clone();
    let uid = object.metadata.uid.as_deref().unwrap_or_default();
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.remove(kind.trigger_annotation());
    // Admission already refused a changed annotation, so the old list is still the trusted one.
    let mut list: Vec<DecisionRecord> =
        decisions::parse(annotations.get(DECISIONS).map(String::as_str)).unwrap_or_default();
    list.push(key.seal(uid, kind, &caller.username, now_rfc3339, message));
    annotations.insert(DECISIONS.to_owned(), decisions::render(&list));
    out
}

/// The validating webhook's check, after every mutating webhook ran: the final object must be
/// what the mutating stage would have produced. Returns a denial message on violation.
pub fn validate(
    caller: &Caller,
    old: Option<&AccessRequest>,
    new: &AccessRequest,
    key: &SealKeys,
) -> Option<String> {
    // Whatever another mutating webhook did, the final object keeps Gatehouse's metadata.
    if !caller.operator
        && let Err(message) = ownership::check(old, new)
    {
        return Some(message);
    }
    let Some(old) = old else {
        return validate_created(caller, new);
    };
    let before = annotation(old, DECISIONS);
    let after = annotation(new, DECISIONS);
    if before == after {
        return None;
    }
    let uid = old.metadata.uid.as_deref().unwrap_or_default();
    let (Ok(before), Ok(after)) = (decisions::parse(before), decisions::parse(after)) else {
        return Some(format!(
            "metadata.annotations[{DECISIONS}] is not a valid decisions list"
        ));
    };
    let appended_one = after.len() == before.len() + 1 && after.starts_with(&before);
    match after.last() {
        Some(last) if appended_one && last.user == caller.username && key.verify(uid, last) => None,
        _ => Some(format!(
            "metadata.annotations[{DECISIONS}] is written by Gatehouse admission only and cannot be set, changed or removed"
        )),
    }
}

/// The final object of a CREATE, after every mutating webhook or policy that ran after
/// Gatehouse's: still exactly what the mutating webhook let through. A later step must not
/// change who asked, strip the revocation finalizer (a deleted request would then never be
/// listed as revoked) or bring decision annotations along.
fn validate_created(caller: &Caller, new: &AccessRequest) -> Option<String> {
    match &new.spec.requester {
        Some(r) if *r == caller.as_requester() => {}
        _ => {
            return Some(format!(
                "spec.requester must be the authenticated user {:?} (stamped by the Gatehouse mutating webhook)",
                caller.username
            ));
        }
    }
    let finalizers = new.metadata.finalizers.as_deref().unwrap_or_default();
    if finalizers != [contract::REVOCATION_FINALIZER] {
        return Some(format!(
            "metadata.finalizers of a new {} must be exactly [{}] (added by the Gatehouse mutating webhook; it records the revocation of a deleted request), not {finalizers:?}",
            describe(new),
            contract::REVOCATION_FINALIZER
        ));
    }
    decision_annotation_at_creation(new)
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
