//! The content of ConfigMap `gatehouse-ssh`: what every target host and every engineer needs
//! to trust Gatehouse. Pure: CA public keys and the proxy's host key in, ConfigMap data out.
//!
//! Proxied hosts trust only the upstream CA, Direct hosts the user CA and its KRL; both accept
//! only the principals published per host in their HostGroup's status ([`super::host_groups`])
//! through `AuthorizedPrincipalsFile`, and no authorized_keys at all, so a key planted through
//! a session cannot become a side door. The proxy's host key is published for known_hosts.

use std::collections::BTreeMap;

use gatehouse_crds::contract::{
    host_paths,
    published::{
        PROXY_ADDRESS, PROXY_HOST_KEY_ALIAS, PROXY_HOST_KEY_PUB, PROXY_KNOWN_HOSTS,
        SSHD_CONFIG_DIRECT, SSHD_CONFIG_PROXIED, UPSTREAM_CA_PUB, USER_CA_PUB,
    },
};

/// The sshd lines every host of a Proxied HostGroup needs.
pub fn sshd_config_proxied() -> String {
    format!(
        "# Hosts reached through the Gatehouse proxy: trust only the upstream CA ({UPSTREAM_CA_PUB}),\n\
         # accept only the principals of this host's HostGroup status.hosts[].authorizedPrincipals,\n\
         # and no authorized_keys.\n\
         TrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}/%u\nAuthorizedKeysFile none\n",
        host_paths::UPSTREAM_CA,
        host_paths::PRINCIPALS_DIR,
    )
}

/// The sshd lines every host of a Direct HostGroup needs.
pub fn sshd_config_direct() -> String {
    format!(
        "# Hosts of Direct HostGroups: trust the user CA ({USER_CA_PUB}) minus its KRL, accept only the\n\
         # principals of this host's HostGroup status.hosts[].authorizedPrincipals, and no authorized_keys.\n\
         TrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}/%u\nRevokedKeys {}\nAuthorizedKeysFile none\n",
        host_paths::USER_CA,
        host_paths::PRINCIPALS_DIR,
        host_paths::KRL
    )
}

/// The `gatehouse-ssh` ConfigMap data: CA keys, sshd lines, the proxy's host key and, when
/// configured, the proxy's public address (no key at all when it is not: clients say so).
pub fn ssh_data(
    user_ca: &str,
    upstream_ca: &str,
    proxy_host_key: &str,
    proxy_address: Option<&str>,
) -> BTreeMap<String, String> {
    let address = proxy_address.map(|a| (PROXY_ADDRESS, a.trim().to_owned()));
    [
        (USER_CA_PUB, format!("{user_ca}\n")),
        (UPSTREAM_CA_PUB, format!("{upstream_ca}\n")),
        (SSHD_CONFIG_PROXIED, sshd_config_proxied()),
        (SSHD_CONFIG_DIRECT, sshd_config_direct()),
        (PROXY_HOST_KEY_PUB, format!("{proxy_host_key}\n")),
        (
            PROXY_KNOWN_HOSTS,
            format!("{PROXY_HOST_KEY_ALIAS} {proxy_host_key}\n"),
        ),
    ]
    .into_iter()
    .chain(address)
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_trust_one_ca_accept_published_principals_and_no_authorized_keys() {
        let data = ssh_data(
            "ssh-ed25519 USER",
            "ssh-ed25519 UP",
            "ssh-ed25519 PROXY",
            None,
        );
        assert!(
            !data.contains_key(PROXY_ADDRESS),
            "no address unless configured"
        );
        let with = ssh_data("u", "p", "k", Some("gatehouse.example.com:2222"));
        assert_eq!(with[PROXY_ADDRESS], "gatehouse.example.com:2222");
        assert_eq!(data[USER_CA_PUB], "ssh-ed25519 USER\n");
        assert_eq!(data[UPSTREAM_CA_PUB], "ssh-ed25519 UP\n");
        assert_eq!(
            data[PROXY_KNOWN_HOSTS],
            "gatehouse-proxy ssh-ed25519 PROXY\n"
        );
        let proxied = &data[SSHD_CONFIG_PROXIED];
        let direct = &data[SSHD_CONFIG_DIRECT];
        for (config, ca) in [
            (
                proxied,
                "TrustedUserCAKeys /etc/ssh/gatehouse_upstream_ca.pub",
            ),
            (direct, "TrustedUserCAKeys /etc/ssh/gatehouse_user_ca.pub"),
        ] {
            assert!(config.contains(ca), "{config}");
            assert!(config.contains("AuthorizedPrincipalsFile /etc/ssh/gatehouse_principals/%u"));
            assert!(config.contains("\nAuthorizedKeysFile none\n"), "{config}");
        }
        assert!(direct.contains("RevokedKeys /etc/ssh/gatehouse_revoked.krl"));
        assert!(
            !proxied.contains("gatehouse_user_ca"),
            "proxied hosts never trust the user CA"
        );
    }
}
