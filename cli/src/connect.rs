//! `ssh`, `scp`, `sftp` and `config`: find the user's Issued grants, write their certificates
//! and an ssh_config naming the proxy's published address and pinned host key, then run the
//! real OpenSSH client with it. The config text is a pure function ([`ssh_config`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use gatehouse_crds::{AccessRequest, Phase, contract::published};
use kube::ResourceExt;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
    keys::{self, Key},
    plan::{self, Target},
    request::{self, Ask},
};

/// Where the proxy is: host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddress {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// SSH port.
    pub port: u16,
}

/// Parse `HOST`, `HOST:PORT` or `[V6]:PORT`.
pub fn parse_address(text: &str) -> Option<ProxyAddress> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let default = published::PROXY_DEFAULT_PORT;
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        return Some(ProxyAddress {
            host: host.to_owned(),
            port,
        });
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some(ProxyAddress {
            host: host.to_owned(),
            port: port.parse().ok()?,
        }),
        Some(_) => Some(ProxyAddress {
            host: text.to_owned(),
            port: default,
        }),
        None => Some(ProxyAddress {
            host: text.to_owned(),
            port: default,
        }),
    }
}

/// One usable grant: a host alias, the login, the key and certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The `Host` alias (the host's name in its HostGroup).
    pub alias: String,
    /// Unix login.
    pub login: String,
    /// The host's name as the proxy wants it after `LOGIN@`.
    pub host: String,
    /// Private key path (never read).
    pub identity: PathBuf,
    /// Certificate path.
    pub certificate: PathBuf,
    /// The request it comes from (a comment).
    pub request: String,
}

/// The ciphers the engineer's `ssh` offers the proxy, best first. OpenSSH's own first choice
/// is chacha20-poly1305 and the server takes the client's first choice it supports, so only
/// the client can make AES-GCM win: with AES-NI it costs the client, the proxy and (on the
/// upstream leg) the target about 20 % less CPU per byte (docs/benchmarks.md). chacha20
/// stays as the fallback (and is the better choice on a CPU without AES instructions).
pub const PROXY_CIPHERS: &str =
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com";

/// The ssh_config text for `entries` through `proxy`, pinned by `known_hosts`.
pub fn ssh_config(entries: &[Entry], proxy: &ProxyAddress, known_hosts: &Path) -> String {
    let mut out = String::from(
        "# Written by kubectl gatehouse: Issued Gatehouse grants, through the proxy.\n",
    );
    for e in entries {
        out.push_str(&format!(
            "\n# AccessRequest {}\nHost {}\n  HostName {}\n  Port {}\n  User {}@{}\n  IdentityFile \"{}\"\n  CertificateFile \"{}\"\n  IdentitiesOnly yes\n  HostKeyAlias {}\n  UserKnownHostsFile \"{}\"\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  IdentityAgent none\n  PreferredAuthentications publickey\n  Ciphers {}\n",
            e.request,
            e.alias,
            proxy.host,
            proxy.port,
            e.login,
            e.host,
            e.identity.display(),
            e.certificate.display(),
            published::PROXY_HOST_KEY_ALIAS,
            known_hosts.display(),
            PROXY_CIPHERS,
        ));
    }
    out
}

/// Whether `request` (of `user`) is Issued, unexpired, and covers `target` as `login`.
pub fn covers(request: &AccessRequest, user: &str, target: &Target, login: Option<&str>) -> bool {
    let status = request.status.clone().unwrap_or_default();
    let live = status.phase == Some(Phase::Issued)
        && status.certificate.is_some()
        && request.metadata.deletion_timestamp.is_none()
        && status
            .valid_before
            .is_some_and(|t| t.0 > jiff::Timestamp::now());
    let spec = &request.spec;
    live && spec.requester.as_ref().is_some_and(|r| r.username == user)
        && spec.target.host_group == target.host_group
        && match (&spec.target.host, &target.host) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        }
        && login.is_none_or(|l| spec.login == l)
}

