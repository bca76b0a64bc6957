//! Which AccessPolicy governs an AccessRequest, and what it grants. Pure functions that the
//! operator (to issue) and the proxy (to keep a grant alive) must agree on.
//!
//! A policy governs a request when, in the request's namespace, one of its subjects is the
//! requester (user name, one of their groups, or their ServiceAccount), its hostSelector
//! selects the target HostGroup's labels, and its logins include the requested login.
//!
//! When several policies govern a request the choice is deterministic: fewest required
//! approvals first (the requester is entitled under each, so the quickest path wins), then the
//! longest maxDuration, then the policy name.

use std::{collections::BTreeMap, time::Duration};

use crate::{AccessPolicy, Requester, SubjectKind, duration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

mod withdrawal;
pub use withdrawal::{Withdrawal, still_covers};

/// Why no policy grants a request. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Admission did not stamp the requester, so nobody can be matched.
    #[error("spec.requester is empty: the request was not stamped by Gatehouse admission")]
    NoRequester,
    /// No policy names the requester.
    #[error(
        "no AccessPolicy in namespace {namespace} has a subject matching user {user} or groups [{groups}]"
    )]
    NoPolicyForSubject {
        /// Request namespace.
        namespace: String,
        /// Requester user name.
        user: String,
        /// Requester groups, comma separated.
        groups: String,
    },
    /// Policies name the requester but none selects the HostGroup.
    #[error(
        "host group {host_group} is not selected by any AccessPolicy for this requester ({policies})"
    )]
    HostGroupNotSelected {
        /// Target HostGroup.
        host_group: String,
        /// Policies that matched the subject.
        policies: String,
    },
    /// Policies select the HostGroup for the requester but none allows the login.
    #[error("login {login} is not allowed on host group {host_group} (allowed: {allowed})")]
    LoginNotAllowed {
        /// Requested login.
        login: String,
        /// Target HostGroup.
        host_group: String,
        /// Logins the matching policies allow.
        allowed: String,
    },
    /// Every policy that would govern the request wants a reason, and none was given.
    #[error("spec.reason is required by AccessPolicy {policy}")]
    ReasonRequired {
        /// The policies that would govern the request, comma separated.
        policy: String,
    },
    /// A duration the API server should have refused.
    #[error("{field}: {source}")]
    BadDuration {
        /// Which field.
        field: String,
        /// Parse error.
        source: duration::DurationError,
    },
}

/// What a request asks for, as far as policy matching cares.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Namespace of the request (policies and host groups are looked up here).
    pub namespace: &'a str,
    /// Who asked.
    pub requester: Option<&'a Requester>,
    /// Target HostGroup name.
    pub host_group: &'a str,
    /// Labels of the target HostGroup.
    pub host_group_labels: &'a BTreeMap<String, String>,
    /// Requested login.
    pub login: &'a str,
    /// Requested duration (`spec.duration`).
    pub duration: &'a str,
    /// Given reason, if any.
    pub reason: Option<&'a str>,
}

/// What the governing policy grants a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    /// The governing policy's name.
    pub policy: String,
    /// The access granted: the requested duration clamped to the policy and to 5m..24h.
    pub duration: Duration,
    /// Approvals needed before issuing (0 = issue at once).
    pub required_approvals: u32,
}

