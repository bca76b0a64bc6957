//! Real OpenSSH target hosts for end-to-end tests.
//!
//! [`Sshd::start`] runs Debian's `/usr/sbin/sshd` (package `openssh-server`, installed by
//! `tests/scripts/install-deps.sh`) in the foreground, on a free loopback port, from a config
//! the harness writes into a temporary directory together with a fresh Ed25519 host key, the
//! trusted user-CA keys and the authorized principals. Only OpenSSH certificates can log in:
//! there are no authorized_keys and no passwords. sshd logs to `<tmp>/sshd.log`, which tests read
//! back with [`Sshd::log`] and [`Sshd::wait_for_log`].
//!
//! The real `ssh`, `scp` and `sftp` clients ([`Sshd::ssh`], [`Sshd::scp`], [`Sshd::sftp`]) log
//! into it with a private key and a certificate, ignore every ssh_config and pin the host key
//! through a generated known_hosts file. [`ssh_keygen`] and its helpers make the keys,
//! certificates and KRLs. Everything is thrown away when the [`Sshd`] is dropped, which also
//! kills sshd and its per-connection children. No Kubernetes control plane is involved.
//!
//! When the tests run as root (as in CI), sshd needs its privilege-separation directory
//! `/run/sshd`; [`Sshd::start`] creates it when missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::CmdOutput;

/// The address every test sshd listens on.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long [`Sshd::start`] waits for sshd to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a port is retried when another process grabbed it first.
const START_ATTEMPTS: usize = 5;
/// Default limit on a whole client command (the client's own `ConnectTimeout` is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// `ConnectTimeout` given to the clients, in seconds.
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// Where Debian's sshd (built with privilege separation) wants its chroot directory as root.
const PRIVSEP_DIR: &str = "/run/sshd";

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