/// Options shared by the connecting commands.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `--login`.
    pub login: Option<String>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--request`: request one without asking when none covers the host.
    pub request: bool,
    /// `--for` for such a request.
    pub duration: String,
    /// `--reason` for such a request.
    pub reason: Option<String>,
    /// `--proxy`: overrides the published address.
    pub proxy: Option<String>,
}

/// What the connecting commands need from the cluster: the proxy and its pin.
pub async fn proxy_and_pin(
    cluster: &Cluster,
    explicit: Option<&str>,
) -> Result<(ProxyAddress, PathBuf)> {
    let data = cluster.published().await?;
    let text = explicit
        .map(str::to_owned)
        .or_else(|| data.get(published::PROXY_ADDRESS).cloned())
        .unwrap_or_default();
    let address = parse_address(&text).ok_or_else(|| Error::ProxyAddressMissing {
        namespace: cluster.system_namespace.clone(),
    })?;
    let known = data
        .get(published::PROXY_KNOWN_HOSTS)
        .cloned()
        .unwrap_or_default();
    if known.trim().is_empty() {
        return Err(Error::ProxyAddressMissing {
            namespace: cluster.system_namespace.clone(),
        });
    }
    let path = keys::config_dir().join("known_hosts");
    keys::write(&path, &known, 0o644)?;
    Ok((address, path))
}

/// The keys the CLI may use, to match a request's public key to its private key path.
fn candidate_keys(explicit: Option<&Path>) -> Vec<Key> {
    let mut keys = Vec::new();
    if let Some(path) = explicit
        && let Ok(key) = keys::read(path)
    {
        keys.push(key);
    }
    for path in [
        keys::home().join(".ssh").join("id_ed25519.pub"),
        keys::config_dir().join("id_ed25519.pub"),
    ] {
        if let Ok(key) = keys::read(&path) {
            keys.push(key);
        }
    }
    keys
}

fn key_body(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

/// The entries for `requests`: one per host they cover (the group's hosts for group-wide
/// requests), the latest-expiring request winning; certificates written under the config dir.
pub async fn entries(
    cluster: &Cluster,
    requests: &[AccessRequest],
    explicit_key: Option<&Path>,
) -> Result<Vec<Entry>> {
    let keys = candidate_keys(explicit_key);
    let groups = cluster.host_groups().await?;
    let mut by_alias: BTreeMap<String, (jiff::Timestamp, Entry)> = BTreeMap::new();
    for request in requests {
        let Some(key) = keys
            .iter()
            .find(|k| key_body(&k.line) == key_body(&request.spec.public_key))
        else {
            continue;
        };
        let status = request.status.clone().unwrap_or_default();
        let certificate = keys::config_dir()
            .join("certs")
            .join(&cluster.namespace)
            .join(format!("{}-cert.pub", request.name_any()));
        keys::write(
            &certificate,
            &format!("{}\n", status.certificate.unwrap_or_default().trim()),
            0o644,
        )?;
        let hosts: Vec<String> = match &request.spec.target.host {
            Some(host) => vec![host.clone()],
            None => groups
                .iter()
                .find(|g| g.name_any() == request.spec.target.host_group)
                .map(|g| g.spec.hosts.iter().map(|h| h.name.clone()).collect())
                .unwrap_or_default(),
        };
        let until = status.valid_before.map(|t| t.0).unwrap_or_default();
        for host in hosts {
            let entry = Entry {
                alias: host.clone(),
                login: request.spec.login.clone(),
                host,
                identity: key.private_path.clone(),
                certificate: certificate.clone(),
                request: format!("{}/{}", cluster.namespace, request.name_any()),
            };
            match by_alias.get(&entry.alias) {
                Some((other, _)) if *other >= until => {}
                _ => {
                    by_alias.insert(entry.alias.clone(), (until, entry));
                }
            }
        }
    }
    Ok(by_alias.into_values().map(|(_, e)| e).collect())
}

/// Find (or, with consent, request) a grant for `host_arg` and return its entry.
async fn grant_for(cluster: &Cluster, host_arg: &str, options: &ConnectOptions) -> Result<Entry> {
    let me = cluster.whoami().await?;
    let groups = cluster.host_groups().await?;
    let target = plan::resolve(&groups, &cluster.namespace, host_arg)?;
    let requests = cluster.list_requests().await?;
    let mut covering: Vec<AccessRequest> = requests
        .into_iter()
        .filter(|r| covers(r, &me.username, &target, options.login.as_deref()))
        .collect();
    if covering.is_empty() {
        let shown = match &options.login {
            Some(login) => format!("{host_arg} as {login}"),
            None => host_arg.to_owned(),
        };
        if !options.request
            && !confirm(&format!(
                "no Issued AccessRequest covers {shown}; request one now? [y/N] "
            ))
        {
            return Err(Error::NoGrant {
                target: host_arg.to_owned(),
            });
        }
        let ask = Ask {
            target: host_arg.to_owned(),
            login: options.login.clone(),
            duration: options.duration.clone(),
            reason: options.reason.clone(),
            key: options.key.clone(),
            no_wait: false,
            name: None,
        };
        if let Some(granted) = request::request(cluster, &ask).await? {
            covering.push(granted.request);
        }
    }
    let host = target.host.clone();
    let mut found = entries(cluster, &covering, options.key.as_deref()).await?;
    found.retain(|e| host.as_ref().is_none_or(|h| &e.host == h));
    found.into_iter().next().ok_or_else(|| Error::NoGrant {
        target: host_arg.to_owned(),
    })
}

fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok();
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// Which OpenSSH program to run.
#[derive(Debug, Clone, Copy)]
pub enum Program {
    /// `ssh HOST [args]`.
    Ssh,
    /// `scp ARGS` with `HOST:path` operands.
    Scp,
    /// `sftp HOST [args]`.
    Sftp,
}

/// The host names `scp` operands refer to (`HOST:path`).
pub fn scp_hosts(args: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| {
            let (host, _) = a.split_once(':')?;
            (!host.is_empty() && !host.contains('/')).then(|| host.to_owned())
        })
        .collect();
    hosts.dedup();
    hosts
}

/// Run `program` through the proxy: write a config for the grants it needs, then exec.
pub async fn connect(
    cluster: &Cluster,
    program: Program,
    host: Option<&str>,
    args: &[String],
    options: &ConnectOptions,
) -> Result<()> {
    let (proxy, known_hosts) = proxy_and_pin(cluster, options.proxy.as_deref()).await?;
    let hosts: Vec<String> = match program {
        Program::Scp => scp_hosts(args),
        Program::Ssh | Program::Sftp => host.map(str::to_owned).into_iter().collect(),
    };
    if hosts.is_empty() {
        return Err(Error::Usage(
            "name a host: HOST, or HOST:PATH for scp".to_owned(),
        ));
    }
    let mut found = Vec::new();
    for host in &hosts {
        let mut entry = grant_for(cluster, host, options).await?;
        // The alias is what the user typed, so GROUP/HOST works too.
        entry.alias.clone_from(host);
        found.push(entry);
    }
    let config = keys::config_dir()
        .join("run")
        .join(format!("ssh_config.{}", std::process::id()));
    keys::write(&config, &ssh_config(&found, &proxy, &known_hosts), 0o600)?;
    let (name, mut command) = match program {
        Program::Ssh => ("ssh", Command::new("ssh")),
        Program::Scp => ("scp", Command::new("scp")),
        Program::Sftp => ("sftp", Command::new("sftp")),
    };
    command.arg("-F").arg(&config);
    match program {
        Program::Scp => {
            command.args(args);
        }
        // ssh takes the host, then a command; sftp takes no command, only options before
        // the host (`-b batchfile`).
        Program::Ssh => {
            command.args(host).args(args);
        }
        Program::Sftp => {
            command.args(args).args(host);
        }
    }
    let status = command.status().map_err(|e| Error::Exec {
        program: name.to_owned(),
        problem: e.to_string(),
    })?;
    std::fs::remove_file(&config).ok();
    std::process::exit(status.code().unwrap_or(255));
}

/// `config`: print (or `--write`) entries for every Issued grant of the user.
pub async fn config(cluster: &Cluster, write: bool, options: &ConnectOptions) -> Result<()> {
    let (proxy, known_hosts) = proxy_and_pin(cluster, options.proxy.as_deref()).await?;
    let me = cluster.whoami().await?;
    let mine: Vec<AccessRequest> = cluster
        .list_requests()
        .await?
        .into_iter()
        .filter(|r| {
            let target = Target {
                host_group: r.spec.target.host_group.clone(),
                host: r.spec.target.host.clone(),
            };
            covers(r, &me.username, &target, None)
        })
        .collect();
    let found = entries(cluster, &mine, options.key.as_deref()).await?;
    let text = ssh_config(&found, &proxy, &known_hosts);
    if !write {
        print!("{text}");
        return Ok(());
    }
    let path = keys::config_dir().join("ssh_config");
    keys::write(&path, &text, 0o600)?;
    let user_config = keys::home().join(".ssh").join("config");
    let include = format!("Include \"{}\"", path.display());
    let existing = std::fs::read_to_string(&user_config).unwrap_or_default();
    if !existing.lines().any(|l| l.trim() == include) {
        keys::write(&user_config, &format!("{include}\n{existing}"), 0o600)?;
    }
    eprintln!(
        "wrote {} ({} host{}), included from {}",
        path.display(),
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        user_config.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_addresses_parse_with_a_default_port() {
        let a = |host: &str, port| {
            Some(ProxyAddress {
                host: host.into(),
                port,
            })
        };
        assert_eq!(
            parse_address("gh.example.com:2200"),
            a("gh.example.com", 2200)
        );
        assert_eq!(parse_address("gh.example.com"), a("gh.example.com", 2222));
        assert_eq!(parse_address("[fd00::1]:22"), a("fd00::1", 22));
        assert_eq!(parse_address("fd00::1"), a("fd00::1", 2222));
        assert_eq!(parse_address(""), None);
        assert_eq!(parse_address("host:notaport"), None);
    }

    #[test]
    fn config_pins_the_proxy_and_names_login_at_host() {
        let entry = Entry {
            alias: "db1".into(),
            login: "ubuntu".into(),
            host: "db1".into(),
            identity: "/k/id".into(),
            certificate: "/k/c-cert.pub".into(),
            request: "team/r1".into(),
        };
        let text = ssh_config(
            &[entry],
            &ProxyAddress {
                host: "p".into(),
                port: 2222,
            },
            Path::new("/k/kh"),
        );
        for line in [
            "Host db1\n",
            "HostName p\n",
            "Port 2222\n",
            "User ubuntu@db1\n",
            "HostKeyAlias gatehouse-proxy\n",
            "StrictHostKeyChecking yes\n",
            "IdentitiesOnly yes\n",
            "CertificateFile \"/k/c-cert.pub\"",
            "Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[test]
    fn scp_operands_name_hosts() {
        let args: Vec<String> = ["-r", "./a:b/c", "db1:/tmp/x", "local", "g/db2:y"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(scp_hosts(&args), ["db1"]);
    }
}
