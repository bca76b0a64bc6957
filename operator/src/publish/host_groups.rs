//! Each HostGroup's status: host count, observed generation, a Ready condition, and per host
//! the AuthorizedPrincipalsFile content for every login the namespace's policies allow there.
//!
//! Data comes from the HostGroup and the AccessPolicies of its namespace (reflector stores); it
//! goes out as the HostGroup's status (server-side apply), which the hosts' administrators copy
//! to `/etc/ssh/gatehouse_principals/<login>`. [`status`] is pure; [`write_status`] does the I/O.

use gatehouse_crds::{
    AccessPolicy, HostGroup, HostGroupStatus, HostStatus,
    conditions::{self, set_condition},
    contract::{identity, managers},
    policy::selector_matches,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::error::{Error, Result};

/// The status `group` should have, given the policies of every namespace (only its own count).
pub fn status(group: &HostGroup, policies: &[AccessPolicy], now: &Time) -> HostGroupStatus {
    let previous = group.status.clone().unwrap_or_default();
    let namespace = group.namespace().unwrap_or_default();
    let name = group.name_any();
    let mut logins: Vec<&str> = policies
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|p| selector_matches(&p.spec.host_selector, group.labels()))
        .flat_map(|p| p.spec.logins.iter().map(String::as_str))
        .collect();
    logins.sort_unstable();
    logins.dedup();
    let hosts = group
        .spec
        .hosts
        .iter()
        .map(|host| HostStatus {
            name: host.name.clone(),
            authorized_principals: logins
                .iter()
                .map(|login| {
                    let lines = identity::authorized_principals(
                        group.spec.mode,
                        &namespace,
                        &name,
                        &host.name,
                        login,
                    );
                    ((*login).to_owned(), format!("{}\n", lines.join("\n")))
                })
                .collect(),
        })
        .collect();
    let count = i32::try_from(group.spec.hosts.len()).unwrap_or(i32::MAX);
    let mut next = HostGroupStatus {
        conditions: previous.conditions,
        host_count: Some(count),
        observed_generation: group.metadata.generation,
        hosts,
    };
    let message = format!(
        "{count} host(s), mode {:?}, {} login(s) allowed by policy; each host's AuthorizedPrincipalsFile contents are in status.hosts",
        group.spec.mode,
        logins.len()
    );
    set_condition(
        &mut next.conditions,
        conditions::READY,
        true,
        "Valid",
        &message,
        now,
        group.metadata.generation,
    );
    next
}

/// Write `next` as `group`'s status unless it already is.
pub async fn write_status(client: &Client, group: &HostGroup, next: HostGroupStatus) -> Result<()> {
    if group.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let api: Api<HostGroup> =
        Api::namespaced(client.clone(), &group.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": HostGroup::api_version(&()), "kind": HostGroup::kind(&()), "status": next});
    api.patch_status(
        &group.name_any(),
        &PatchParams::apply(managers::OPERATOR).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        what: format!(
            "HostGroup {}/{}",
            group.namespace().unwrap_or_default(),
            group.name_any()
        ),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::{AccessPolicySpec, HostGroupMode, HostGroupSpec};
    use serde_json::json;

    fn group(name: &str, mode: HostGroupMode, tier: &str) -> HostGroup {
        let spec: HostGroupSpec = serde_json::from_value(json!({
            "mode": mode,
            "hosts": [
                {"name": "h1", "address": "10.0.0.1", "hostKeys": ["ssh-ed25519 AAAA"]},
                {"name": "h2", "address": "10.0.0.2", "hostKeys": ["ssh-ed25519 AAAA"]},
            ],
        }))
        .unwrap();
        let mut g = HostGroup::new(name, spec);
        g.metadata.namespace = Some("team".into());
        g.metadata.generation = Some(3);
        g.metadata.labels = Some([("tier".to_owned(), tier.to_owned())].into());
        g
    }

    fn policy(namespace: &str, tier: &str, logins: &[&str]) -> AccessPolicy {
        let spec: AccessPolicySpec = serde_json::from_value(json!({
            "subjects": [{"kind": "Group", "name": "dev"}],
            "hostSelector": {"matchLabels": {"tier": tier}},
            "logins": logins,
        }))
        .unwrap();
        let mut p = AccessPolicy::new("p", spec);
        p.metadata.namespace = Some(namespace.into());
        p
    }

    #[test]
    fn each_host_gets_its_own_principals_for_each_login_its_namespace_allows() {
        let now = Time(jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let policies = [
            policy("team", "db", &["postgres", "ubuntu"]),
            policy("team", "db", &["ubuntu"]),
            policy("team", "web", &["www"]),
            // Another namespace's policy never opens this namespace's hosts.
            policy("other", "db", &["root"]),
        ];
        let proxied = status(&group("db", HostGroupMode::Proxied, "db"), &policies, &now);
        assert_eq!(proxied.host_count, Some(2));
        assert_eq!(proxied.observed_generation, Some(3));
        let h1 = &proxied.hosts[0];
        assert_eq!(h1.name, "h1");
        let logins: Vec<_> = h1.authorized_principals.keys().collect();
        assert_eq!(logins, ["postgres", "ubuntu"]);
        assert_eq!(
            h1.authorized_principals["ubuntu"],
            "gatehouse-upstream:team/db/h1:ubuntu\n"
        );
        assert_eq!(
            proxied.hosts[1].authorized_principals["ubuntu"],
            "gatehouse-upstream:team/db/h2:ubuntu\n"
        );

        let direct = status(&group("db", HostGroupMode::Direct, "db"), &policies, &now);
        assert_eq!(
            direct.hosts[1].authorized_principals["postgres"],
            "gatehouse:team/db:postgres\ngatehouse:team/db/h2:postgres\n"
        );

        // Computing it again from the written status changes nothing (no needless writes).
        let mut written = group("db", HostGroupMode::Proxied, "db");
        written.status = Some(proxied.clone());
        let later = Time(jiff::Timestamp::from_second(1_800_000_100).unwrap());
        assert_eq!(status(&written, &policies, &later), proxied);
    }
}
