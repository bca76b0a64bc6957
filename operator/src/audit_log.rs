//! The operator's audit events (issue 15): one per fact of a request's life (created,
//! approved, denied, issued, revoked, expired, failed), written as one log line each under the
//! `tracing` target [`gatehouse_crds::audit::LOG_TARGET`] with the event's JSON in the field
//! `event`, and durably through the [`AuditWriter`] when `--audit-store` names a store
//! (spooled, batched, chained: see [`gatehouse_store::audit`]). Data comes from the controller
//! at each status transition (the request, the status before and after, the transition's note,
//! and the verified decision records naming who denied or revoked); [`events`] is pure.

use gatehouse_crds::{
    AccessRequest, AccessRequestStatus, Phase,
    audit::{Actor, AuditEvent, EventType, LOG_TARGET, RequestRef},
};
use gatehouse_store::audit::AuditWriter;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::ResourceExt;

use crate::{
    decision::Note,
    decisions::{self, Decisions},
    seal_keys::SharedSealKeys,
};

/// Log the audit events of the transition from `previous` to `next` (see [`events`]) and,
/// with a `writer`, append them durably. The transition is already in the status: a failed
/// append cannot undo it, so it is logged as an error (the event stays in the log).
pub async fn transition(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    next: &AccessRequestStatus,
    note: &Note,
    seal: &SharedSealKeys,
    writer: Option<&AuditWriter>,
) {
    let verified = decisions::tally(
        &seal.get(),
        request.metadata.uid.as_deref().unwrap_or_default(),
        request.spec.requester.as_ref().map(|r| r.username.as_str()),
        request
            .annotations()
            .get(gatehouse_crds::contract::annotations::DECISIONS)
            .map(String::as_str),
    );
    let now = MicroTime(jiff::Timestamp::now());
    for event in events(request, previous, next, note, &verified, now) {
        tracing::info!(target: LOG_TARGET, event = %event.to_line(), "audit");
        if let Some(writer) = writer
            && let Err(error) = writer.record(&event).await
        {
            tracing::error!(
                %error,
                request = %request.name_any(),
                "an audit event was not made durable (logged only)"
            );
        }
    }
}

/// The events of one transition, in order: `requestCreated` when the request had no phase
/// yet, `approved` for each approval not in `previous` (by its approver), then the new phase's
/// event when the phase changed (`denied`/`revoked` by the verified record's user, when one
/// decided it).
pub fn events(
    request: &AccessRequest,
    previous: &AccessRequestStatus,
    next: &AccessRequestStatus,
    note: &Note,
    verified: &Decisions,
    now: MicroTime,
) -> Vec<AuditEvent> {
    let base = |type_: EventType, actor: Option<Actor>| {
        let mut event = AuditEvent::new(now.clone(), type_);
        event.actor = actor;
        event.namespace = request.namespace();
        event.request = Some(RequestRef {
            name: request.name_any(),
            uid: request.metadata.uid.clone().unwrap_or_default(),
        });
        event.host = request.spec.target.host.clone();
        event.login = Some(request.spec.login.clone());
        event
    };
    let mut out = Vec::new();
    if previous.phase.is_none() && next.phase.is_some() {
        let requester = request
            .spec
            .requester
            .as_ref()
            .map(|r| Actor::kubernetes(&r.username, &r.groups));
        let mut created = base(EventType::RequestCreated, requester);
        created.message = request.spec.reason.clone();
        out.push(created);
    }
    for approval in &next.approvals {
        if previous.approvals.iter().any(|a| a.user == approval.user) {
            continue;
        }
        let mut approved = base(
            EventType::Approved,
            Some(Actor::kubernetes(&approval.user, &[])),
        );
        approved.message = approval.message.clone();
        out.push(approved);
    }
    let Some(phase) = next.phase.filter(|p| Some(*p) != previous.phase) else {
        return out;
    };
    let by = |record: &Option<decisions::DecisionRecord>| {
        record.as_ref().map(|r| Actor::kubernetes(&r.user, &[]))
    };
    let (type_, actor) = match phase {
        Phase::Pending => return out,
        Phase::Issued => (EventType::Issued, None),
        Phase::Denied => (EventType::Denied, by(&verified.denied)),
        Phase::Revoked => (EventType::Revoked, by(&verified.revoked)),
        Phase::Expired => (EventType::Expired, None),
        Phase::Failed => (EventType::Failed, None),
    };
    let mut event = base(type_, actor);
    event.outcome = Some(note.reason.to_owned());
    event.message = Some(note.message.clone());
    out.push(event);
    out
}

#[cfg(test)]
mod tests {
    use gatehouse_crds::{AccessRequestSpec, Approval, Requester, Target};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::decisions::{DecisionKind, DecisionRecord};

