//! The AccessRequest reconciler: match, wait for approvals, issue, expire, revoke.
//!
//! Data comes from a kube-runtime watch of AccessRequests, reflector stores of AccessPolicies
//! and HostGroups, the sealed decision records admission wrote, and the user CA. It goes out as
//! the request's status (server-side apply, field manager [`managers::OPERATOR`]), one Event and one
//! log line per transition, metrics, and revoked certificates added to the published
//! revocation list. A finalizer keeps a deleted Issued request around until it is recorded as Revoked.

use std::{sync::Arc, time::Duration};

use gatehouse_crds::{
    AccessPolicy, AccessRequest, AccessRequestStatus, HostGroup, Phase,
    conditions::decision_reasons, duration,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;

use gatehouse_crds::contract::{self, annotations::DECISIONS, identity, managers};
use gatehouse_ssh_ca::{self as cert, CaKey, UserCertSpec};

use crate::{
    decisions::{self, SealKey},
    error::{Error, Result},
    metrics::Metrics,
    policy::{self, Ask},
    request_status::{self, Issued},
    revocations::{Revocations, Revoked},
};

/// What the reconciler needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Signs user certificates.
    pub user_ca: Arc<CaKey>,
    /// Verifies decision records.
    pub seal: SealKey,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Pending requests nobody approves expire after this long.
    pub pending_ttl: Duration,
    /// All AccessPolicies the operator watches.
    pub policies: Store<AccessPolicy>,
    /// All HostGroups the operator watches.
    pub host_groups: Store<HostGroup>,
    /// The revocation list a revoked certificate is added to before its status says Revoked.
    pub revocations: Arc<Revocations>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("pending_ttl", &self.pending_ttl)
            .finish_non_exhaustive()
    }
}

