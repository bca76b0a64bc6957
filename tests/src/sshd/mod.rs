//! Real OpenSSH target hosts for end-to-end tests.
//!
//! [`Sshd::start`] runs Debian's `/usr/sbin/sshd` (package `openssh-server`, installed by
//! `tests/scripts/install-deps.sh`) in the foreground, on a free loopback port, from a config
//! the harness writes into a temporary directory (or [`SshdConfig::home`], which is kept)
//! together with an Ed25519 host key, the trusted user-CA keys and the authorized principals.
//! Only OpenSSH certificates can log in: there are no authorized_keys and no passwords. sshd
//! logs to `<dir>/sshd.log`, which tests read back with [`Sshd::log`] and [`Sshd::wait_for_log`].
//!
//! The real `ssh`, `scp` and `sftp` clients ([`Sshd::ssh`], [`Sshd::scp`], [`Sshd::sftp`]) log
//! into it with a private key and a certificate, ignore every ssh_config and pin the host key
//! through a generated known_hosts file. [`ssh_keygen`] and its helpers make the keys,
//! certificates and KRLs. Everything is thrown away when the [`Sshd`] is dropped, which also
//! kills sshd and its per-connection children ([`crate::process`]), unless it is detached
//! (`make up`'s demo target). No Kubernetes control plane is involved.
//!
//! When the tests run as root (as in CI), sshd needs its privilege-separation directory
//! `/run/sshd`; [`Sshd::start`] creates it when missing.
//!
//! The code is split along that flow: this file turns an [`SshdConfig`] into the files in the
//! temporary directory and a running, then stopped, sshd; [`crate::ssh_client`] turns a login,
//! key and certificate into an `ssh`/`scp`/`sftp` command line; `keys.rs` drives
//! `ssh-keygen` for keys, certificates, KRLs and fingerprints; `binary.rs` finds the sshd
//! binary; [`crate::process`] runs it, waits until it listens and stops its process tree.

use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

mod binary;
mod keys;

pub use keys::{
    CertSpec, current_login, fingerprint, generate_key, generate_key_as, sign_user_key, ssh_keygen,
    write_krl,
};

pub use crate::net::LOOPBACK;
use crate::{
    command::Cmd,
    process::{Process, Ready, Spec, tail},
    ssh_client::{Client, Server, SshCommand},
};
use binary::{ensure_privsep_dir, sshd_binary};

/// How long [`Sshd::start`] waits for sshd to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What a test sshd trusts. [`Default`] trusts nothing, logs at `VERBOSE`.
#[derive(Debug, Clone)]
pub struct SshdConfig {
    /// User-CA public key lines (`ssh-ed25519 AAAA… comment`), written to the file named by
    /// `TrustedUserCAKeys`.
    pub trusted_user_ca_keys: Vec<String>,
    /// Login → principals accepted for it, written to `<tmp>/principals/<login>` and named by
    /// `AuthorizedPrincipalsFile <tmp>/principals/%u`. `None` leaves the directive out, so
    /// sshd's default applies: a certificate must list the login itself as a principal.
    /// Logins missing from the map accept no certificate at all.
    pub authorized_principals: Option<BTreeMap<String, Vec<String>>>,
    /// A KRL or revoked-keys file for `RevokedKeys`. sshd reads it at every authentication, so
    /// tests may rewrite it while sshd runs; it must exist by then, or sshd refuses every key.
    pub revoked_keys: Option<PathBuf>,
    /// sshd's `LogLevel`: `VERBOSE` (default) names key ids and serials; `DEBUG2` also says
    /// why a CA was not trusted.
    pub log_level: String,
    /// Further `sshd_config` lines, appended verbatim (for example `ExposeAuthInfo yes`).
    pub extra_config: Vec<String>,
    /// Extra environment for sshd, like libfaketime's `LD_PRELOAD` + `FAKETIME` to run the
    /// host's clock ahead and see certificates expire without waiting.
    pub env: Vec<(String, String)>,
    /// Keep config, host key (reused when present) and log in this directory instead of a
    /// temporary one removed on drop (`make up`'s demo target).
    pub home: Option<PathBuf>,
    /// The address sshd listens on: loopback, or the real node's address (on the loopback
    /// device too) so pods can reach it.
    pub listen: Ipv4Addr,
}