    fn request() -> AccessRequest {
        let mut r = AccessRequest::new(
            "r1",
            AccessRequestSpec {
                target: Target {
                    host_group: "db".into(),
                    host: Some("db1".into()),
                },
                login: "ubuntu".into(),
                duration: "30m".into(),
                reason: Some("INC-1".into()),
                public_key: String::new(),
                requester: Some(Requester {
                    username: "alice".into(),
                    uid: None,
                    groups: vec!["dev".into()],
                }),
            },
        );
        r.metadata = ObjectMeta {
            name: Some("r1".into()),
            namespace: Some("team".into()),
            uid: Some("u-1".into()),
            ..Default::default()
        };
        r
    }

    fn status(phase: Option<Phase>, approvers: &[&str]) -> AccessRequestStatus {
        AccessRequestStatus {
            phase,
            approvals: approvers
                .iter()
                .map(|u| Approval {
                    user: (*u).into(),
                    time: Time(jiff::Timestamp::UNIX_EPOCH),
                    message: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn record(kind: DecisionKind, user: &str) -> Option<DecisionRecord> {
        Some(DecisionRecord {
            kind,
            user: user.into(),
            time: String::new(),
            message: None,
            key_version: 0,
            seal: String::new(),
        })
    }

    #[test]
    fn each_transition_yields_its_events_with_the_actor() {
        let note = Note {
            type_: kube::runtime::events::EventType::Normal,
            reason: "R",
            message: "m".into(),
        };
        let revoked = Decisions {
            revoked: record(DecisionKind::Revoke, "bob"),
            ..Default::default()
        };
        let denied = Decisions {
            denied: record(DecisionKind::Deny, "carol"),
            ..Default::default()
        };
        let none = Decisions::default();
        use EventType::*;
        use Phase as P;
        type Case<'a> = (
            &'a str,
            AccessRequestStatus,
            AccessRequestStatus,
            &'a Decisions,
            Vec<(EventType, Option<&'a str>)>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "created",
                status(None, &[]),
                status(Some(P::Pending), &[]),
                &none,
                vec![(RequestCreated, Some("alice"))],
            ),
            (
                "created and issued at once",
                status(None, &[]),
                status(Some(P::Issued), &[]),
                &none,
                vec![(RequestCreated, Some("alice")), (Issued, None)],
            ),
            (
                "one approval of two",
                status(Some(P::Pending), &[]),
                status(Some(P::Pending), &["bob"]),
                &none,
                vec![(Approved, Some("bob"))],
            ),
            (
                "approved and issued",
                status(Some(P::Pending), &["bob"]),
                status(Some(P::Issued), &["bob", "carol"]),
                &none,
                vec![(Approved, Some("carol")), (Issued, None)],
            ),
            (
                "revoked by bob",
                status(Some(P::Issued), &["bob"]),
                status(Some(P::Revoked), &["bob"]),
                &revoked,
                vec![(Revoked, Some("bob"))],
            ),
            (
                "deleted",
                status(Some(P::Issued), &[]),
                status(Some(P::Revoked), &[]),
                &none,
                vec![(Revoked, None)],
            ),
            (
                "denied by carol",
                status(Some(P::Pending), &[]),
                status(Some(P::Denied), &[]),
                &denied,
                vec![(Denied, Some("carol"))],
            ),
            (
                "expired",
                status(Some(P::Issued), &[]),
                status(Some(P::Expired), &[]),
                &none,
                vec![(Expired, None)],
            ),
            (
                "failed",
                status(Some(P::Pending), &[]),
                status(Some(P::Failed), &[]),
                &none,
                vec![(Failed, None)],
            ),
            (
                "same phase, nothing new",
                status(Some(P::Pending), &["bob"]),
                status(Some(P::Pending), &["bob"]),
                &none,
                vec![],
            ),
        ];
        for (name, previous, next, verified, want) in cases {
            let got: Vec<(EventType, Option<String>)> = events(
                &request(),
                &previous,
                &next,
                &note,
                verified,
                MicroTime(jiff::Timestamp::UNIX_EPOCH),
            )
            .into_iter()
            .map(|e| (e.type_, e.actor.and_then(|a| a.user)))
            .collect();
            let want: Vec<(EventType, Option<String>)> = want
                .into_iter()
                .map(|(t, u)| (t, u.map(str::to_owned)))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let created = &events(
            &request(),
            &status(None, &[]),
            &status(Some(P::Pending), &[]),
            &note,
            &none,
            MicroTime(jiff::Timestamp::UNIX_EPOCH),
        )[0];
        let line: serde_json::Value = serde_json::from_str(&created.to_line()).unwrap();
        assert_eq!(line["namespace"], "team");
        assert_eq!(
            line["request"],
            serde_json::json!({"name": "r1", "uid": "u-1"})
        );
        assert_eq!(line["actor"]["groups"], serde_json::json!(["dev"]));
        assert_eq!(line["host"], "db1");
        assert_eq!(line["login"], "ubuntu");
    }
}
