//! The AccessRequest reconciler: the I/O around the pure state machine in [`crate::decision`].
//!
//! Data comes from a kube-runtime watch of AccessRequests, reflector stores of AccessPolicies
//! and HostGroups, the sealed decision records admission wrote, and the user CA. It goes out as
//! the request's status (server-side apply, field manager [`managers::OPERATOR`]), one Event and one
//! log line per transition, metrics, and revoked certificates added to the published
//! revocation list. A finalizer keeps a deleted Issued request around until it is recorded as Revoked.

use std::{sync::Arc, time::Duration};

use gatehouse_crds::{
    AccessPolicy, AccessRequest, AccessRequestStatus, HostGroup, Phase,
    contract::{self, annotations::DECISIONS, managers},
};
use gatehouse_ssh_ca::{CaKey, UserCertSpec};
use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;

use crate::{
    decision::{self, Decision, Facts, Issuance, Transition},
    decisions,
    error::{Error, Result},
    metrics::Metrics,
    request_status,
    revocations::Revocations,
    seal_keys::SharedSealKeys,
};

/// What the reconciler needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Signs user certificates.
    pub user_ca: Arc<CaKey>,
    /// Verifies decision records (replaced when the key rotates).
    pub seal: SharedSealKeys,
    /// Who publishes the Events (controller and instance): each transition's Event goes
    /// through its own [`transition_recorder`] under this name.
    pub reporter: Reporter,
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
    /// RBAC, to name who may approve a pending request.
    pub rbac: crate::approvers::RbacCaches,
    /// Where audit events are made durable (`--audit-store`); none: the log only.
    pub audit: Option<gatehouse_store::audit::AuditWriter>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("pending_ttl", &self.pending_ttl)
            .finish_non_exhaustive()
    }
}

/// Reconcile one AccessRequest: verify its decision records, decide ([`decision::decide`]),
/// and carry the decision out.
pub async fn reconcile(request: Arc<AccessRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&["accessrequest"])
        .start_timer();
    let namespace = request.namespace().unwrap_or_default();
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = request.status.clone().unwrap_or_default();
    let deleting = request.metadata.deletion_timestamp.is_some();
    // Every status write is a compare-and-swap on the version this decision read (after the
    // finalizer patch): a reconcile on a cache older than the last write conflicts and is
    // retried, instead of deciding again (which would sign a second certificate).
    let mut version = request.resource_version();
    if !deleting
        && !previous.phase.is_some_and(Phase::is_terminal)
        && let Some(patched) = ensure_finalizer(&api, &request).await?
    {
        version = Some(patched);
    }
    let version = version.as_deref();
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let decisions = decisions::tally(
        &ctx.seal.get(),
        &uid,
        request.spec.requester.as_ref().map(|r| r.username.as_str()),
        request.annotations().get(DECISIONS).map(String::as_str),
    );
    if decisions.untrusted > 0 {
        tracing::warn!(request = %request.name_any(), namespace, untrusted = decisions.untrusted, "ignoring decision records that fail verification");
    }
    // A record from a seal key another replica rotated to verifies once the keys reload.
    let recheck = (decisions.untrusted > 0).then_some(SEAL_RELOAD_WAIT);
    let host_group = ctx
        .host_groups
        .get(&ObjectRef::new(&request.spec.target.host_group).within(&namespace));
    let policies: Vec<AccessPolicy> = ctx
        .policies
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .map(|p| (**p).clone())
        .collect();
    let now = Timestamp::now();
    let facts = Facts {
        decisions: &decisions,
        host_group: host_group.as_deref(),
        policies: &policies,
        pending_ttl: ctx.pending_ttl,
        revoked_in_namespace: ctx.revocations.count_in(&namespace).await?,
        revoked_limit: ctx.revocations.per_namespace_limit(),
        now,
    };
    let action = |requeue: Option<Duration>| match requeue.into_iter().chain(recheck).min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    };
    let approvers = |status: &AccessRequestStatus| {
        let policy = status.policy.as_deref()?;
        let requester = request.spec.requester_name();
        ctx.rbac.eligible(&namespace, policy, requester)
    };
    match decision::decide(&request, &facts) {
        Decision::Wait(requeue) => {
            // Still Pending: keep who may approve current (RBAC may have changed).
            if previous.phase == Some(Phase::Pending)
                && let Some(current) = approvers(&previous)
                && previous.eligible_approvers.as_ref() != Some(&current)
            {
                let mut status = previous.clone();
                status.sessions.clear();
                status.eligible_approvers = Some(current);
                let transition = Transition {
                    status,
                    note: None,
                    requeue,
                    revoke: None,
                };
                write(&api, &request, &previous, transition, version, &ctx).await?;
            }
            Ok(action(requeue))
        }
        Decision::Write(mut transition) => {
            if transition.status.phase == Some(Phase::Pending)
                && let Some(current) = approvers(&transition.status)
            {
                transition.status.eligible_approvers = Some(current);
            }
            let requeue = transition.requeue;
            write(&api, &request, &previous, transition, version, &ctx).await?;
            Ok(action(requeue))
        }
        Decision::Issue(issuance) => {
            let transition = sign(&request, &issuance, &ctx.user_ca, now)?;
            ctx.metrics.certificates_issued.inc();
            if let Some(approved) = issuance.completed_by_approval_at {
                ctx.metrics
                    .approval_to_issue
                    .observe(now.duration_since(approved).as_secs_f64().max(0.0));
            }
            let requeue = transition.requeue;
            // One request, one certificate: the write succeeds only against the version the
            // decision read, so a stale cache can never put a second certificate in status.
            write(&api, &request, &previous, transition, version, &ctx).await?;
            Ok(action(requeue))
        }
        Decision::Release { transition, revoke } => {
            if let Some(transition) = transition {
                write(&api, &request, &previous, transition, version, &ctx).await?;
            }
            // The request (and its finalizer) stays until its certificate is listed.
            if let Some(entry) = revoke {
                ctx.revocations.add(entry).await?;
            }
            remove_finalizer(&api, &request).await?;
            Ok(Action::await_change())
        }
    }
}