/// The next state of a request.
#[derive(Debug)]
struct Next {
    status: AccessRequestStatus,
    /// Event type, reason and note, published only when the status changes.
    event: Option<(EventType, &'static str, String)>,
    requeue: Option<Duration>,
}

fn to_duration(span: jiff::SignedDuration) -> Duration {
    span.try_into().unwrap_or(Duration::ZERO)
}

fn end(
    previous: &AccessRequestStatus,
    phase: Phase,
    denied: Option<&'static str>,
    message: String,
    now: &Time,
    g: Option<i64>,
) -> Next {
    let event_type = if phase == Phase::Expired {
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
    Next {
        status: request_status::ended(previous, phase, denied, &message, now, g),
        event: Some((event_type, reason, message)),
        requeue: None,
    }
}

/// Decide the next state from the request and the stores. Signs when the request is ready.
fn decide(request: &AccessRequest, ctx: &Context, now: Timestamp) -> Result<Next> {
    let previous = request.status.clone().unwrap_or_default();
    let g = request.metadata.generation;
    let at = Time(now);
    let namespace = request.namespace().unwrap_or_default();
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let requester = request.spec.requester.as_ref();
    let annotation = request.annotations().get(DECISIONS).map(String::as_str);
    let decisions = decisions::tally(
        &ctx.seal,
        &uid,
        requester.map(|r| r.username.as_str()),
        annotation,
    );
    if decisions.untrusted > 0 {
        tracing::warn!(request = %request.name_any(), namespace, untrusted = decisions.untrusted, "ignoring decision records that fail verification");
    }
    if let Some(record) = &decisions.revoked {
        let message = format!(
            "revoked by {}: {}",
            record.user,
            record.message.as_deref().unwrap_or("no reason given")
        );
        return Ok(end(&previous, Phase::Revoked, None, message, &at, g));
    }
    if let Some(record) = &decisions.denied {
        let message = format!(
            "denied by {}: {}",
            record.user,
            record.message.as_deref().unwrap_or("no reason given")
        );
        return Ok(end(
            &previous,
            Phase::Denied,
            Some(decision_reasons::DENIED_BY_APPROVER),
            message,
            &at,
            g,
        ));
    }
    if previous.phase == Some(Phase::Issued) {
        let Some(valid_before) = previous.valid_before.as_ref().map(|t| t.0) else {
            return Ok(end(
                &previous,
                Phase::Failed,
                None,
                "Issued without validBefore".into(),
                &at,
                g,
            ));
        };
        if now >= valid_before {
            return Ok(end(
                &previous,
                Phase::Expired,
                None,
                format!("certificate expired at {valid_before}"),
                &at,
                g,
            ));
        }
        let mut same = previous.clone();
        same.sessions.clear();
        return Ok(Next {
            status: same,
            event: None,
            requeue: Some(to_duration(valid_before.duration_since(now)) + Duration::from_secs(1)),
        });
    }
    let created = request
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let deadline = created
        + jiff::SignedDuration::try_from(ctx.pending_ttl).unwrap_or(jiff::SignedDuration::MAX);
    if now >= deadline {
        let ttl = duration::format(ctx.pending_ttl);
        return Ok(end(
            &previous,
            Phase::Expired,
            None,
            format!("not approved within the pending TTL of {ttl}"),
            &at,
            g,
        ));
    }
    let refuse = |message: String| {
        Ok(end(
            &previous,
            Phase::Denied,
            Some(decision_reasons::NO_MATCHING_POLICY),
            message,
            &at,
            g,
        ))
    };
    let target = &request.spec.target;
    let Some(host_group) = ctx
        .host_groups
        .get(&ObjectRef::new(&target.host_group).within(&namespace))
    else {
        return refuse(format!(
            "HostGroup {} does not exist in namespace {namespace}",
            target.host_group
        ));
    };
    if let Some(host) = &target.host
        && !host_group.spec.hosts.iter().any(|h| &h.name == host)
    {
        return refuse(format!(
            "host {host} is not in HostGroup {}",
            target.host_group
        ));
    }
    let mut policies: Vec<AccessPolicy> = ctx
        .policies
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .map(|p| (*p).clone())
        .collect();
    // Approvals were given under the recorded policy: keep judging the request by it alone.
    if let Some(recorded) = &previous.policy {
        policies.retain(|p| &p.name_any() == recorded);
        if policies.is_empty() {
            return refuse(format!(
                "AccessPolicy {recorded}, which governed this request, no longer exists"
            ));
        }
    }
    let labels = host_group.labels().clone();
    let ask = Ask {
        namespace: &namespace,
        requester,
        host_group: &target.host_group,
        host_group_labels: &labels,
        login: &request.spec.login,
        duration: &request.spec.duration,
        reason: request.spec.reason.as_deref(),
    };
    let (policy, grant) = match policy::govern(&policies, &ask) {
        Ok(found) => found,
        Err(refusal) => return refuse(refusal.to_string()),
    };
    let granted = duration::format(grant.duration);
    let approvals = request_status::approvals(&decisions);
    let required = grant.required_approvals;
    if approvals.len() < usize::try_from(required).unwrap_or(usize::MAX) {
        let next = request_status::pending(
            &previous,
            &grant.policy,
            &granted,
            approvals,
            required,
            &at,
            g,
        );
        let event = if previous.phase != Some(Phase::Pending) {
            Some((
                EventType::Normal,
                "Pending",
                next.conditions
                    .iter()
                    .find(|c| c.type_ == gatehouse_crds::conditions::READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            ))
        } else if next.approvals.len() > previous.approvals.len() {
            Some((
                EventType::Normal,
                "ApprovalRecorded",
                format!(
                    "approved by {}",
                    request_status::approver_names(&next.approvals)
                ),
            ))
        } else {
            None
        };
        return Ok(Next {
            status: next,
            event,
            requeue: Some(to_duration(deadline.duration_since(now)) + Duration::from_secs(1)),
        });
    }
    let (valid_after, valid_before) =
        cert::validity(now.as_second().unsigned_abs(), grant.duration);
    let requester_name = requester.map(|r| r.username.as_str()).unwrap_or_default();
    let spec = UserCertSpec {
        public_key: &request.spec.public_key,
        serial: cert::random_serial(),
        key_id: identity::user_key_id(&namespace, &request.name_any(), &uid, requester_name),
        principals: cert::principals(
            host_group.spec.mode,
            &namespace,
            &request.name_any(),
            &target.host_group,
            &request.spec.login,
        ),
        valid_after,
        valid_before,
        extensions: &policy.spec.certificate.extensions,
        force_command: policy.spec.certificate.force_command.as_deref(),
        source_addresses: &policy.spec.certificate.source_addresses,
    };
    let signed = match cert::sign_user_cert(&ctx.user_ca, &spec) {
        Ok(signed) => signed,
        // The key passed the CRD's format rule but is unusable: the request can never succeed.
        Err(gatehouse_ssh_ca::Error::ParsePublicKey(problem)) => {
            return Ok(end(
                &previous,
                Phase::Failed,
                None,
                format!("spec.publicKey: {problem}"),
                &at,
                g,
            ));
        }
        Err(other) => return Err(other.into()),
    };
    let line = signed
        .to_openssh()
        .map_err(|source| gatehouse_ssh_ca::Error::EncodeOpenSsh {
            what: "certificate",
            source,
        })?;
    let time = |secs: u64| {
        Time(Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX)).unwrap_or(now))
    };
    let issued = Issued {
        certificate: line,
        serial: spec.serial,
        key_id: spec.key_id.clone(),
        principals: spec.principals.clone(),
        valid_after: time(valid_after),
        valid_before: time(valid_before),
    };
    let note = format!(
        "certificate serial {} issued for {granted}, principals [{}]",
        spec.serial,
        spec.principals.join(", ")
    );
    let next = request_status::issued(
        &previous,
        &grant.policy,
        &granted,
        request_status::approvals(&decisions),
        issued,
        &at,
        g,
    );
    ctx.metrics.certificates_issued.inc();
    if let Some(last) = decisions
        .approvals
        .iter()
        .filter_map(request_status::record_time)
        .map(|t| t.0)
        .max()
    {
        ctx.metrics
            .approval_to_issue
            .observe(now.duration_since(last).as_secs_f64().max(0.0));
    }
    Ok(Next {
        status: next,
        event: Some((EventType::Normal, "Issued", note)),
        requeue: Some(grant.duration + Duration::from_secs(1)),
    })
}

/// Reconcile one AccessRequest.
pub async fn reconcile(request: Arc<AccessRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&["accessrequest"])
        .start_timer();
    let namespace = request.namespace().unwrap_or_default();
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = request.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if request.metadata.deletion_timestamp.is_some() {
        if previous.phase == Some(Phase::Issued) {
            let next = end(
                &previous,
                Phase::Revoked,
                None,
                "AccessRequest deleted".to_owned(),
                &Time(now),
                request.metadata.generation,
            );
            write(&api, &request, &previous, next, &ctx).await?;
        }
        remove_finalizer(&api, &request).await?;
        return Ok(Action::await_change());
    }
    if previous.phase.is_some_and(Phase::is_terminal) {
        return Ok(Action::await_change());
    }
    ensure_finalizer(&api, &request).await?;
    let next = decide(&request, &ctx, now)?;
    if awaits_watch_lag(&request, &previous, &next, now) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let requeue = next.requeue;
    write(&api, &request, &previous, next, &ctx).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// How long a new request may wait for the caches to show the policy or HostGroup it needs.
pub const WATCH_LAG_GRACE: Duration = Duration::from_secs(5);

/// Whether a first-time "no matching policy" denial should wait: the request, its policy and
/// its HostGroup arrive on separate watches in no guaranteed order (a GitOps sync applies
/// them together), and a denial is permanent. A request younger than [`WATCH_LAG_GRACE`] is
/// judged again shortly instead.
fn awaits_watch_lag(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    next: &Next,
    now: Timestamp,
) -> bool {
    let fresh_no_match = previous.policy.is_none()
        && next.status.phase == Some(Phase::Denied)
        && next.status.conditions.iter().any(|c| {
            c.type_ == gatehouse_crds::conditions::DENIED
                && c.reason == decision_reasons::NO_MATCHING_POLICY
        });
    let young = request
        .metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|created| to_duration(now.duration_since(created.0)) < WATCH_LAG_GRACE);
    fresh_no_match && young
}

