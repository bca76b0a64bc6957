//! AccessRequest status values: what each phase looks like.
//!
//! Data comes from the reconciler's decision (phase, reasons, the grant, verified approvals, a
//! freshly signed certificate) and the request's previous status; it goes out as the complete
//! status the operator owns, ready for a server-side apply. Pure functions: conditions keep
//! their `lastTransitionTime` while their status does not change (cert-manager conventions:
//! `Approved` and `Denied` are only ever True; `Ready`'s reason is the phase).

use gatehouse_crds::{
    AccessRequestStatus, Approval, Phase,
    conditions::{APPROVED, DENIED, READY, set_condition},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::decisions::{DecisionRecord, Decisions};

/// Parse a record's RFC 3339 time; records admission wrote always parse.
pub fn record_time(record: &DecisionRecord) -> Option<Time> {
    record.time.parse::<jiff::Timestamp>().ok().map(Time)
}

/// status.approvals mirrored from the verified decision records.
pub fn approvals(decisions: &Decisions) -> Vec<Approval> {
    decisions
        .approvals
        .iter()
        .filter_map(|record| {
            Some(Approval {
                user: record.user.clone(),
                time: record_time(record)?,
                message: record.message.clone(),
            })
        })
        .collect()
}

/// Names of the approvers, for messages.
pub fn approver_names(approvals: &[Approval]) -> String {
    approvals
        .iter()
        .map(|a| a.user.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status fields every phase shares, taken over from the previous status.
fn base(
    previous: &AccessRequestStatus,
    phase: Phase,
    generation: Option<i64>,
) -> AccessRequestStatus {
    AccessRequestStatus {
        phase: Some(phase),
        conditions: previous.conditions.clone(),
        policy: previous.policy.clone(),
        // Only a Pending request has approvers to name; the controller refreshes them.
        eligible_approvers: (phase == Phase::Pending)
            .then(|| previous.eligible_approvers.clone())
            .flatten(),
        granted_duration: previous.granted_duration.clone(),
        approvals: previous.approvals.clone(),
        certificate: previous.certificate.clone(),
        serial: previous.serial.clone(),
        key_id: previous.key_id.clone(),
        principals: previous.principals.clone(),
        valid_after: previous.valid_after.clone(),
        valid_before: previous.valid_before.clone(),
        // Sessions belong to the proxy's field manager; the operator never writes them.
        sessions: Vec::new(),
        // Notification records belong to the bridge's field manager; the operator never writes them.
        notifications: Vec::new(),
        sessions_total: None,
        observed_generation: generation,
    }
}

/// Waiting for `required` approvals under `policy`.
pub fn pending(
    previous: &AccessRequestStatus,
    policy: &str,
    granted: &str,
    approvals: Vec<Approval>,
    required: u32,
    now: &Time,
    generation: Option<i64>,
) -> AccessRequestStatus {
    let mut status = base(previous, Phase::Pending, generation);
    let message = if approvals.is_empty() {
        format!("waiting for {required} approval(s) under AccessPolicy {policy}")
    } else {
        format!(
            "{} of {required} approval(s) under AccessPolicy {policy} (by {})",
            approvals.len(),
            approver_names(&approvals)
        )
    };
    status.policy = Some(policy.to_owned());
    status.granted_duration = Some(granted.to_owned());
    status.approvals = approvals;
    set_condition(
        &mut status.conditions,
        READY,
        false,
        gatehouse_crds::conditions::reasons::PENDING,
        &message,
        now,
        generation,
    );
    status
}

/// The certificate a request was issued.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    /// OpenSSH certificate line.
    pub certificate: String,
    /// Serial number.
    pub serial: u64,
    /// Key id.
    pub key_id: String,
    /// Principals.
    pub principals: Vec<String>,
    /// Validity start.
    pub valid_after: Time,
    /// Validity end.
    pub valid_before: Time,
}

/// Approved and issued.
#[allow(clippy::too_many_arguments)]
pub fn issued(
    previous: &AccessRequestStatus,
    policy: &str,
    granted: &str,
    approvals: Vec<Approval>,
    certificate: Issued,
    now: &Time,
    generation: Option<i64>,
) -> AccessRequestStatus {
    use gatehouse_crds::conditions::decision_reasons;
    let mut status = base(previous, Phase::Issued, generation);
    let (reason, message) = if approvals.is_empty() {
        (
            decision_reasons::AUTO_APPROVED,
            format!("AccessPolicy {policy} requires no approval"),
        )
    } else {
        (
            decision_reasons::APPROVED,
            format!(
                "approved by {} under AccessPolicy {policy}",
                approver_names(&approvals)
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        APPROVED,
        true,
        reason,
        &message,
        now,
        generation,
    );
    let ready = format!(
        "certificate serial {} for {} valid until {}",
        certificate.serial,
        certificate.principals.join(","),
        certificate.valid_before.0
    );
    set_condition(
        &mut status.conditions,
        READY,
        true,
        gatehouse_crds::conditions::reasons::ISSUED,
        &ready,
        now,
        generation,
    );
    status.policy = Some(policy.to_owned());
    status.granted_duration = Some(granted.to_owned());
    status.approvals = approvals;
    status.certificate = Some(certificate.certificate);
    status.serial = Some(certificate.serial.to_string());
    status.key_id = Some(certificate.key_id);
    status.principals = certificate.principals;
    status.valid_after = Some(certificate.valid_after);
    status.valid_before = Some(certificate.valid_before);
    status
}

/// A terminal phase. Denied also sets the `Denied` condition with `denied_reason`. The
/// certificate fields stay for the audit trail; the proxy and the revocation list act on phase.
pub fn ended(
    previous: &AccessRequestStatus,
    phase: Phase,
    denied_reason: Option<&str>,
    message: &str,
    now: &Time,
    generation: Option<i64>,
) -> AccessRequestStatus {
    let mut status = base(previous, phase, generation);
    if let (Phase::Denied, Some(reason)) = (phase, denied_reason) {
        set_condition(
            &mut status.conditions,
            DENIED,
            true,
            reason,
            message,
            now,
            generation,
        );
    }
    set_condition(
        &mut status.conditions,
        READY,
        false,
        &format!("{phase:?}"),
        message,
        now,
        generation,
    );
    status
}

/// Whether `next` differs from `current` in anything the operator owns.
pub fn changed(current: &AccessRequestStatus, next: &AccessRequestStatus) -> bool {
    let mut current = current.clone();
    current.sessions.clear();
    current.notifications.clear();
    current != *next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::{DecisionKind, SealKey, SealKeys};

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
    }

    #[test]
    fn phases_carry_the_right_conditions() {
        let key = SealKey::new(vec![1; 32]);
        let decisions = crate::decisions::tally(
            &SealKeys::single(key.clone()),
            "u",
            Some("alice"),
            Some(&crate::decisions::render(&[key.seal(
                "u",
                DecisionKind::Approve,
                "bob",
                "2026-11-22T10:00:00Z",
                Some("ok"),
            )])),
        );
        let approvals = approvals(&decisions);
        assert_eq!(approvals.len(), 1);
        assert_eq!(approvals[0].time.0.as_second(), 1_795_341_600);

        let pending = pending(
            &AccessRequestStatus::default(),
            "oncall",
            "1h",
            approvals.clone(),
            2,
            &at(1),
            Some(1),
        );
        assert_eq!(pending.phase, Some(Phase::Pending));
        assert_eq!(
            pending.conditions[0].message,
            "1 of 2 approval(s) under AccessPolicy oncall (by bob)"
        );

        let cert = Issued {
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
            serial: 7,
            key_id: "kid".into(),
            principals: vec!["p".into()],
            valid_after: at(0),
            valid_before: at(3600),
        };
        let issued = issued(&pending, "oncall", "1h", approvals, cert, &at(2), Some(1));
        let types: Vec<_> = issued
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Approved", "True", "Approved"),
                ("Ready", "True", "Issued")
            ]
        );
        assert_eq!(issued.serial.as_deref(), Some("7"));

        let revoked = ended(
            &issued,
            Phase::Revoked,
            None,
            "revoked by alice",
            &at(3),
            Some(1),
        );
        assert_eq!(
            revoked.certificate, issued.certificate,
            "kept for the audit trail"
        );
        assert!(
            revoked
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Revoked")
        );
        let denied = ended(
            &pending,
            Phase::Denied,
            Some("NoMatchingPolicy"),
            "no policy",
            &at(3),
            Some(1),
        );
        assert!(
            denied
                .conditions
                .iter()
                .any(|c| c.type_ == "Denied" && c.reason == "NoMatchingPolicy")
        );
        assert!(!changed(&denied, &denied.clone()));
        assert!(changed(&pending, &denied));
    }
}
