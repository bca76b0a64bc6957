//! The names and formats Gatehouse's components agree on: what one writes and another reads.
//!
//! Data comes from nowhere (constants and pure formatting); it goes to every component that
//! must agree with another one: the operator writes Secrets, ConfigMaps, principals and key
//! ids that the proxy, the target hosts and the tests read back. Each contract is written here
//! once and imported everywhere, tests included.

/// Field managers (server-side apply) and the Events' reporting controllers.
pub mod managers {
    /// Everything the operator writes: request and HostGroup status, published ConfigMaps.
    pub const OPERATOR: &str = "gatehouse-operator";
    /// What the proxy writes: `status.sessions` of AccessRequests.
    pub const PROXY: &str = "gatehouse-proxy";
    /// What the approval bridge writes: `status.notifications` of AccessRequests.
    pub const BRIDGE: &str = "gatehouse-bridge";
}

/// The approval bridge's contracts: its identity mapping and its webhook signature.
pub mod bridge {
    /// ConfigMap (bridge namespace) mapping Slack users to Kubernetes identities.
    pub const IDENTITIES_CONFIGMAP: &str = "gatehouse-bridge-identities";
    /// Its data key: a JSON list of `{slackUser, email, username, groups}`.
    pub const IDENTITIES_KEY: &str = "identities.json";
    /// Header with `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>` on webhook POSTs.
    pub const SIGNATURE_HEADER: &str = "x-gatehouse-signature";
    /// Header with the Unix time (seconds) the signature covers.
    pub const TIMESTAMP_HEADER: &str = "x-gatehouse-timestamp";
    /// Header naming the event's id (`<request uid>/<stage>`), for receivers that de-duplicate.
    pub const EVENT_ID_HEADER: &str = "x-gatehouse-event-id";
    /// Annotation on a webhook key Secret: the namespaces (comma-separated, or `*`) whose
    /// policies may sign with it. Absent: none may (a key is never lent to another team).
    pub const WEBHOOK_NAMESPACES_ANNOTATION: &str = "gatehouse.dev/webhook-namespaces";
    /// The message annotation value prefix for decisions made from Slack.
    pub const SLACK_MESSAGE_PREFIX: &str = "via Slack";
}

/// Finalizer that turns deletion of an Issued request into a recorded revocation.
pub const REVOCATION_FINALIZER: &str = "gatehouse.dev/revocation";

/// Label the operator puts on the objects it creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Annotations on an AccessRequest.
pub mod annotations {
    /// Approve the request; the value is an optional message.
    pub const APPROVE: &str = "gatehouse.dev/approve";
    /// Deny the request; the value is the reason. Terminal.
    pub const DENY: &str = "gatehouse.dev/deny";
    /// Revoke the request (and close its sessions); the value is the reason. Terminal.
    pub const REVOKE: &str = "gatehouse.dev/revoke";
    /// The JSON list of sealed decision records; written by admission only.
    pub const DECISIONS: &str = "gatehouse.dev/decisions";
}

/// Secrets in the operator's namespace, and their data keys.
pub mod secrets {
    /// The user CA: signs engineers' certificates.
    pub const USER_CA: &str = "gatehouse-user-ca";
    /// The upstream CA: the proxy signs its per-session certificates with it.
    pub const UPSTREAM_CA: &str = "gatehouse-upstream-ca";
    /// Admission's seal key and webhook serving CA.
    pub const ADMISSION: &str = "gatehouse-admission";
    /// The proxy's SSH host key, shared by every proxy replica.
    pub const PROXY_HOST_KEY: &str = "gatehouse-proxy-host-key";
    /// Data key of a CA's OpenSSH private key.
    pub const CA_PRIVATE_KEY: &str = "ca";
    /// Data key of a CA's OpenSSH public key line.
    pub const CA_PUBLIC_KEY: &str = "ca.pub";
    /// Data key of the proxy host key's private half.
    pub const HOST_PRIVATE_KEY: &str = "ssh_host_ed25519_key";
    /// Data key of the proxy host key's public half.
    pub const HOST_PUBLIC_KEY: &str = "ssh_host_ed25519_key.pub";
}