/// Apply the status if it changed; publish the Event and log line of the transition.
async fn write(
    api: &Api<AccessRequest>,
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    next: Next,
    ctx: &Context,
) -> Result<()> {
    if !request_status::changed(previous, &next.status) {
        return Ok(());
    }
    let name = request.name_any();
    let namespace = request.namespace().unwrap_or_default();
    let what = format!("AccessRequest {namespace}/{name}");
    // A revoked certificate is published as revoked before the status says so: if publishing
    // fails, the reconcile retries (a terminal status would never be looked at again).
    if next.status.phase == Some(Phase::Revoked)
        && let (Some(serial), Some(valid_before)) =
            (previous.serial.as_deref(), previous.valid_before.as_ref())
        && let Ok(serial) = serial.parse()
    {
        let entry = Revoked {
            namespace: namespace.clone(),
            name: name.clone(),
            serial,
            key_id: previous.key_id.clone().unwrap_or_default(),
            valid_before: valid_before.0.to_string(),
        };
        ctx.revocations.add(entry).await?;
    }
    let patch = json!({
        "apiVersion": AccessRequest::api_version(&()),
        "kind": AccessRequest::kind(&()),
        "status": next.status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(managers::OPERATOR).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        what: what.clone(),
        source,
    })?;
    let phase = next.status.phase;
    if let Some((type_, reason, note)) = next.event {
        tracing::info!(
            request = %what,
            from = ?previous.phase,
            to = ?phase,
            reason,
            message = %note,
            requester = request.spec.requester.as_ref().map(|r| r.username.as_str()).unwrap_or_default(),
            serial = next.status.serial.as_deref().unwrap_or_default(),
            "transition"
        );
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // An Event that fails to publish must not undo or repeat the transition.
        if let Err(error) = ctx.recorder.publish(&event, &request.object_ref(&())).await {
            tracing::warn!(%error, request = %what, "publishing Event failed");
        }
    }
    Ok(())
}

