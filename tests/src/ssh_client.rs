//! The real OpenSSH clients (`ssh`, `scp`, `sftp`) with a key and a certificate, against any SSH
//! server the harness runs: a test [`crate::sshd::Sshd`] or the Gatehouse proxy.
//!
//! In: the server's address (loopback, or the real node's) and port and a known_hosts file pinning its key, a login, a private
//! key and certificate, plus whatever flags, options, arguments and stdin the test adds. Out: a
//! [`Cmd`] for the one command runner, whose [`CmdOutput`] has the client's exit code (`ssh`
//! exits with the remote command's code, or 255 when it could not connect or log in).

use std::{
    ffi::{OsStr, OsString},
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::command::{Cmd, CmdOutput, Running};

/// Default limit on a whole client command (the client's own `ConnectTimeout` is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// `ConnectTimeout` given to the clients, in seconds.
const CONNECT_TIMEOUT_SECS: u32 = 10;

/// Which OpenSSH client an [`SshCommand`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `ssh`.
    Ssh,
    /// `scp` (OpenSSH ≥ 9 copies over the SFTP subsystem).
    Scp,
    /// `sftp -b -`: the batch of commands comes from stdin.
    Sftp,
}

impl Client {
    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Scp => "scp",
            Self::Sftp => "sftp",
        }
    }
}

/// Where a client connects: an address and port, and the known_hosts file pinning its host key.
#[derive(Debug, Clone)]
pub struct Server {
    /// The address (loopback, or the real node's address).
    pub address: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// A known_hosts file that pins the server's key.
    pub known_hosts: PathBuf,
}

/// A real `ssh`/`scp`/`sftp` command with a key and certificate.
///
/// It ignores every ssh_config (`-F /dev/null`), offers only the given key and certificate
/// (`IdentitiesOnly yes`, `IdentityAgent none`, `BatchMode yes`) and trusts only the pinned host
/// key (`StrictHostKeyChecking yes`, `UserKnownHostsFile`, `GlobalKnownHostsFile /dev/null`).
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
    /// `client` as `login` on `server`, with `identity` (private key) and `certificate`.
    pub fn new(
        client: Client,
        server: &Server,
        login: &str,
        identity: &Path,
        certificate: &Path,
    ) -> Self {
        Self {
            client,
            port: server.port,
            destination: format!("{login}@{}", server.address),
            identity: identity.to_path_buf(),
            certificate: certificate.to_path_buf(),
            known_hosts: server.known_hosts.clone(),
            options: Vec::new(),
            flags: Vec::new(),
            args: Vec::new(),
            stdin: None,
            timeout: CLIENT_TIMEOUT,
        }
    }

    /// Add an argument after the destination: a remote command word for `ssh`, a source or
    /// target for `scp` (`sftp` takes none).
    pub fn arg(self, arg: impl AsRef<OsStr>) -> Self {
        self.args([arg])
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

    /// Add a client flag before the destination (like `-v`, `-tt`, `-r` or `-W host:port`).
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

    /// Use another known_hosts file instead of the one pinning the server's key.
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

    /// The program: `ssh`, `scp` or `sftp`.
    pub fn program(&self) -> &'static str {
        self.client.program()
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
            "IdentityAgent=none".into(),
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

    /// The command for the one runner: the client, or `wrapper` followed by the client's
    /// command line (like `pty-session.py STEPS --`).
    pub fn into_cmd_under(self, wrapper: Option<Cmd>) -> Cmd {
        // ssh refuses a private key other users can read.
        if let Ok(meta) = fs::metadata(&self.identity)
            && meta.permissions().mode() & 0o077 != 0
        {
            fs::set_permissions(&self.identity, fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", self.identity.display()));
        }
        let args = self.command_args();
        let cmd = match wrapper {
            Some(wrapper) => wrapper.arg(self.program()),
            None => Cmd::new(self.program()),
        };
        let cmd = cmd.args(args).timeout(self.timeout);
        match self.stdin {
            Some(input) => cmd.stdin(input),
            None => cmd,
        }
    }

    /// The command for the one runner.
    pub fn into_cmd(self) -> Cmd {
        self.into_cmd_under(None)
    }

    /// Run to completion and return what the client printed and its exit code.
    #[track_caller]
    pub fn run(self) -> CmdOutput {
        self.into_cmd().run()
    }

    /// Start it; [`Running::wait`] collects what it printed.
    #[track_caller]
    pub fn spawn(self) -> Running {
        self.into_cmd().spawn()
    }
}