/// A running sshd, killed (with its per-connection children) when dropped.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    dir: TempDir,
    port: u16,
    host_key: String,
    log_path: PathBuf,
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
        let sshd = sshd_binary();
        ensure_privsep_dir();
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-sshd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for sshd: {e}"));
        let root = dir.path().to_path_buf();
        let host_key_path = root.join("ssh_host_ed25519_key");
        ssh_keygen([
            OsStr::new("-q"),
            OsStr::new("-t"),
            OsStr::new("ed25519"),
            OsStr::new("-N"),
            OsStr::new(""),
            OsStr::new("-C"),
            OsStr::new("gatehouse-test-host"),
            OsStr::new("-f"),
            host_key_path.as_os_str(),
        ])
        .ok();
        let host_key = read_key_line(&public_path(&host_key_path));

        let ca_path = root.join("trusted_user_ca_keys");
        let mut cas = cfg.trusted_user_ca_keys.join("\n");
        cas.push('\n');
        write_file(&ca_path, &cas);

        let principals_dir = cfg.authorized_principals.as_ref().map(|map| {
            let pdir = root.join("principals");
            fs::create_dir(&pdir).unwrap_or_else(|e| panic!("creating {}: {e}", pdir.display()));
            for (login, principals) in map {
                write_principals(&pdir, login, principals);
            }
            pdir
        });

        let log_path = root.join("sshd.log");
        let config_path = root.join("sshd_config");
        let mut last_failure = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let mut lines = vec![
                "# Written by gatehouse-tests (tests/src/sshd.rs).".to_owned(),
                format!("ListenAddress {LOOPBACK}:{port}"),
                format!("HostKey {}", quote(&host_key_path)),
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
                format!("TrustedUserCAKeys {}", quote(&ca_path)),
                "Subsystem sftp internal-sftp".to_owned(),
                "PrintMotd no".to_owned(),
                "PrintLastLog no".to_owned(),
                "UseDNS no".to_owned(),
                "X11Forwarding no".to_owned(),
            ];
            if let Some(pdir) = &principals_dir {
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
            write_file(&config_path, &text);

            let check = run_process(
                Command::new(&sshd).arg("-t").arg("-f").arg(&config_path),
                None,
                Duration::from_secs(30),
            );
            assert!(
                check.success,
                "sshd refuses the generated config ({:?})\n{}\nconfig:\n{text}\nstdout:\n{}",
                check.code, check.stderr, check.stdout
            );

            let log = File::create(&log_path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
            let mut child = Command::new(&sshd)
                .envs(cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", sshd.display()));
            match wait_until_listening(&mut child, port, &log_path) {
                Ok(()) => {
                    let known_hosts = root.join("known_hosts");
                    write_file(
                        &known_hosts,
                        &format!("{} {host_key}\n", host_pattern(port)),
                    );
                    return Self {
                        child,
                        dir,
                        port,
                        host_key,
                        log_path,
                        known_hosts,
                        principals_dir,
                    };
                }
                Err(failure) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = read_log(&log_path);
                    // Someone took the port between our probe and sshd's bind: try another.
                    if failure.retry && log.contains("Address already in use") {
                        last_failure = format!("{}\n{}", failure.message, tail(&log, 40));
                        continue;
                    }
                    panic!(
                        "{}\nsshd log ({}):\n{}\nconfig:\n{text}",
                        failure.message,
                        log_path.display(),
                        tail(&log, 40)
                    );
                }
            }
        }
        panic!("sshd could not bind a loopback port in {START_ATTEMPTS} attempts:\n{last_failure}")
    }

    /// The loopback port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listening sshd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address sshd listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    /// The host's public key line (`ssh-ed25519 AAAA… gatehouse-test-host`).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The host as known_hosts names it: `[127.0.0.1]:<port>`.
    pub fn host_pattern(&self) -> String {
        host_pattern(self.port)
    }

    /// A known_hosts file pinning this host's key (what the clients use by default).
    pub fn known_hosts(&self) -> PathBuf {
        self.known_hosts.clone()
    }

    /// The temporary directory holding the config, host key, log and known_hosts; removed on
    /// drop. Tests may put their own keys here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replace the principals accepted for `login` (sshd rereads the file at every login).
    ///
    /// Panics when the config had no `authorized_principals`.
    #[track_caller]
    pub fn set_authorized_principals(&self, login: &str, principals: &[String]) {
        let pdir = self
            .principals_dir
            .as_ref()
            .unwrap_or_else(|| panic!("this sshd was started without authorized_principals"));
        write_principals(pdir, login, principals);
    }

    /// Everything sshd has logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
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

    /// `ssh` as `login`, authenticating with `identity` (private key) and `certificate`.
    /// Remote command words go in with [`SshCommand::arg`].
    pub fn ssh(&self, login: &str, identity: &Path, certificate: &Path) -> SshCommand {
        SshCommand::new(Client::Ssh, self, login, identity, certificate)
    }

    /// `scp` as `login`; give sources and target with [`SshCommand::arg`], naming remote
    /// files with [`Self::remote_path`]. (OpenSSH ≥ 9 copies over the SFTP subsystem.)
    pub fn scp(&self, login: &str, identity: &Path, certificate: &Path) -> SshCommand {
        SshCommand::new(Client::Scp, self, login, identity, certificate)
    }

    /// `sftp -b -` as `login`: the batch of sftp commands comes from [`SshCommand::stdin`].
    pub fn sftp(&self, login: &str, identity: &Path, certificate: &Path) -> SshCommand {
        SshCommand::new(Client::Sftp, self, login, identity, certificate)
    }

    /// A remote path for `scp`: `<login>@127.0.0.1:<path>`.
    pub fn remote_path(&self, login: &str, path: &str) -> String {
        format!("{login}@{LOOPBACK}:{path}")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Per-connection sshd processes call setsid(), so no process group covers them, and
        // once the listener dies they are reparented. So: freeze the whole tree (a stopped
        // process cannot fork a child we would miss), then kill everything in it.
        let tree = stop_tree(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        signal("KILL", &tree);
    }
}

/// Which OpenSSH client an [`SshCommand`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Ssh,
    Scp,
    Sftp,
}

impl Client {
    fn program(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Scp => "scp",
            Self::Sftp => "sftp",
        }
    }
}

