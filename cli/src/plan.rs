//! What a `request` would ask for, decided before anything is created. Pure: the HostGroups
//! and AccessPolicies the user can see and who the user is come in; the target, login and the
//! governing policy's terms go out, or one error naming the problem. The operator decides
//! again with the same rules (`gatehouse_crds::policy::govern`); checking here first means bad
//! input creates nothing.

use std::time::Duration;

use gatehouse_crds::{
    AccessPolicy, HostGroup, Requester, duration,
    policy::{self, Ask, Refusal},
};
use kube::ResourceExt;

use crate::error::{Error, Result};

/// Where a request goes: a HostGroup and maybe one host of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The HostGroup.
    pub host_group: String,
    /// One host of it, if named.
    pub host: Option<String>,
}

impl Target {
    /// `GROUP/HOST` or `GROUP`.
    pub fn display(&self) -> String {
        match &self.host {
            Some(host) => format!("{}/{host}", self.host_group),
            None => self.host_group.clone(),
        }
    }
}

/// Find `HOST`, `GROUP/HOST` or `GROUP` among `groups` (all in `namespace`). A bare name is a
/// host first (it must be in exactly one group), then a group.
pub fn resolve(groups: &[HostGroup], namespace: &str, arg: &str) -> Result<Target> {
    let unknown = || Error::UnknownHost {
        host: arg.to_owned(),
        namespace: namespace.to_owned(),
    };
    if let Some((group, host)) = arg.split_once('/') {
        let found = groups
            .iter()
            .find(|g| g.name_any() == group)
            .is_some_and(|g| g.spec.hosts.iter().any(|h| h.name == host));
        return if found {
            Ok(Target {
                host_group: group.to_owned(),
                host: Some(host.to_owned()),
            })
        } else {
            Err(unknown())
        };
    }
    let mut holding: Vec<String> = groups
        .iter()
        .filter(|g| g.spec.hosts.iter().any(|h| h.name == arg))
        .map(|g| g.name_any())
        .collect();
    holding.sort();
    match holding.as_slice() {
        [one] => Ok(Target {
            host_group: one.clone(),
            host: Some(arg.to_owned()),
        }),
        [] if groups.iter().any(|g| g.name_any() == arg) => Ok(Target {
            host_group: arg.to_owned(),
            host: None,
        }),
        [] => Err(unknown()),
        many => Err(Error::AmbiguousHost {
            host: arg.to_owned(),
            groups: many.join(", "),
        }),
    }
}

/// What the user asks for besides the target.
#[derive(Debug, Clone)]
pub struct Wish<'a> {
    /// `--login`, if given.
    pub login: Option<&'a str>,
    /// `--for`.
    pub duration: &'a str,
    /// `--reason`, if given.
    pub reason: Option<&'a str>,
}

/// The request to create and what governs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The login.
    pub login: String,
    /// The governing policy.
    pub policy: String,
    /// Approvals it needs.
    pub required_approvals: u32,
    /// The duration that will be granted.
    pub duration: Duration,
}

/// The logins policies naming `requester` allow on a group with these labels.
pub fn allowed_logins(
    policies: &[AccessPolicy],
    namespace: &str,
    requester: &Requester,
    group: &HostGroup,
) -> Vec<String> {
    let labels = group.labels().clone();
    let mut logins: Vec<String> = policies
        .iter()
        .filter(|p| policy::names_requester(p, namespace, requester))
        .filter(|p| policy::selector_matches(&p.spec.host_selector, &labels))
        .flat_map(|p| p.spec.logins.iter().cloned())
        .collect();
    logins.sort();
    logins.dedup();
    logins
}

