//! Whether an issued grant still holds after its policy or HostGroup changed. Pure; the operator
//! (to revoke) and the proxy (to end sessions, without waiting for the operator) agree on it.

use kube::ResourceExt;

use super::{names_requester, selector_matches};
use crate::AccessPolicy;

/// Why an issued grant no longer holds: the policy or HostGroup it rests on was deleted, or
/// changed so that it no longer covers the request. A change that still covers it withdraws
/// nothing (a shorter `maxDuration`, say, applies to new requests only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Withdrawal {
    /// The governing policy is gone.
    #[error("AccessPolicy {namespace}/{policy} was deleted")]
    PolicyDeleted {
        /// Namespace.
        namespace: String,
        /// Policy name.
        policy: String,
    },
    /// The HostGroup is gone.
    #[error("HostGroup {namespace}/{host_group} was deleted")]
    HostGroupDeleted {
        /// Namespace.
        namespace: String,
        /// HostGroup name.
        host_group: String,
    },
    /// The requested host left its HostGroup.
    #[error("host {host} was removed from HostGroup {namespace}/{host_group}")]
    HostRemoved {
        /// Namespace.
        namespace: String,
        /// HostGroup name.
        host_group: String,
        /// Host name.
        host: String,
    },
    /// The policy no longer names the requester.
    #[error("AccessPolicy {namespace}/{policy} no longer names {requester} among its subjects")]
    SubjectRemoved {
        /// Namespace.
        namespace: String,
        /// Policy name.
        policy: String,
        /// Requester user name.
        requester: String,
    },
    /// The policy's hostSelector no longer selects the HostGroup.
    #[error("AccessPolicy {namespace}/{policy} no longer selects HostGroup {host_group}")]
    HostGroupNotSelected {
        /// Namespace.
        namespace: String,
        /// Policy name.
        policy: String,
        /// HostGroup name.
        host_group: String,
    },
    /// The policy no longer allows the login.
    #[error("AccessPolicy {namespace}/{policy} no longer allows login {login}")]
    LoginRemoved {
        /// Namespace.
        namespace: String,
        /// Policy name.
        policy: String,
        /// The login.
        login: String,
    },
}

/// Whether the policy named `policy_name` (as found in the request's namespace, if it still
/// exists) and the request's HostGroup (likewise) still cover an issued `request`.
pub fn still_covers(
    request: &crate::AccessRequest,
    policy_name: &str,
    policy: Option<&AccessPolicy>,
    host_group: Option<&crate::HostGroup>,
) -> Result<(), Withdrawal> {
    let namespace = request.namespace().unwrap_or_default();
    let group_name = &request.spec.target.host_group;
    let Some(policy) = policy else {
        return Err(Withdrawal::PolicyDeleted {
            namespace,
            policy: policy_name.to_owned(),
        });
    };
    let Some(group) = host_group else {
        return Err(Withdrawal::HostGroupDeleted {
            namespace,
            host_group: group_name.clone(),
        });
    };
    if let Some(host) = &request.spec.target.host
        && !group.spec.hosts.iter().any(|h| &h.name == host)
    {
        return Err(Withdrawal::HostRemoved {
            namespace,
            host_group: group_name.clone(),
            host: host.clone(),
        });
    }
    let requester = request.spec.requester.as_ref();
    if !requester.is_some_and(|r| names_requester(policy, &namespace, r)) {
        return Err(Withdrawal::SubjectRemoved {
            namespace,
            policy: policy_name.to_owned(),
            requester: requester.map(|r| r.username.clone()).unwrap_or_default(),
        });
    }
    if !selector_matches(&policy.spec.host_selector, group.labels()) {
        return Err(Withdrawal::HostGroupNotSelected {
            namespace,
            policy: policy_name.to_owned(),
            host_group: group_name.clone(),
        });
    }
    if !policy.spec.logins.contains(&request.spec.login) {
        return Err(Withdrawal::LoginRemoved {
            namespace,
            policy: policy_name.to_owned(),
            login: request.spec.login.clone(),
        });
    }
    Ok(())
}