/// A real `ssh`/`scp`/`sftp` command against a test [`Sshd`], built by [`Sshd::ssh`],
/// [`Sshd::scp`] or [`Sshd::sftp`].
///
/// It ignores every ssh_config (`-F /dev/null`), offers only the given key and certificate
/// (`IdentitiesOnly yes`, `BatchMode yes`) and trusts only the pinned host key
/// (`StrictHostKeyChecking yes`, `UserKnownHostsFile`, `GlobalKnownHostsFile /dev/null`).
#[derive(Debug, Clone)]
pub struct SshCommand {
    client: Client,
    port: u16,
    destination: String,
    identity: PathBuf,
    certificate: PathBuf,
    known_hosts: PathBuf,
    options: Vec<String>,
    flags: Vec<OsString>,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl SshCommand {
    fn new(client: Client, sshd: &Sshd, login: &str, identity: &Path, certificate: &Path) -> Self {
        Self {
            client,
            port: sshd.port,
            destination: format!("{login}@{LOOPBACK}"),
            identity: identity.to_path_buf(),
            certificate: certificate.to_path_buf(),
            known_hosts: sshd.known_hosts(),
            options: Vec::new(),
            flags: Vec::new(),
            args: Vec::new(),
            stdin: None,
            timeout: CLIENT_TIMEOUT,
        }
    }

    /// Add an argument after the destination: a remote command word for `ssh`, a source or
    /// target for `scp` (`sftp` takes none).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Add several arguments, as [`Self::arg`].
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Add a client flag before the destination (like `-v`, `-T` or `-r`).
    pub fn flag(mut self, flag: impl AsRef<OsStr>) -> Self {
        self.flags.push(flag.as_ref().to_owned());
        self
    }

    /// Set `-o key=value`. It wins over the harness's own options (OpenSSH keeps the first
    /// value it reads).
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options.push(format!("{key}={value}"));
        self
    }

    /// Use another known_hosts file instead of the one pinning this sshd's key.
    pub fn known_hosts(mut self, path: &Path) -> Self {
        self.known_hosts = path.to_path_buf();
        self
    }

    /// Feed `input` on standard input (for `sftp`, the batch of commands).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kill the client and panic if it runs longer than `timeout` (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The full argument list after the program name, as it will be run.
    pub fn command_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
        out.push(
            if self.client == Client::Ssh {
                "-p"
            } else {
                "-P"
            }
            .into(),
        );
        out.push(self.port.to_string().into());
        let path_option = |key: &str, path: &Path| {
            let mut o = OsString::from(format!("{key}="));
            o.push(path.as_os_str());
            o
        };
        for option in &self.options {
            out.push("-o".into());
            out.push(option.into());
        }
        for option in [
            path_option("IdentityFile", &self.identity),
            path_option("CertificateFile", &self.certificate),
            path_option("UserKnownHostsFile", &self.known_hosts),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            "UpdateHostKeys=no".into(),
            "IdentitiesOnly=yes".into(),
            "BatchMode=yes".into(),
            "PreferredAuthentications=publickey".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}").into(),
        ] {
            out.push("-o".into());
            out.push(option);
        }
        if self.client == Client::Sftp {
            out.push("-b".into());
            out.push("-".into());
        }
        out.extend(self.flags.iter().cloned());
        out.push("--".into());
        if self.client != Client::Scp {
            out.push(self.destination.clone().into());
        }
        out.extend(self.args.iter().cloned());
        out
    }

    /// Run to completion and return what the client printed and its exit code (`ssh` exits
    /// with the remote command's code, or 255 when it could not connect or log in).
    #[track_caller]
    pub fn run(self) -> CmdOutput {
        // ssh refuses a private key other users can read.
        if let Ok(meta) = fs::metadata(&self.identity)
            && meta.permissions().mode() & 0o077 != 0
        {
            fs::set_permissions(&self.identity, fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", self.identity.display()));
        }
        let mut command = Command::new(self.client.program());
        command.args(self.command_args());
        run_process(&mut command, self.stdin, self.timeout)
    }
}