/// ConfigMaps the operator publishes in its namespace, and their data keys.
pub mod published {
    /// CA public keys, sshd lines, principals files and the proxy's host key.
    pub const SSH_CONFIGMAP: &str = "gatehouse-ssh";
    /// Revoked certificates still inside their validity.
    pub const REVOCATIONS_CONFIGMAP: &str = "gatehouse-revocations";
    /// `gatehouse-ssh`: the user CA's public key line.
    pub const USER_CA_PUB: &str = "user_ca.pub";
    /// `gatehouse-ssh`: the upstream CA's public key line.
    pub const UPSTREAM_CA_PUB: &str = "upstream_ca.pub";
    /// `gatehouse-ssh`: sshd lines for hosts reached through the proxy.
    pub const SSHD_CONFIG_PROXIED: &str = "sshd_config.proxied";
    /// `gatehouse-ssh`: sshd lines for hosts of Direct HostGroups.
    pub const SSHD_CONFIG_DIRECT: &str = "sshd_config.direct";
    /// `gatehouse-ssh`: the proxy's host public key line.
    pub const PROXY_HOST_KEY_PUB: &str = "proxy_host_key.pub";
    /// `gatehouse-ssh`: a known_hosts line for the proxy under [`PROXY_HOST_KEY_ALIAS`].
    pub const PROXY_KNOWN_HOSTS: &str = "proxy_known_hosts";
    /// `gatehouse-ssh`: where engineers reach the proxy, `HOST` or `HOST:PORT` (chart value
    /// `proxy.publicAddress`); absent when not configured.
    pub const PROXY_ADDRESS: &str = "proxy_address";
    /// The proxy's SSH port when [`PROXY_ADDRESS`] names none.
    pub const PROXY_DEFAULT_PORT: u16 = 2222;
    /// Role (in the operator's namespace) that lets engineers read `gatehouse-ssh`.
    pub const SSH_READER_ROLE: &str = "gatehouse-ssh-reader";
    /// `gatehouse-revocations`: the list as JSON (for the proxy and people).
    pub const REVOKED_JSON: &str = "revoked.json";
    /// `gatehouse-revocations` (binaryData): the list as an OpenSSH KRL (for `RevokedKeys`).
    pub const REVOKED_KRL: &str = "revoked.krl";
    /// The host key alias engineers' `ssh_config` uses for the proxy (`HostKeyAlias`), so one
    /// known_hosts line works whatever address the proxy is reached at.
    pub const PROXY_HOST_KEY_ALIAS: &str = "gatehouse-proxy";
}

/// Where the published files live on a target host (the sshd lines name these paths).
pub mod host_paths {
    /// The user CA's public key (Direct hosts).
    pub const USER_CA: &str = "/etc/ssh/gatehouse_user_ca.pub";
    /// The upstream CA's public key (proxied hosts).
    pub const UPSTREAM_CA: &str = "/etc/ssh/gatehouse_upstream_ca.pub";
    /// Directory of AuthorizedPrincipalsFile contents, one file per login.
    pub const PRINCIPALS_DIR: &str = "/etc/ssh/gatehouse_principals";
    /// The KRL for `RevokedKeys`.
    pub const KRL: &str = "/etc/ssh/gatehouse_revoked.krl";
}

/// Certificate principals and key ids: who a certificate is for, and how logs name it.
pub mod identity {
    /// The longest principal Gatehouse writes (status and schema bound): with every name at
    /// its longest (namespace 63, HostGroup 253, host 63, request 253, login 32 bytes) the
    /// longest format, the upstream principal, is 433 bytes.
    pub const MAX_PRINCIPAL_BYTES: usize = 512;
    /// The longest key id Gatehouse writes (user names are at most 253 bytes).
    pub const MAX_KEY_ID_BYTES: usize = 1024;