/// Find the policy that governs `ask` among `policies` (all in the request's namespace).
pub fn govern<'p>(
    policies: impl IntoIterator<Item = &'p AccessPolicy>,
    ask: &Ask<'_>,
) -> Result<(&'p AccessPolicy, Terms), Refusal> {
    let requester = ask.requester.ok_or(Refusal::NoRequester)?;
    let for_subject: Vec<&AccessPolicy> = policies
        .into_iter()
        .filter(|p| names_requester(p, ask.namespace, requester))
        .collect();
    if for_subject.is_empty() {
        return Err(Refusal::NoPolicyForSubject {
            namespace: ask.namespace.to_owned(),
            user: requester.username.clone(),
            groups: requester.groups.join(", "),
        });
    }
    let selecting: Vec<&AccessPolicy> = for_subject
        .iter()
        .copied()
        .filter(|p| selector_matches(&p.spec.host_selector, ask.host_group_labels))
        .collect();
    if selecting.is_empty() {
        return Err(Refusal::HostGroupNotSelected {
            host_group: ask.host_group.to_owned(),
            policies: names(&for_subject),
        });
    }
    let allowing: Vec<&AccessPolicy> = selecting
        .iter()
        .copied()
        .filter(|p| p.spec.logins.iter().any(|l| l == ask.login))
        .collect();
    if allowing.is_empty() {
        let mut allowed: Vec<&str> = selecting
            .iter()
            .flat_map(|p| p.spec.logins.iter().map(String::as_str))
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        return Err(Refusal::LoginNotAllowed {
            login: ask.login.to_owned(),
            host_group: ask.host_group.to_owned(),
            allowed: allowed.join(", "),
        });
    }
    // A policy that wants a reason cannot govern a request without one; another may.
    let has_reason = ask.reason.is_some_and(|r| !r.trim().is_empty());
    let (mut eligible, wanting_reason): (Vec<&AccessPolicy>, Vec<&AccessPolicy>) = allowing
        .into_iter()
        .partition(|p| has_reason || !p.spec.require_reason);
    if eligible.is_empty() {
        return Err(Refusal::ReasonRequired {
            policy: names(&wanting_reason),
        });
    }
    eligible.sort_by_key(|p| {
        (
            p.spec.approval.required,
            std::cmp::Reverse(duration::parse(&p.spec.max_duration).unwrap_or(Duration::ZERO)),
            p.name_any(),
        )
    });
    let policy = eligible[0];
    let requested = duration::parse(ask.duration).map_err(|source| Refusal::BadDuration {
        field: "spec.duration".to_owned(),
        source,
    })?;
    let max =
        duration::parse(&policy.spec.max_duration).map_err(|source| Refusal::BadDuration {
            field: format!("AccessPolicy {} spec.maxDuration", policy.name_any()),
            source,
        })?;
    Ok((
        policy,
        Terms {
            policy: policy.name_any(),
            duration: clamp_duration(requested, max),
            // The schema bounds this to 0..=5; anything else fails closed (never issued).
            required_approvals: u32::try_from(policy.spec.approval.required).unwrap_or(u32::MAX),
        },
    ))
}

/// Clamp a requested duration to the policy's maximum and to Gatehouse's 5m..24h.
pub fn clamp_duration(requested: Duration, policy_max: Duration) -> Duration {
    requested
        .min(policy_max)
        .clamp(duration::MIN_ACCESS, duration::MAX_ACCESS)
}