/// The unix user the tests run as (`root` in CI): the login tests use on their sshd.
///
/// With `UsePAM no`, sshd refuses accounts whose password is locked (`!` in /etc/shadow; `*`
/// is fine), and the user needs a real login shell to run commands.
pub fn current_login() -> String {
    static LOGIN: OnceLock<String> = OnceLock::new();
    LOGIN
        .get_or_init(|| {
            let out = run_process(Command::new("id").arg("-un"), None, Duration::from_secs(10));
            let name = out.stdout.trim();
            if out.success && !name.is_empty() {
                return name.to_owned();
            }
            std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| panic!("cannot tell the current user: `id -un`: {out:?}"))
        })
        .clone()
}

/// Run `ssh-keygen` with `args` (30 s limit).
pub fn ssh_keygen<I, S>(args: I) -> CmdOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_process(
        Command::new("ssh-keygen").args(args),
        None,
        Duration::from_secs(30),
    )
}

/// Make an Ed25519 key pair `dir/<name>` + `dir/<name>.pub` (no passphrase, mode 0600) and
/// return the private key's path and the public key line. Also good for a test user CA.
#[track_caller]
pub fn generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    ssh_keygen([
        OsStr::new("-q"),
        OsStr::new("-t"),
        OsStr::new("ed25519"),
        OsStr::new("-N"),
        OsStr::new(""),
        OsStr::new("-C"),
        OsStr::new(name),
        OsStr::new("-f"),
        path.as_os_str(),
    ])
    .ok();
    let line = read_key_line(&public_path(&path));
    (path, line)
}

/// What [`sign_user_key`] puts into a certificate.
#[derive(Debug, Clone)]
pub struct CertSpec<'a> {
    /// Key id (`-I`), which sshd logs as `ID <key id>`.
    pub key_id: &'a str,
    /// Principals (`-n`); empty means none (such a certificate is valid for no login).
    pub principals: &'a [&'a str],
    /// Validity interval (`-V`), like `+5m` or `20200101:20200102`.
    pub validity: &'a str,
    /// Serial number (`-z`), which sshd logs as `(serial N)` and KRLs revoke by.
    pub serial: u64,
}

/// Sign the user public key `public_key` (`….pub`) with the CA private key `ca_key` and
/// return the certificate's path (`…-cert.pub` next to it, overwriting any earlier one).
#[track_caller]
pub fn sign_user_key(ca_key: &Path, public_key: &Path, spec: &CertSpec<'_>) -> PathBuf {
    let mut args: Vec<OsString> = vec!["-q".into(), "-s".into(), ca_key.into()];
    args.extend(["-I".into(), spec.key_id.into()]);
    if !spec.principals.is_empty() {
        args.extend(["-n".into(), spec.principals.join(",").into()]);
    }
    args.extend(["-V".into(), spec.validity.into()]);
    args.extend(["-z".into(), spec.serial.to_string().into()]);
    args.push(public_key.into());
    ssh_keygen(args).ok();
    let name = public_key
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".pub").unwrap_or(&name);
    public_key.with_file_name(format!("{stem}-cert.pub"))
}

/// Write a KRL to `krl` revoking what `spec` lists (ssh-keygen's KRL spec, like `serial: 7`),
/// for certificates signed by the CA whose public key is in `ca_public_key`. The spec itself is
/// written next to `krl`, with the extension `.spec`.
#[track_caller]
pub fn write_krl(krl: &Path, ca_public_key: &Path, spec: &str) {
    let spec_path = krl.with_extension("spec");
    write_file(&spec_path, &format!("{spec}\n"));
    ssh_keygen([
        OsStr::new("-q"),
        OsStr::new("-k"),
        OsStr::new("-f"),
        krl.as_os_str(),
        OsStr::new("-s"),
        ca_public_key.as_os_str(),
        spec_path.as_os_str(),
    ])
    .ok();
}

/// The SHA256 fingerprint (`SHA256:…`) of the public key in `public_key`, as sshd logs it.
#[track_caller]
pub fn fingerprint(public_key: &Path) -> String {
    let out = ssh_keygen([OsStr::new("-l"), OsStr::new("-f"), public_key.as_os_str()]);
    out.ok()
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no fingerprint in {:?}", out.stdout))
}

