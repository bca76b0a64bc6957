//! The proxied test world, for tests and the benchmark: a target `sshd` trusting only the
//! upstream CA, a scenario namespace whose HostGroup points at it (hosts `db1` and `db2`), a
//! proxy started as the chart's ServiceAccount, and the engineer's key and known_hosts.
//!
//! In: the shared install (what its operator publishes: the upstream CA, the proxy's
//! known_hosts line), a name prefix, where recordings go, and extra policy fields. Out: a
//! [`ProxiedWorld`] whose engineer (alice) requests certificates and runs the real `ssh`, `scp`
//! and `sftp` through the proxy, and reads back `status.sessions`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use gatehouse_crds::{Phase, SessionRecord, contract::published};
use serde_json::{Value, json};

use crate::{
    ControlPlane,
    command::{Cmd, CmdOutput, Running},
    control_plane,
    proxy::{Proxy, ProxyConfig, Storage},
    repo_root,
    scenario::{self, Scenario, Setup, keypair, sshd_host},
    ssh_client::{Client, SshCommand},
    sshd::{CertSpec, Sshd, SshdConfig, current_login, sign_user_key},
    users::User,
    wait_for,
};

/// Where [`ProxiedWorld::local_storage`] keeps recordings, inside the world's directory.
const LOCAL_STORE: &str = "store";

/// One engineer, one target sshd trusting only the upstream CA, one proxy.
#[derive(Debug)]
pub struct ProxiedWorld {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// The namespace with HostGroup `db` (hosts `db1`, `db2`: both this sshd) and its policy.
    pub s: Scenario,
    /// A directory for the test's files (keys, certificates, a local store).
    pub dir: tempfile::TempDir,
    /// The target.
    pub sshd: Sshd,
    /// The proxy.
    pub proxy: Proxy,
    /// The engineer's private key (`<key>.pub` next to it).
    pub key: PathBuf,
    /// The engineer's public key line.
    pub public: String,
    /// known_hosts pinning the proxy's published host key.
    pub known_hosts: PathBuf,
    /// The login on the target (the unix user running the tests).
    pub login: String,
}

impl ProxiedWorld {
    /// Set it up: namespace `<prefix>-…`, recordings where `storage` says (given the world's
    /// directory), `policy_extra` merged into the policy's spec.
    pub async fn start(
        prefix: &str,
        storage: impl FnOnce(&Path) -> Storage,
        policy_extra: Value,
    ) -> ProxiedWorld {
        Self::start_with_args(prefix, storage, policy_extra, &[]).await
    }

    /// [`Self::start`] with `proxy_args` added to the proxy's command line.
    pub async fn start_with_args(
        prefix: &str,
        storage: impl FnOnce(&Path) -> Storage,
        policy_extra: Value,
        proxy_args: &[&str],
    ) -> ProxiedWorld {
        Self::start_with_sshd(prefix, storage, policy_extra, proxy_args, &[]).await
    }

    /// [`Self::start_with_args`] with `sshd_extra` lines added to the target's sshd_config
    /// (the benchmark raises `MaxStartups` for its parallel logins).
    pub async fn start_with_sshd(
        prefix: &str,
        storage: impl FnOnce(&Path) -> Storage,
        policy_extra: Value,
        proxy_args: &[&str],
        sshd_extra: &[&str],
    ) -> ProxiedWorld {
        Self::start_full(prefix, storage, policy_extra, proxy_args, sshd_extra, None).await
    }

    /// [`Self::start`] with a proxy whose `POD_NAME` (its audit batch writer) is `pod_name`:
    /// worlds whose proxies share one store (the audit API's) need different writers.
    pub async fn start_as_writer(
        prefix: &str,
        storage: impl FnOnce(&Path) -> Storage,
        policy_extra: Value,
        pod_name: &str,
    ) -> ProxiedWorld {
        Self::start_full(prefix, storage, policy_extra, &[], &[], Some(pod_name)).await
    }