fn names(policies: &[&AccessPolicy]) -> String {
    policies
        .iter()
        .map(|p| p.name_any())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether one of the policy's subjects is the requester.
pub fn names_requester(policy: &AccessPolicy, namespace: &str, requester: &Requester) -> bool {
    policy.spec.subjects.iter().any(|s| match s.kind {
        SubjectKind::User => s.name == requester.username,
        SubjectKind::Group => requester.groups.contains(&s.name),
        SubjectKind::ServiceAccount => {
            let ns = s.namespace.as_deref().unwrap_or(namespace);
            requester.username == format!("system:serviceaccount:{ns}:{}", s.name)
        }
    })
}

/// Kubernetes label-selector semantics: every term must hold; `{}` selects everything; an
/// unknown operator selects nothing (fail closed).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_hold = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_hold = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_hold && expressions_hold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccessPolicySpec, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(
        name: &str,
        subject: Subject,
        selector: &[(&str, &str)],
        logins: &[&str],
    ) -> AccessPolicy {
        let spec: AccessPolicySpec = serde_json::from_value(serde_json::json!({
            "subjects": [subject],
            "hostSelector": {"matchLabels": labels(selector)},
            "logins": logins,
            "maxDuration": "2h",
            "approval": {"required": 1},
            "certificate": {"extensions": ["permit-pty"]},
            "recording": {"recordInput": false, "required": true}
        }))
        .unwrap();
        AccessPolicy::new(name, spec)
    }

    fn group(name: &str) -> Subject {
        Subject {
            kind: SubjectKind::Group,
            name: name.to_owned(),
            namespace: None,
        }
    }

    fn alice() -> Requester {
        Requester {
            username: "alice".into(),
            uid: None,
            groups: vec!["dev".into(), "system:authenticated".into()],
        }
    }

    fn ask<'a>(
        requester: &'a Requester,
        hg_labels: &'a BTreeMap<String, String>,
        login: &'a str,
    ) -> Ask<'a> {
        Ask {
            namespace: "team",
            requester: Some(requester),
            host_group: "prod-db",
            host_group_labels: hg_labels,
            login,
            duration: "30m",
            reason: Some("INC-1"),
        }
    }

    #[test]
    fn matches_by_group_selector_and_login() {
        let hg = labels(&[("env", "prod"), ("role", "db")]);
        let policies = [policy("db", group("dev"), &[("env", "prod")], &["ubuntu"])];
        let requester = alice();
        let (p, grant) = govern(&policies, &ask(&requester, &hg, "ubuntu")).unwrap();
        assert_eq!(p.name_any(), "db");
        assert_eq!(grant.duration, Duration::from_secs(1800));
        assert_eq!(grant.required_approvals, 1);
    }

    #[test]
    fn refusals_say_why() {
        let hg = labels(&[("env", "prod")]);
        let requester = alice();
        let other_group = [policy("ops", group("ops"), &[("env", "prod")], &["ubuntu"])];
        let refusal = govern(&other_group, &ask(&requester, &hg, "ubuntu")).err();
        assert_eq!(
            refusal.map(|r| r.to_string()).as_deref(),
            Some(
                "no AccessPolicy in namespace team has a subject matching user alice or groups [dev, system:authenticated]"
            )
        );
        let staging_only = [policy(
            "stg",
            group("dev"),
            &[("env", "staging")],
            &["ubuntu"],
        )];
        assert!(matches!(
            govern(&staging_only, &ask(&requester, &hg, "ubuntu")),
            Err(Refusal::HostGroupNotSelected { .. })
        ));
        let postgres_only = [policy(
            "pg",
            group("dev"),
            &[("env", "prod")],
            &["postgres", "ubuntu-ro"],
        )];
        assert_eq!(
            govern(&postgres_only, &ask(&requester, &hg, "root")).err(),
            Some(Refusal::LoginNotAllowed {
                login: "root".into(),
                host_group: "prod-db".into(),
                allowed: "postgres, ubuntu-ro".into()
            })
        );
        let mut no_requester = ask(&requester, &hg, "ubuntu");
        no_requester.requester = None;
        assert_eq!(
            govern(&postgres_only, &no_requester).err(),
            Some(Refusal::NoRequester)
        );
    }

    #[test]
    fn reason_is_enforced_when_the_policy_requires_it() {
        let hg = labels(&[("env", "prod")]);
        let requester = alice();
        let mut p = policy("db", group("dev"), &[("env", "prod")], &["ubuntu"]);
        p.spec.require_reason = true;
        let policies = [p];
        let mut a = ask(&requester, &hg, "ubuntu");
        a.reason = Some("  ");
        assert_eq!(
            govern(&policies, &a).err(),
            Some(Refusal::ReasonRequired {
                policy: "db".into()
            })
        );
        a.reason = Some("INC-7");
        assert!(govern(&policies, &a).is_ok());

        // Entitled under a laxer policy too: that one governs a request without a reason,
        // even though the reason-requiring one needs fewer approvals.
        let mut lax = policy("lax", group("dev"), &[("env", "prod")], &["ubuntu"]);
        lax.spec.approval.required = 2;
        let mut quick = policies[0].clone();
        quick.spec.approval.required = 0;
        let both = [quick, lax];
        a.reason = None;
        let (p, grant) = govern(&both, &a).unwrap();
        assert_eq!(
            (p.name_any().as_str(), grant.required_approvals),
            ("lax", 2)
        );
        a.reason = Some("INC-8");
        let (p, _) = govern(&both, &a).unwrap();
        assert_eq!(p.name_any(), "db");
    }

    #[test]
    fn several_matches_pick_fewest_approvals_then_longest_then_name() {
        let hg = labels(&[("env", "prod")]);
        let requester = alice();
        let mut strict = policy("a-strict", group("dev"), &[("env", "prod")], &["ubuntu"]);
        strict.spec.approval.required = 2;
        let mut short = policy("b-short", group("dev"), &[], &["ubuntu"]);
        short.spec.max_duration = "15m".into();
        let long = policy("c-long", group("dev"), &[], &["ubuntu"]);
        let long_twin = policy("d-long", group("dev"), &[], &["ubuntu"]);
        let policies = [strict, long_twin, short, long];
        let (p, _) = govern(&policies, &ask(&requester, &hg, "ubuntu")).unwrap();
        assert_eq!(p.name_any(), "c-long");
    }

    #[test]
    fn users_and_service_accounts_match_exactly() {
        let requester = Requester {
            username: "system:serviceaccount:ci:deployer".into(),
            uid: None,
            groups: vec![],
        };
        let sa = |ns: Option<&str>| Subject {
            kind: SubjectKind::ServiceAccount,
            name: "deployer".into(),
            namespace: ns.map(str::to_owned),
        };
        let p = |s| policy("p", s, &[], &["deploy"]);
        assert!(names_requester(&p(sa(None)), "ci", &requester));
        assert!(!names_requester(&p(sa(None)), "team", &requester));
        assert!(names_requester(&p(sa(Some("ci"))), "team", &requester));
        let user = Subject {
            kind: SubjectKind::User,
            name: "alice".into(),
            namespace: None,
        };
        assert!(names_requester(&p(user.clone()), "team", &alice()));
        assert!(!names_requester(&p(user), "team", &requester));
        // A group named like the user does not match the user.
        assert!(!names_requester(&p(group("alice")), "team", &alice()));
    }

    #[test]
    fn durations_are_clamped_to_policy_and_bounds() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(clamp_duration(h(8), h(2)), h(2));
        assert_eq!(
            clamp_duration(Duration::from_secs(600), h(2)),
            Duration::from_secs(600)
        );
        assert_eq!(
            clamp_duration(Duration::from_secs(60), h(2)),
            duration::MIN_ACCESS
        );
        assert_eq!(clamp_duration(h(30), h(48)), duration::MAX_ACCESS);
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let l = labels(&[("env", "prod"), ("role", "db")]);
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        };
        let sel = |exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_expressions: Some(exprs),
            match_labels: None,
        };
        assert!(
            selector_matches(&LabelSelector::default(), &l),
            "{{}} selects all"
        );
        assert!(selector_matches(
            &sel(vec![expr("env", "In", &["prod", "stg"])]),
            &l
        ));
        assert!(!selector_matches(
            &sel(vec![expr("env", "NotIn", &["prod"])]),
            &l
        ));
        assert!(selector_matches(
            &sel(vec![expr("team", "DoesNotExist", &[])]),
            &l
        ));
        assert!(selector_matches(
            &sel(vec![
                expr("role", "Exists", &[]),
                expr("env", "In", &["prod"])
            ]),
            &l
        ));
        assert!(
            !selector_matches(
                &sel(vec![
                    expr("role", "Exists", &[]),
                    expr("env", "In", &["stg"])
                ]),
                &l
            ),
            "AND"
        );
        assert!(
            !selector_matches(&sel(vec![expr("env", "Matches", &["prod"])]), &l),
            "unknown operator fails closed"
        );
    }
}
