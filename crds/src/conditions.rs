//! Condition types and reasons used in Gatehouse statuses (cert-manager conventions).

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