/// Decide the login and the governing policy for `wish` on `target`, or say why not.
pub fn plan(
    groups: &[HostGroup],
    policies: &[AccessPolicy],
    namespace: &str,
    requester: &Requester,
    target: &Target,
    wish: &Wish<'_>,
) -> Result<Plan> {
    let group = groups
        .iter()
        .find(|g| g.name_any() == target.host_group)
        .ok_or_else(|| Error::UnknownHost {
            host: target.display(),
            namespace: namespace.to_owned(),
        })?;
    let requested = duration::parse(wish.duration)
        .map_err(|e| Error::BadDuration(wish.duration.to_owned(), e.to_string()))?;
    if !(duration::MIN_ACCESS..=duration::MAX_ACCESS).contains(&requested) {
        return Err(Error::BadDuration(
            wish.duration.to_owned(),
            "must be from 5m to 24h".to_owned(),
        ));
    }
    let login = match wish.login {
        Some(login) => login.to_owned(),
        None => {
            let allowed = allowed_logins(policies, namespace, requester, group);
            match allowed.as_slice() {
                [one] => one.clone(),
                // No login at all: let the policy check below say what is missing.
                [] => String::new(),
                many => {
                    return Err(Error::LoginNeeded {
                        target: target.display(),
                        allowed: many.join(", "),
                    });
                }
            }
        }
    };
    let labels = group.labels().clone();
    let ask = Ask {
        namespace,
        requester: Some(requester),
        host_group: &target.host_group,
        host_group_labels: &labels,
        login: &login,
        duration: wish.duration,
        reason: wish.reason,
    };
    let (governing, terms) = policy::govern(policies, &ask).map_err(|refusal| match refusal {
        Refusal::ReasonRequired { policy } => Error::ReasonRequired(policy),
        Refusal::LoginNotAllowed { .. } => {
            Error::NotGranted(format!("{refusal}: pass --login with one of those"))
        }
        other => Error::NotGranted(format!(
            "{other}; `kubectl gatehouse hosts` lists what you can request"
        )),
    })?;
    let max = duration::parse(&governing.spec.max_duration).unwrap_or(Duration::ZERO);
    if requested > max {
        return Err(Error::DurationOverMax {
            requested: wish.duration.to_owned(),
            max: governing.spec.max_duration.clone(),
            policy: terms.policy,
        });
    }
    Ok(Plan {
        login,
        policy: terms.policy,
        required_approvals: terms.required_approvals,
        duration: terms.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(name: &str, hosts: &[&str]) -> HostGroup {
        let hosts: Vec<_> = hosts
            .iter()
            .map(|h| json!({"name": h, "address": "10.0.0.1", "hostKeys": ["ssh-ed25519 AAAA"]}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "gatehouse.dev/v1alpha1", "kind": "HostGroup",
            "metadata": {"name": name, "namespace": "team", "labels": {"env": "prod"}},
            "spec": {"hosts": hosts},
        }))
        .unwrap()
    }

    fn policy(name: &str, logins: &[&str], max: &str, reason: bool) -> AccessPolicy {
        serde_json::from_value(json!({
            "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"subjects": [{"kind": "Group", "name": "dev"}],
                     "hostSelector": {"matchLabels": {"env": "prod"}},
                     "logins": logins, "maxDuration": max, "requireReason": reason,
                     "approval": {"required": 1}},
        }))
        .unwrap()
    }

    fn alice() -> Requester {
        Requester {
            username: "alice".into(),
            uid: None,
            groups: vec!["dev".into()],
        }
    }

    #[test]
    fn resolves_hosts_groups_and_says_what_is_wrong() {
        let groups = [
            group("db", &["db1", "shared"]),
            group("web", &["web1", "shared"]),
        ];
        let t = |g: &str, h: Option<&str>| Target {
            host_group: g.into(),
            host: h.map(Into::into),
        };
        assert_eq!(
            resolve(&groups, "team", "db1").unwrap(),
            t("db", Some("db1"))
        );
        assert_eq!(
            resolve(&groups, "team", "web/shared").unwrap(),
            t("web", Some("shared"))
        );
        assert_eq!(resolve(&groups, "team", "db").unwrap(), t("db", None));
        let cases = [
            (
                "nope",
                "unknown host nope: it is in no HostGroup you can see in namespace team",
            ),
            ("db/web1", "unknown host db/web1"),
            (
                "shared",
                "ambiguous host shared: it is in HostGroups db, web; name one as GROUP/shared",
            ),
        ];
        for (arg, message) in cases {
            let error = resolve(&groups, "team", arg).unwrap_err().to_string();
            assert!(error.starts_with(message), "{arg}: {error}");
        }
    }

    #[test]
    fn plans_or_refuses_before_anything_is_created() {
        let groups = [group("db", &["db1"])];
        let target = Target {
            host_group: "db".into(),
            host: Some("db1".into()),
        };
        let one = [policy("oncall", &["ubuntu"], "2h", false)];
        let two_logins = [policy("oncall", &["ubuntu", "postgres"], "2h", false)];
        let reasoned = [policy("strict", &["ubuntu"], "2h", true)];
        let wish = |login, duration, reason| Wish {
            login,
            duration,
            reason,
        };
        let ok = plan(
            &groups,
            &one,
            "team",
            &alice(),
            &target,
            &wish(None, "30m", None),
        )
        .unwrap();
        assert_eq!(
            (ok.login.as_str(), ok.policy.as_str(), ok.required_approvals),
            ("ubuntu", "oncall", 1)
        );
        let cases: [(&[AccessPolicy], Wish<'_>, &str); 6] = [
            (
                &two_logins,
                wish(None, "30m", None),
                "several logins are allowed on db/db1 (postgres, ubuntu): pass --login",
            ),
            (
                &one,
                wish(Some("root"), "30m", None),
                "login root is not allowed on host group db (allowed: ubuntu)",
            ),
            (
                &one,
                wish(None, "3h", None),
                "duration 3h is over the maximum 2h of AccessPolicy oncall",
            ),
            (
                &one,
                wish(None, "25h", None),
                "--for 25h: must be from 5m to 24h",
            ),
            (
                &reasoned,
                wish(None, "30m", None),
                "AccessPolicy strict requires a reason: pass --reason",
            ),
            (
                &[],
                wish(None, "30m", None),
                "no AccessPolicy in namespace team has a subject matching user alice",
            ),
        ];
        for (policies, wish, message) in cases {
            let error = plan(&groups, policies, "team", &alice(), &target, &wish)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(message), "{message}: {error}");
        }
        let with_reason = plan(
            &groups,
            &reasoned,
            "team",
            &alice(),
            &target,
            &wish(None, "1h", Some("INC-1")),
        );
        assert_eq!(with_reason.unwrap().policy, "strict");
    }
}