/// How soon a request with records that did not verify is looked at again: by then every
/// replica has reloaded the seal keys.
const SEAL_RELOAD_WAIT: Duration = Duration::from_secs(35);

/// Sign the ordered certificate with a fresh random serial; the Issued transition.
fn sign(
    request: &AccessRequest,
    issuance: &Issuance,
    user_ca: &CaKey,
    now: Timestamp,
) -> Result<Transition> {
    let order = &issuance.order;
    let serial = gatehouse_ssh_ca::random_serial();
    let spec = UserCertSpec {
        public_key: &order.public_key,
        serial,
        key_id: order.key_id.clone(),
        principals: order.principals.clone(),
        valid_after: order.valid_after,
        valid_before: order.valid_before,
        extensions: &order.extensions,
        force_command: order.force_command.as_deref(),
        source_addresses: &order.source_addresses,
    };
    let line = gatehouse_ssh_ca::sign_user_cert(user_ca, &spec)?
        .to_openssh()
        .map_err(|source| gatehouse_ssh_ca::Error::EncodeOpenSsh {
            what: "certificate",
            source,
        })?;
    Ok(decision::issued(request, issuance, serial, line, now))
}

/// Apply the status if it changed (only against `resource_version`, when given); then publish
/// the revocation, the Event and the log line of the transition.
async fn write(
    api: &Api<AccessRequest>,
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    transition: Transition,
    resource_version: Option<&str>,
    ctx: &Context,
) -> Result<()> {
    if !request_status::changed(previous, &transition.status) {
        return Ok(());
    }
    let name = request.name_any();
    let namespace = request.namespace().unwrap_or_default();
    let what = format!("AccessRequest {namespace}/{name}");
    let mut patch = json!({
        "apiVersion": AccessRequest::api_version(&()),
        "kind": AccessRequest::kind(&()),
        "status": transition.status,
    });
    if let Some(version) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
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
    // Status says Revoked first, whatever happens to the list: the proxy refuses on status. The
    // publisher keeps merging Revoked requests from the store, so a failure here is retried.
    if let Some(entry) = transition.revoke
        && let Err(error) = ctx.revocations.add(entry).await
    {
        tracing::warn!(%error, request = %what, "publishing the revocation failed; the publisher retries");
    }
    if let Some(note) = transition.note {
        crate::audit_log::transition(
            request,
            previous,
            &transition.status,
            &note,
            &ctx.seal,
            ctx.audit.as_ref(),
        )
        .await;
        tracing::info!(
            request = %what,
            from = ?previous.phase,
            to = ?transition.status.phase,
            reason = note.reason,
            message = %note.message,
            requester = request.spec.requester_name(),
            serial = transition.status.serial.as_deref().unwrap_or_default(),
            "transition"
        );
        let event = Event {
            type_: note.type_,
            reason: note.reason.to_owned(),
            note: Some(note.message),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // An Event that fails to publish must not undo or repeat the transition. It is published
        // off the reconcile: awaiting it held one of the controller's slots for a second round
        // trip, so under a burst issuance and approvals queued behind other requests' Events.
        // Bounded: once EVENTS_IN_FLIGHT are pending the reconcile waits for a place.
        let permit = match Arc::clone(&EVENTS_IN_FLIGHT).acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return Ok(()),
        };
        let recorder = transition_recorder(&ctx.client, &ctx.reporter);
        let reference = request.object_ref(&());
        tokio::spawn(async move {
            // A hung publish must not keep its place: the reconciles wait for places.
            match tokio::time::timeout(EVENT_PUBLISH_TIMEOUT, recorder.publish(&event, &reference))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, request = %what, "publishing Event failed");
                }
                Err(_) => tracing::warn!(request = %what, "publishing Event timed out"),
            }
            drop(permit);
        });
    }
    Ok(())
}

