//! An engineer's end of the proxy, for tests and benchmarks: a target `sshd` trusting only the
//! upstream CA, a scenario namespace whose HostGroup points at it, a proxy started as the
//! chart's ServiceAccount, and the engineer's key, certificates and real `ssh` commands.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use gatehouse_crds::{Phase, SessionRecord};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    ControlPlane, User,
    command::{Cmd, CmdOutput},
    control_plane,
    gatehouse::{SYSTEM_NAMESPACE, wait_for},
    proxy::{Proxy, ProxyConfig, Storage},
    repo_root,
    scenario::{self, Scenario, Setup, keypair},
    ssh_client::{Client, SshCommand},
    sshd::{Sshd, SshdConfig, current_login},
};

/// One engineer, one target sshd trusting only the upstream CA, one proxy.
#[derive(Debug)]
pub struct World {
    pub cp: &'static ControlPlane,
    pub s: Scenario,
    pub dir: tempfile::TempDir,
    pub sshd: Sshd,
    pub proxy: Proxy,
    pub key: PathBuf,
    pub public: String,
    pub known_hosts: PathBuf,
    pub login: String,
}

pub async fn published(cp: &ControlPlane, key: &str) -> String {
    let config_maps: Api<ConfigMap> =
        Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    wait_for(
        Duration::from_secs(15),
        &format!("gatehouse-ssh to publish {key}"),
        || async {
            config_maps
                .get("gatehouse-ssh")
                .await
                .ok()?
                .data?
                .get(key)
                .cloned()
        },
    )
    .await
}

pub async fn world(
    prefix: &str,
    storage: impl FnOnce(&Path) -> Storage,
    policy_extra: Value,
) -> World {
    let cp = control_plane();
    cp.install_gatehouse();
    let login = current_login();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let upstream_ca = published(cp, "upstream_ca.pub").await;
    let sshd = Sshd::start(&SshdConfig::trusting(upstream_ca.trim()));
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, published(cp, "proxy_known_hosts").await)
        .unwrap_or_else(|e| panic!("{e}"));
    let setup = Setup {
        approvals: 0,
        mode: "Proxied",
        logins: vec![login.clone()],
        hosts: vec![
            (
                "db1".into(),
                "127.0.0.1".into(),
                sshd.port(),
                sshd.host_key().to_owned(),
            ),
            (
                "db2".into(),
                "127.0.0.1".into(),
                sshd.port(),
                sshd.host_key().to_owned(),
            ),
        ],
        policy_extra,
    };
    let s = Scenario::new(cp, prefix, &setup).await;
    let proxy = Proxy::start(
        cp,
        ProxyConfig {
            dir: dir.path().join("proxy"),
            storage: storage(dir.path()),
            args: vec![],
        },
    );
    let (key, public) = keypair(dir.path(), "alice");
    World {
        cp,
        s,
        dir,
        sshd,
        proxy,
        key,
        public,
        known_hosts,
        login,
    }
}

impl World {
    /// Create (as alice) and wait for an Issued request; returns its certificate file.
    pub async fn issue(&self, request: Value) -> PathBuf {
        let name = request["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.s.apply(self.cp, User::Alice, &request).ok();
        let status = self
            .s
            .wait_phase(&name, Phase::Issued, Duration::from_secs(10))
            .await
            .status
            .unwrap_or_default();
        let file = self.dir.path().join(format!("{name}-cert.pub"));
        std::fs::write(&file, status.certificate.unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        file
    }

    pub fn request(&self, name: &str) -> Value {
        scenario::request(name, &self.login, &self.public)
    }

    /// `ssh` through the proxy as SSH user `user` (`LOGIN@HOST`) with the engineer's key and
    /// `cert`, running `args` (none: a shell).
    pub fn ssh(&self, cert: &Path, user: &str, args: &[&str]) -> SshCommand {
        self.client(Client::Ssh, cert, user).args(args)
    }

    /// `client` (ssh, scp or sftp) through the proxy as `user` with the engineer's key and `cert`.
    pub fn client(&self, client: Client, cert: &Path, user: &str) -> SshCommand {
        self.proxy
            .client(client, user, &self.key, cert, &self.known_hosts)
    }

    pub async fn sessions(&self, name: &str) -> Vec<SessionRecord> {
        self.s.get(name).await.status.unwrap_or_default().sessions
    }

    /// Wait until the request's sessions carry `count` uploaded recordings.
    pub async fn recorded(
        &self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<SessionRecord> {
        wait_for(timeout, "recordings in status.sessions", || async {
            let sessions = self.sessions(name).await;
            (sessions.iter().filter(|s| s.recording.is_some()).count() >= count).then_some(sessions)
        })
        .await
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Drive an interactive ssh session through a real pty (tests/scripts/pty-session.py).
pub fn pty_session(w: &World, cert: &Path, user: &str, steps: Value) -> CmdOutput {
    let script = Cmd::new("python3")
        .arg(repo_root().join("tests/scripts/pty-session.py"))
        .arg(steps.to_string())
        .arg("--");
    w.ssh(cert, user, &[])
        .flag("-tt")
        .into_cmd_under(Some(script))
        .run()
}