    /// Prefix of the principal only the Gatehouse proxy accepts.
    const PROXIED_PREFIX: &str = "gatehouse-proxy:";

    /// The principal of a proxied request's certificate: `gatehouse-proxy:<ns>/<request>`.
    /// Targets never trust the user CA, so it opens nothing but the proxy.
    pub fn proxied_principal(namespace: &str, request: &str) -> String {
        format!("{PROXIED_PREFIX}{namespace}/{request}")
    }

    /// The namespace and request a proxied principal names, if `principal` is one.
    pub fn parse_proxied_principal(principal: &str) -> Option<(&str, &str)> {
        principal.strip_prefix(PROXIED_PREFIX)?.split_once('/')
    }

    /// The principal of a Direct request's certificate for any host of its HostGroup:
    /// `gatehouse:<ns>/<host_group>:<login>`.
    pub fn direct_principal(namespace: &str, host_group: &str, login: &str) -> String {
        format!("gatehouse:{namespace}/{host_group}:{login}")
    }

    /// The principal of a Direct request's certificate for one host (`spec.target.host`):
    /// `gatehouse:<ns>/<host_group>/<host>:<login>`.
    pub fn direct_host_principal(
        namespace: &str,
        host_group: &str,
        host: &str,
        login: &str,
    ) -> String {
        format!("gatehouse:{namespace}/{host_group}/{host}:{login}")
    }

    /// The principal of the proxy's one-minute upstream certificate for one session:
    /// `gatehouse-upstream:<ns>/<host_group>/<host>:<login>`. It names the namespace, the
    /// HostGroup, the host and the login, so a HostGroup in another namespace that points at
    /// this host opens nothing here.
    pub fn upstream_principal(
        namespace: &str,
        host_group: &str,
        host: &str,
        login: &str,
    ) -> String {
        format!("gatehouse-upstream:{namespace}/{host_group}/{host}:{login}")
    }

    /// What a host of HostGroup `namespace/host_group` accepts for `login`: the lines of its
    /// `AuthorizedPrincipalsFile` for that login. Proxied hosts (trusting only the upstream CA)
    /// accept the proxy's certificate for themselves; Direct hosts (trusting the user CA) accept
    /// engineers' certificates for the whole group or for themselves. Never the bare login.
    pub fn authorized_principals(
        mode: crate::HostGroupMode,
        namespace: &str,
        host_group: &str,
        host: &str,
        login: &str,
    ) -> Vec<String> {
        match mode {
            crate::HostGroupMode::Proxied => {
                vec![upstream_principal(namespace, host_group, host, login)]
            }
            crate::HostGroupMode::Direct => vec![
                direct_principal(namespace, host_group, login),
                direct_host_principal(namespace, host_group, host, login),
            ],
        }
    }

    /// The principals of an engineer's certificate for a request. Proxied: one identity only
    /// the Gatehouse proxy accepts (targets never trust the user CA). Direct: the HostGroup and
    /// login, narrowed to the one host when the request names one (`spec.target.host`).
    pub fn request_principals(
        mode: crate::HostGroupMode,
        namespace: &str,
        request: &str,
        host_group: &str,
        host: Option<&str>,
        login: &str,
    ) -> Vec<String> {
        match (mode, host) {
            (crate::HostGroupMode::Proxied, _) => vec![proxied_principal(namespace, request)],
            (crate::HostGroupMode::Direct, None) => {
                vec![direct_principal(namespace, host_group, login)]
            }
            (crate::HostGroupMode::Direct, Some(host)) => {
                vec![direct_host_principal(namespace, host_group, host, login)]
            }
        }
    }

    /// The key id of an engineer's certificate: names the request and the human, so sshd's log
    /// line attributes the session.
    pub fn user_key_id(namespace: &str, name: &str, uid: &str, requester: &str) -> String {
        format!("gatehouse:{namespace}/{name} uid={uid} requester={requester}")
    }

