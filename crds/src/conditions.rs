//! Condition types and reasons used in Gatehouse statuses (cert-manager conventions), and the
//! pure helper that keeps a condition list in that shape.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: the request was approved (only ever True; permanent).
pub const APPROVED: &str = "Approved";
/// Condition type: the request was denied (only ever True; permanent; excludes `Approved`).
pub const DENIED: &str = "Denied";
/// Condition type: whether a usable certificate exists (AccessRequest) or the object is valid
/// and usable (HostGroup, AccessPolicy).
pub const READY: &str = "Ready";

/// Reasons of the AccessRequest `Ready` condition; each is also the request's `status.phase`.
pub mod reasons {
    /// Waiting for approvals.
    pub const PENDING: &str = "Pending";
    /// A certificate was issued.
    pub const ISSUED: &str = "Issued";
    /// Denied by an approver or by policy.
    pub const DENIED: &str = "Denied";
    /// The certificate or the pending request expired.
    pub const EXPIRED: &str = "Expired";
    /// Revoked or deleted.
    pub const REVOKED: &str = "Revoked";
    /// Could not be issued.
    pub const FAILED: &str = "Failed";
}

/// Reasons of the `Approved` and `Denied` conditions.
pub mod decision_reasons {
    /// Enough distinct approvers approved.
    pub const APPROVED: &str = "Approved";
    /// The governing policy requires no approval.
    pub const AUTO_APPROVED: &str = "AutoApproved";
    /// An approver denied it.
    pub const DENIED_BY_APPROVER: &str = "DeniedByApprover";
    /// No AccessPolicy allows it (the message says which rule failed).
    pub const NO_MATCHING_POLICY: &str = "NoMatchingPolicy";
}

/// Set condition `type_` in `conditions`, keeping its transition time if its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Time,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: since,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn conditions_keep_their_transition_time_until_their_status_changes() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            false,
            "Pending",
            "waiting",
            &at(10),
            Some(1),
        );
        set_condition(
            &mut conditions,
            READY,
            false,
            "Pending",
            "1 of 2",
            &at(20),
            Some(1),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "1 of 2");
        set_condition(
            &mut conditions,
            READY,
            true,
            "Issued",
            "ok",
            &at(30),
            Some(1),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions[0].status, "True");
    }
}