impl Default for SshdConfig {
    fn default() -> Self {
        Self {
            trusted_user_ca_keys: Vec::new(),
            authorized_principals: None,
            revoked_keys: None,
            log_level: "VERBOSE".to_owned(),
            extra_config: Vec::new(),
            env: Vec::new(),
            home: None,
            listen: LOOPBACK,
        }
    }
}

impl SshdConfig {
    /// A config trusting one user CA (its public key line) and nothing else.
    pub fn trusting(ca_public_key: impl Into<String>) -> Self {
        Self {
            trusted_user_ca_keys: vec![ca_public_key.into()],
            ..Self::default()
        }
    }

    /// Accept `principals` for `login` through `AuthorizedPrincipalsFile`.
    pub fn authorize(mut self, login: &str, principals: &[&str]) -> Self {
        self.authorized_principals
            .get_or_insert_with(BTreeMap::new)
            .insert(
                login.to_owned(),
                principals.iter().map(|p| (*p).to_owned()).collect(),
            );
        self
    }
}

/// Where a test sshd keeps its files.
#[derive(Debug)]
enum Home {
    /// Removed on drop.
    Temporary(TempDir),
    /// Kept.
    Kept(PathBuf),
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }
}

/// A running sshd, killed (with its per-connection children) when dropped, unless detached.
#[derive(Debug)]
pub struct Sshd {
    process: Process,
    home: Home,
    address: Ipv4Addr,
    port: u16,
    host_key: String,
    known_hosts: PathBuf,
    principals_dir: Option<PathBuf>,
}

impl Sshd {
    /// Write the config, validate it with `sshd -t`, start `sshd -D -e` on a free loopback
    /// port and wait until the port accepts connections.
    ///
    /// Panics, with the end of sshd's log, when sshd is not installed, refuses the config or
    /// does not come up within 15 seconds.
    #[track_caller]
    pub fn start(cfg: &SshdConfig) -> Self {
        Self::start_spec(cfg, |spec| spec)
    }

    /// Start it as [`Self::start`] does, as a daemon that can be detached.
    pub fn start_daemon(cfg: &SshdConfig) -> Self {
        Self::start_spec(cfg, Spec::daemon)
    }