    /// The key id of the proxy's per-session upstream certificate, which the target's auth
    /// log shows.
    pub fn upstream_key_id(
        namespace: &str,
        name: &str,
        requester: &str,
        connection: &str,
    ) -> String {
        format!(
            "{} connection={connection}",
            upstream_key_id_prefix(namespace, name, requester)
        )
    }

    /// What every upstream key id of one request and requester starts with.
    pub fn upstream_key_id_prefix(namespace: &str, name: &str, requester: &str) -> String {
        format!("gatehouse:{namespace}/{name} requester={requester} via=gatehouse-proxy")
    }

    /// OpenSSH critical option: the only command the certificate may run.
    pub const FORCE_COMMAND: &str = "force-command";
    /// OpenSSH critical option: the addresses the certificate may be used from.
    pub const SOURCE_ADDRESS: &str = "source-address";
}

#[cfg(test)]
mod tests {
    use super::identity::*;

    #[test]
    fn proxied_principal_round_trips() {
        let principal = proxied_principal("team", "r1");
        assert_eq!(principal, "gatehouse-proxy:team/r1");
        assert_eq!(parse_proxied_principal(&principal), Some(("team", "r1")));
        assert_eq!(parse_proxied_principal("gatehouse:team/db:ubuntu"), None);
        assert_eq!(parse_proxied_principal("gatehouse-proxy:no-slash"), None);
    }

    #[test]
    fn key_ids_name_the_request_and_the_human() {
        assert_eq!(
            user_key_id("team", "r1", "u-1", "alice"),
            "gatehouse:team/r1 uid=u-1 requester=alice"
        );
        assert_eq!(
            upstream_key_id("team", "r1", "alice", "c0"),
            "gatehouse:team/r1 requester=alice via=gatehouse-proxy connection=c0"
        );
        assert_eq!(
            direct_principal("team", "db", "ubuntu"),
            "gatehouse:team/db:ubuntu"
        );
    }

    #[test]
    fn the_longest_names_fit_the_status_bounds() {
        let (ns, group, host, request, login, user) = (
            "n".repeat(63),
            "g".repeat(253),
            "h".repeat(63),
            "r".repeat(253),
            "l".repeat(32),
            "u".repeat(253),
        );
        let principals = [
            proxied_principal(&ns, &request),
            direct_principal(&ns, &group, &login),
            direct_host_principal(&ns, &group, &host, &login),
            upstream_principal(&ns, &group, &host, &login),
        ];
        for principal in principals {
            assert!(
                principal.len() <= MAX_PRINCIPAL_BYTES,
                "{}",
                principal.len()
            );
        }
        let uid = "0".repeat(36);
        assert!(user_key_id(&ns, &request, &uid, &user).len() <= MAX_KEY_ID_BYTES);
        assert!(upstream_key_id(&ns, &request, &user, &"c".repeat(16)).len() <= MAX_KEY_ID_BYTES);
    }

    #[test]
    fn hosts_accept_principals_bound_to_their_namespace_group_host_and_login() {
        use crate::HostGroupMode::{Direct, Proxied};
        assert_eq!(
            authorized_principals(Proxied, "team", "db", "db1", "ubuntu"),
            ["gatehouse-upstream:team/db/db1:ubuntu"]
        );
        assert_eq!(
            authorized_principals(Direct, "team", "db", "db1", "ubuntu"),
            ["gatehouse:team/db:ubuntu", "gatehouse:team/db/db1:ubuntu"]
        );
        // Nothing a host accepts is the bare login, or names another namespace or host.
        for line in authorized_principals(Proxied, "a", "db", "db1", "ubuntu")
            .into_iter()
            .chain(authorized_principals(Direct, "a", "db", "db1", "ubuntu"))
        {
            assert_ne!(line, "ubuntu");
            assert!(line.contains("a/db"), "{line}");
            assert!(!authorized_principals(Direct, "b", "db", "db1", "ubuntu").contains(&line));
            assert!(
                !authorized_principals(Direct, "a", "db", "db2", "ubuntu")
                    .iter()
                    .any(|p| p.contains("db1"))
            );
        }
    }
}
