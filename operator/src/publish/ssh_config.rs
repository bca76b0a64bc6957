//! The content of ConfigMap `gatehouse-ssh`: what target hosts and engineers need to trust
//! Gatehouse. Pure: CA public keys, HostGroups and AccessPolicies in, ConfigMap data out.
//!
//! Proxied hosts trust only the upstream CA; Direct hosts trust the user CA with an
//! AuthorizedPrincipalsFile per login (one key per Direct HostGroup and login) and a KRL; the
//! proxy's host key is published for engineers' known_hosts.

use std::collections::BTreeMap;

use gatehouse_crds::{
    AccessPolicy, HostGroup, HostGroupMode,
    contract::{
        host_paths, identity,
        published::{
            PROXY_HOST_KEY_ALIAS, PROXY_HOST_KEY_PUB, PROXY_KNOWN_HOSTS, SSHD_CONFIG_DIRECT,
            SSHD_CONFIG_PROXIED, UPSTREAM_CA_PUB, USER_CA_PUB, principals_key,
        },
    },
};
use kube::ResourceExt;

use crate::policy::selector_matches;

/// The `gatehouse-ssh` ConfigMap data.
pub fn ssh_data(
    user_ca: &str,
    upstream_ca: &str,
    host_groups: &[HostGroup],
    policies: &[AccessPolicy],
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert(USER_CA_PUB.to_owned(), format!("{user_ca}\n"));
    data.insert(UPSTREAM_CA_PUB.to_owned(), format!("{upstream_ca}\n"));
    data.insert(
        SSHD_CONFIG_PROXIED.to_owned(),
        format!(
            "# Hosts reached through the Gatehouse proxy: trust only the upstream CA ({UPSTREAM_CA_PUB})\nTrustedUserCAKeys {}\n",
            host_paths::UPSTREAM_CA
        ),
    );
    data.insert(
        SSHD_CONFIG_DIRECT.to_owned(),
        format!(
            "# Hosts of direct HostGroups: trust the user CA, accept only principals published for this group\n\
             TrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}/%u\nRevokedKeys {}\n",
            host_paths::USER_CA,
            host_paths::PRINCIPALS_DIR,
            host_paths::KRL
        ),
    );
    for group in host_groups
        .iter()
        .filter(|g| g.spec.mode == HostGroupMode::Direct)
    {
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
        for login in logins {
            data.insert(
                principals_key(&namespace, &name, login),
                format!("{}\n", identity::direct_principal(&namespace, &name, login)),
            );
        }
    }
    data
}

/// The proxy host key, as a public key and as a known_hosts line for [`PROXY_HOST_KEY_ALIAS`].
pub fn proxy_host_key_data(line: &str) -> BTreeMap<String, String> {
    [
        (PROXY_HOST_KEY_PUB.to_owned(), format!("{line}\n")),
        (
            PROXY_KNOWN_HOSTS.to_owned(),
            format!("{PROXY_HOST_KEY_ALIAS} {line}\n"),
        ),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::{AccessPolicySpec, HostGroupSpec};
    use serde_json::json;

    fn group(name: &str, mode: HostGroupMode, tier: &str) -> HostGroup {
        let mut g = HostGroup::new(
            name,
            HostGroupSpec {
                mode,
                hosts: Vec::new(),
                host_ca_keys: Vec::new(),
            },
        );
        g.metadata.namespace = Some("team".into());
        g.metadata.labels = Some([("tier".to_owned(), tier.to_owned())].into());
        g
    }

    fn policy(name: &str, tier: &str, logins: &[&str]) -> AccessPolicy {
        let spec: AccessPolicySpec = serde_json::from_value(json!({
            "subjects": [{"kind": "Group", "name": "dev"}],
            "hostSelector": {"matchLabels": {"tier": tier}},
            "logins": logins,
        }))
        .unwrap();
        let mut p = AccessPolicy::new(name, spec);
        p.metadata.namespace = Some("team".into());
        p
    }

    #[test]
    fn principals_are_published_per_direct_group_and_login() {
        let groups = [
            group("db", HostGroupMode::Direct, "db"),
            group("web", HostGroupMode::Proxied, "web"),
        ];
        let policies = [
            policy("a", "db", &["postgres", "ubuntu"]),
            policy("b", "db", &["ubuntu"]),
            policy("c", "web", &["www"]),
        ];
        let data = ssh_data("ssh-ed25519 USER", "ssh-ed25519 UP", &groups, &policies);
        let keys: Vec<_> = data
            .keys()
            .filter(|k| k.starts_with("principals."))
            .collect();
        assert_eq!(
            keys,
            ["principals.team.db.postgres", "principals.team.db.ubuntu"]
        );
        assert_eq!(
            data["principals.team.db.ubuntu"],
            "gatehouse:team/db:ubuntu\n"
        );
        assert_eq!(data["user_ca.pub"], "ssh-ed25519 USER\n");
        assert!(
            data["sshd_config.direct"]
                .contains("AuthorizedPrincipalsFile /etc/ssh/gatehouse_principals/%u")
        );
        assert!(
            data["sshd_config.proxied"]
                .contains("TrustedUserCAKeys /etc/ssh/gatehouse_upstream_ca.pub")
        );
    }
}