    async fn start_full(
        prefix: &str,
        storage: impl FnOnce(&Path) -> Storage,
        policy_extra: Value,
        proxy_args: &[&str],
        sshd_extra: &[&str],
        pod_name: Option<&str>,
    ) -> ProxiedWorld {
        let cp = control_plane();
        cp.install_gatehouse();
        let login = current_login();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let upstream_ca = cp.published(published::UPSTREAM_CA_PUB).await;
        // The target accepts nothing until it is configured from what the operator publishes.
        let mut sshd_config = SshdConfig::trusting(upstream_ca.trim()).authorize(&login, &[]);
        sshd_config
            .extra_config
            .extend(sshd_extra.iter().map(|l| (*l).to_owned()));
        let sshd = Sshd::start(&sshd_config);
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            cp.published(published::PROXY_KNOWN_HOSTS).await,
        )
        .expect("writing known_hosts");
        let setup = Setup {
            approvals: 0,
            mode: "Proxied",
            logins: vec![login.clone()],
            hosts: vec![sshd_host("db1", &sshd), sshd_host("db2", &sshd)],
            policy_extra,
        };
        let s = Scenario::new(cp, prefix, &setup).await;
        // One sshd plays both hosts: it accepts what each of them would.
        let mut principals = s.authorized_principals(cp, "db1", &login).await;
        principals.extend(s.authorized_principals(cp, "db2", &login).await);
        sshd.set_authorized_principals(&login, &principals);
        let mut config = ProxyConfig::new(dir.path().join("proxy"), storage(dir.path()));
        config.args = proxy_args.iter().map(|a| (*a).to_owned()).collect();
        if let Some(pod_name) = pod_name {
            config.pod_name = pod_name.to_owned();
        }
        let proxy = Proxy::start(cp, config);
        let (key, public) = keypair(dir.path(), "alice");
        ProxiedWorld {
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

    /// [`Self::start`] with recordings in [`Self::local_store`] and the default policy.
    pub async fn with_local_store(prefix: &str) -> ProxiedWorld {
        Self::start(prefix, Self::local_storage, json!({})).await
    }

    /// Recordings in a directory of the world (`storage` for [`Self::start`]).
    pub fn local_storage(dir: &Path) -> Storage {
        Storage::Local(dir.join(LOCAL_STORE))
    }

    /// Where [`Self::local_storage`] keeps recordings.
    pub fn local_store(&self) -> PathBuf {
        self.dir.path().join(LOCAL_STORE)
    }

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
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        file
    }

    /// A certificate for the engineer's key signed by the CA private key `ca` as `spec` says
    /// (forged, expired, or for a direct login), kept as `<name>-cert.pub` in the world's
    /// directory.
    pub fn certificate_from(&self, ca: &Path, name: &str, spec: &CertSpec<'_>) -> PathBuf {
        let public = self.dir.path().join(format!("{name}.pub"));
        std::fs::copy(self.key.with_extension("pub"), &public)
            .unwrap_or_else(|e| panic!("copying the engineer's key to {}: {e}", public.display()));
        sign_user_key(ca, &public, spec)
    }

    /// An AccessRequest `name` for the world's login with the engineer's key.
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

    /// Drive an interactive `ssh -tt` session through a real pty (`tests/scripts/pty-session.py`
    /// with `steps`: send, expect, resize, sleep).
    pub fn pty_session(&self, cert: &Path, user: &str, steps: &Value) -> CmdOutput {
        let script = Cmd::new("python3")
            .arg(repo_root().join("tests/scripts/pty-session.py"))
            .arg(steps.to_string())
            .arg("--");
        self.ssh(cert, user, &[])
            .flag("-tt")
            .into_cmd_under(Some(script))
            .run()
    }

    /// Start `echo started; sleep 120` on `db1` with request `name`'s certificate `cert`, and
    /// return once the session is live in `status.sessions` and its output is in the spool (a
    /// crash would keep it there).
    pub async fn live_session(&self, name: &str, cert: &Path) -> Running {
        let session = self
            .ssh(
                cert,
                &format!("{}@db1", self.login),
                &["echo started; sleep 120"],
            )
            .spawn();
        wait_for(
            Duration::from_secs(15),
            "the live session in status",
            || async {
                let sessions = self.sessions(name).await;
                sessions.iter().any(|s| s.end_time.is_none()).then_some(())
            },
        )
        .await;
        self.proxy
            .await_spooled_output("started", Duration::from_secs(5))
            .await;
        session
    }

    /// The sessions in request `name`'s status.
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