/// `path` + `.pub`.
fn public_path(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

#[track_caller]
fn read_key_line(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
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

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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

fn host_pattern(port: u16) -> String {
    format!("[{LOOPBACK}]:{port}")
}

/// `sshd`: `GATEHOUSE_SSHD`, Debian's `/usr/sbin/sshd`, or the first on `PATH`.
#[track_caller]
fn sshd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEHOUSE_SSHD") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/sshd");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("sshd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "sshd not found: install openssh-server (tests/scripts/install-deps.sh does) \
                 or set GATEHOUSE_SSHD"
            )
        })
}

/// As root, sshd wants its (root-owned, not writable by others) privilege-separation
/// directory to exist even with `-t`; systemd usually creates it, containers do not.
/// Unprivileged sshd does not need it, so failures are left for `sshd -t` to report.
fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if dir.is_dir() {
        return;
    }
    if fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

/// A loopback port nobody listens on right now.
#[track_caller]
fn free_port() -> u16 {
    let listener =
        TcpListener::bind((LOOPBACK, 0)).unwrap_or_else(|e| panic!("binding a loopback port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local address: {e}"))
        .port()
}

struct StartFailure {
    message: String,
    retry: bool,
}

fn wait_until_listening(child: &mut Child, port: u16, log: &Path) -> Result<(), StartFailure> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from((LOOPBACK, port));
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(StartFailure {
                    message: format!("sshd exited before accepting connections ({status})"),
                    retry: true,
                });
            }
            Ok(None) => {}
            Err(e) => {
                return Err(StartFailure {
                    message: format!("waiting for sshd: {e}"),
                    retry: false,
                });
            }
        }
        // Wait for sshd's own word first, so the probe does not race a half-started sshd
        // that would then log a refused connection from itself.
        if read_log(log).contains("Server listening on")
            && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartFailure {
                message: format!(
                    "sshd did not accept connections on {addr} within {START_TIMEOUT:?}"
                ),
                retry: false,
            });
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Send `SIGSTOP` to `root` and every process below it until no new one shows up, and return
/// the descendants (not `root`). Without a `kill` command it returns what it found.
fn stop_tree(root: u32) -> Vec<u32> {
    let mut stopped: BTreeSet<u32> = BTreeSet::new();
    let mut batch = vec![root];
    for _round in 0..50 {
        if !signal("STOP", &batch) {
            break;
        }
        wait_stopped(&batch);
        stopped.extend(batch.iter().copied().filter(|p| *p != root));
        batch = descendants_of(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if batch.is_empty() {
            return stopped.into_iter().collect();
        }
    }
    stopped.extend(descendants_of(root));
    stopped.into_iter().collect()
}

/// `kill -<name> pids…`; false when there was nothing to do or `kill` could not run.
fn signal(name: &str, pids: &[u32]) -> bool {
    if pids.is_empty() {
        return false;
    }
    Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Wait (up to a second) until each of `pids` is stopped, a zombie or gone: `kill` returns
/// once the signal is queued, and a process may still finish a fork before it stops.
fn wait_stopped(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let settled = |pid: &u32| {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| matches!(state, "T" | "t" | "Z" | "X"))
        })
    };
    while !pids.iter().all(settled) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
}

/// Every process below `root` in the process tree (Linux `/proc`).
fn descendants_of(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut found: BTreeSet<u32> = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == parent && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found.into_iter().collect()
}

/// Run `command` with piped output, optional stdin, and a time limit (kill + panic).
#[track_caller]
fn run_process(command: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> CmdOutput {
    let program = command.get_program().to_string_lossy().into_owned();
    let shown = std::iter::once(program.clone())
        .chain(command.get_args().map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => Some(thread::spawn(move || {
            // The client may exit without reading everything; that is its business.
            let _ = pipe.write_all(&input);
        })),
        _ => None,
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{shown}`: {e}"),
        }
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("`{shown}` did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    CmdOutput {
        command: shown,
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    }
}