async fn ensure_finalizer(api: &Api<AccessRequest>, request: &AccessRequest) -> Result<()> {
    if request
        .finalizers()
        .iter()
        .any(|f| f == contract::REVOCATION_FINALIZER)
    {
        return Ok(());
    }
    let mut finalizers = request.finalizers().to_vec();
    finalizers.push(contract::REVOCATION_FINALIZER.to_owned());
    patch_finalizers(api, request, finalizers).await
}

async fn remove_finalizer(api: &Api<AccessRequest>, request: &AccessRequest) -> Result<()> {
    if !request
        .finalizers()
        .iter()
        .any(|f| f == contract::REVOCATION_FINALIZER)
    {
        return Ok(());
    }
    let finalizers = request
        .finalizers()
        .iter()
        .filter(|f| *f != contract::REVOCATION_FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(api, request, finalizers).await
}

async fn patch_finalizers(
    api: &Api<AccessRequest>,
    request: &AccessRequest,
    finalizers: Vec<String>,
) -> Result<()> {
    // resourceVersion makes this a compare-and-swap: a concurrent change to the list conflicts
    // and the reconcile retries instead of dropping someone else's finalizer.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": request.resource_version()}});
    api.patch(
        &request.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::UpdateFinalizer {
        what: format!(
            "{}/{}",
            request.namespace().unwrap_or_default(),
            request.name_any()
        ),
        source,
    })?;
    Ok(())
}

/// Backoff per error: conflicts retry at once, API trouble soon, anything else later.
pub fn error_policy(request: Arc<AccessRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = error_kind(error);
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["accessrequest", kind])
        .inc();
    tracing::warn!(request = %request.name_any(), namespace = request.namespace().unwrap_or_default(), %error, "reconcile failed");
    match error {
        Error::WriteStatus {
            source: kube::Error::Api(s),
            ..
        }
        | Error::UpdateFinalizer {
            source: kube::Error::Api(s),
            ..
        } if s.code == 409 => Action::requeue(Duration::from_millis(100)),
        Error::WriteStatus { .. } | Error::UpdateFinalizer { .. } | Error::ReadObject { .. } => {
            Action::requeue(Duration::from_secs(2))
        }
        _ => Action::requeue(Duration::from_secs(30)),
    }
}

/// A short, bounded label for an error (the variant name).
pub fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::WriteStatus { .. } => "WriteStatus",
        Error::UpdateFinalizer { .. } => "UpdateFinalizer",
        Error::ReadObject { .. } => "ReadObject",
        Error::Certificate(_) => "Certificate",
        Error::PublishConfigMap { .. } => "PublishConfigMap",
        _ => "Other",
    }
}