    #[track_caller]
    fn start_spec(cfg: &SshdConfig, adapt: impl Fn(Spec) -> Spec) -> Self {
        let sshd = sshd_binary();
        ensure_privsep_dir();
        let home = match &cfg.home {
            Some(dir) => {
                fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
                Home::Kept(dir.clone())
            }
            None => Home::Temporary(
                tempfile::Builder::new()
                    .prefix("gatehouse-sshd-")
                    .tempdir()
                    .expect("a temporary directory for sshd"),
            ),
        };
        let root = home.path().to_path_buf();
        let host_key_path = root.join("ssh_host_ed25519_key");
        let host_key = if host_key_path.is_file() {
            keys::read_key_line(&keys::public_path(&host_key_path))
        } else {
            generate_key(&root, "ssh_host_ed25519_key").1
        };

        let ca_path = root.join("trusted_user_ca_keys");
        let mut cas = cfg.trusted_user_ca_keys.join("\n");
        cas.push('\n');
        write_file(&ca_path, &cas);

        let principals_dir = cfg.authorized_principals.as_ref().map(|map| {
            let pdir = root.join("principals");
            fs::create_dir_all(&pdir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", pdir.display()));
            for (login, principals) in map {
                write_principals(&pdir, login, principals);
            }
            pdir
        });

        let login_home = root.join("login-home");
        fs::create_dir_all(&login_home)
            .unwrap_or_else(|e| panic!("creating {}: {e}", login_home.display()));

        let log_path = root.join("sshd.log");
        let config_path = root.join("sshd_config");
        let started = Process::try_start_on_free_ports(|[port]| {
            let text = config_text(
                cfg,
                port,
                &host_key_path,
                &ca_path,
                principals_dir.as_deref(),
                &login_home,
            );
            write_file(&config_path, &text);
            let check = Cmd::new(&sshd)
                .arg("-t")
                .arg("-f")
                .arg(&config_path)
                .timeout(Duration::from_secs(30))
                .run();
            assert!(
                check.success,
                "sshd refuses the generated config ({:?})\n{}\nconfig:\n{text}\nstdout:\n{}",
                check.code, check.stderr, check.stdout
            );
            let cmd = Cmd::new(&sshd)
                .envs(cfg.env.iter().map(|(k, v)| (k, v)))
                .args(["-D", "-e", "-f"])
                .arg(&config_path);
            let spec = Spec::new("sshd", cmd, &log_path).fresh_log();
            // Wait for sshd's own word first, so the probe does not race a half-started sshd
            // that would then log a refused connection from itself.
            let ready = Ready::log_line("Server listening on")
                .and(Ready::tcp(SocketAddr::from((cfg.listen, port))))
                .within(START_TIMEOUT);
            (adapt(spec), ready)
        });
        let (process, [port]) = started.unwrap_or_else(|failure| {
            let config = fs::read_to_string(&config_path).unwrap_or_default();
            panic!("{}\nconfig:\n{config}", failure.report())
        });
        let known_hosts = root.join("known_hosts");
        write_file(
            &known_hosts,
            &format!("{} {host_key}\n", host_pattern(cfg.listen, port)),
        );
        Self {
            process,
            home,
            address: cfg.listen,
            port,
            host_key,
            known_hosts,
            principals_dir,
        }
    }

    /// Leave sshd running after this handle is gone, its pid in `pid_file`; returns the pid.
    /// Only for an sshd with a kept [`SshdConfig::home`]: a temporary one would be removed.
    pub fn detach(self, pid_file: &Path) -> u32 {
        assert!(
            matches!(self.home, Home::Kept(_)),
            "a detached sshd needs a kept home"
        );
        self.process.detach(pid_file)
    }

    /// The port sshd listens on (at [`Self::addr`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listening sshd's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or_default()
    }

    /// The address sshd listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.address, self.port))
    }

    /// The host's public key line (`ssh-ed25519 AAAA… gatehouse-test-host`).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The host as known_hosts names it: `[127.0.0.1]:<port>`.
    pub fn host_pattern(&self) -> String {
        host_pattern(self.address, self.port)
    }

    /// A known_hosts file pinning this host's key (what the clients use by default).
    pub fn known_hosts(&self) -> PathBuf {
        self.known_hosts.clone()
    }

    /// The directory holding the config, host key, log and known_hosts; removed on drop
    /// unless it is [`SshdConfig::home`]. Tests may put their own keys here.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// Replace the principals accepted for `login` (sshd rereads the file at every login).
    ///
    /// Panics when the config had no `authorized_principals`.
    #[track_caller]
    pub fn set_authorized_principals(&self, login: &str, principals: &[String]) {
        let pdir = self
            .principals_dir
            .as_ref()
            .expect("this sshd was started without authorized_principals");
        write_principals(pdir, login, principals);
    }

    /// Everything sshd has logged so far.
    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// sshd's log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Poll the log until it contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`Self::wait_for_log`], but panics with the log's end when `needle` never shows up.
    #[track_caller]
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        if !self.wait_for_log(needle, timeout) {
            panic!(
                "sshd never logged {needle:?} within {timeout:?}; log:\n{}",
                tail(&self.log(), 40)
            );
        }
    }

    /// Where the clients connect: this sshd's port and the known_hosts file pinning its key.
    pub fn server(&self) -> Server {
        Server {
            address: self.address,
            port: self.port,
            known_hosts: self.known_hosts.clone(),
        }
    }

    /// `ssh` as `login`, authenticating with `identity` (private key) and `certificate`.
    /// Remote command words go in with [`SshCommand::arg`].
    pub fn ssh(&self, login: &str, identity: &Path, certificate: &Path) -> SshCommand {
        SshCommand::new(Client::Ssh, &self.server(), login, identity, certificate)
    }

    /// `scp` as `login`; give sources and target with [`SshCommand::arg`], naming remote
    /// files with [`Self::remote_path`]. (OpenSSH ≥ 9 copies over the SFTP subsystem.)
    pub fn scp(&self, login: &str, identity: &Path, certificate: &Path) -> SshCommand {
        SshCommand::new(Client::Scp, &self.server(), login, identity, certificate)
    }

    /// `sftp -b -` as `login`: the batch of sftp commands comes from [`SshCommand::stdin`].
    pub fn sftp(&self, login: &str, identity: &Path, certificate: &Path) -> SshCommand {
        SshCommand::new(Client::Sftp, &self.server(), login, identity, certificate)
    }

    /// A remote path for `scp`: `<login>@127.0.0.1:<path>`.
    pub fn remote_path(&self, login: &str, path: &str) -> String {
        format!("{login}@{}:{path}", self.address)
    }
}