/// How long one Event may take to publish before its place is given back.
const EVENT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Transition Events being published at once, at most.
const MAX_EVENTS_IN_FLIGHT: usize = 64;

/// The places for Events in flight (one operator process, one controller).
static EVENTS_IN_FLIGHT: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_EVENTS_IN_FLIGHT)));

/// A recorder for one transition's Event. kube's [`Recorder`] caches every Event it publishes
/// for six minutes, to turn a repeat into a `series` patch, and scans the whole cache under a
/// lock on each publish. A transition never repeats (the status changed, so the next one is a
/// different Event), so that cache only grows: about 2 KiB per request and an O(n) scan per
/// Event in a burst of 10,000. A fresh recorder publishes the same Event with an empty cache.
fn transition_recorder(client: &Client, reporter: &Reporter) -> Recorder {
    Recorder::new(client.clone(), reporter.clone())
}

/// Add the revocation finalizer when missing; returns the request's new resourceVersion.
async fn ensure_finalizer(
    api: &Api<AccessRequest>,
    request: &AccessRequest,
) -> Result<Option<String>> {
    if request
        .finalizers()
        .iter()
        .any(|f| f == contract::REVOCATION_FINALIZER)
    {
        return Ok(None);
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
    patch_finalizers(api, request, finalizers).await.map(drop)
}

async fn patch_finalizers(
    api: &Api<AccessRequest>,
    request: &AccessRequest,
    finalizers: Vec<String>,
) -> Result<Option<String>> {
    // resourceVersion makes this a compare-and-swap: a concurrent change to the list conflicts
    // and the reconcile retries instead of dropping someone else's finalizer.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": request.resource_version()}});
    let patched = api
        .patch(
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
    Ok(patched.resource_version())
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
        // The API server refused what we wrote as invalid: retrying soon cannot help.
        Error::WriteStatus {
            source: kube::Error::Api(s),
            ..
        } if s.code == 422 => Action::requeue(Duration::from_secs(60)),
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