#[track_caller]
fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn write_principals(dir: &Path, login: &str, principals: &[String]) {
    assert!(
        !login.is_empty() && !login.contains('/'),
        "bad login name {login:?}"
    );
    let mut text = principals.join("\n");
    text.push('\n');
    write_file(&dir.join(login), &text);
}

/// A path as one sshd_config argument.
fn quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    assert!(
        !s.contains('"') && !s.contains('\n'),
        "path unusable in sshd_config: {s:?}"
    );
    format!("\"{s}\"")
}

/// The sshd_config for a start on `port`.
fn config_text(
    cfg: &SshdConfig,
    port: u16,
    host_key: &Path,
    ca: &Path,
    principals_dir: Option<&Path>,
    login_home: &Path,
) -> String {
    let mut lines = vec![
        "# Written by gatehouse-tests (tests/src/sshd/mod.rs).".to_owned(),
        format!("ListenAddress {}:{port}", cfg.listen),
        format!("HostKey {}", quote(host_key)),
        "PidFile none".to_owned(),
        "UsePAM no".to_owned(),
        // The temp dir and the keys the tests write are not root-owned 0700 trees.
        "StrictModes no".to_owned(),
        "PermitRootLogin prohibit-password".to_owned(),
        format!("LogLevel {}", cfg.log_level),
        "AuthenticationMethods publickey".to_owned(),
        "PubkeyAuthentication yes".to_owned(),
        "PasswordAuthentication no".to_owned(),
        "KbdInteractiveAuthentication no".to_owned(),
        "HostbasedAuthentication no".to_owned(),
        "AuthorizedKeysFile none".to_owned(),
        format!("TrustedUserCAKeys {}", quote(ca)),
        "Subsystem sftp internal-sftp".to_owned(),
        "PrintMotd no".to_owned(),
        "PrintLastLog no".to_owned(),
        "UseDNS no".to_owned(),
        "X11Forwarding no".to_owned(),
        // The logged-in shell's HOME is an empty directory of this sshd's own, so no dotfile of
        // the machine's user runs in it: root's ~/.profile and ~/.bashrc on these machines run
        // `pyenv init -`, i.e. `pyenv rehash` under one lock for the whole machine, which a
        // killed run leaves stale and every later login shell then waits on (60 s), for a
        // command (bash reads ~/.bashrc under sshd) and for an interactive login alike. The
        // working directory stays the account's own (sshd changes to it from the passwd
        // entry), and the targets' shells are not what the tests are about.
        format!("SetEnv HOME={}", quote(login_home)),
    ];
    if let Some(pdir) = principals_dir {
        lines.push(format!(
            "AuthorizedPrincipalsFile {}",
            quote(&pdir.join("%u"))
        ));
    }
    if let Some(krl) = &cfg.revoked_keys {
        lines.push(format!("RevokedKeys {}", quote(krl)));
    }
    lines.extend(cfg.extra_config.iter().cloned());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn host_pattern(address: Ipv4Addr, port: u16) -> String {
    format!("[{address}]:{port}")
}
