//! The OpenSSH clients (`ssh`, `scp`, `sftp`) run against a test [`Sshd`].
//!
//! In: the sshd's port and pinned known_hosts file, a login, a private key and certificate
//! from [`super::keys`], plus whatever flags, options, arguments and stdin the test adds to an
//! [`SshCommand`]. Out: a [`CmdOutput`] with the client's exit code, stdout and stderr.
//! [`run_process`] (piped output, optional stdin, hard time limit) also runs `sshd -t`, `id`
//! and `ssh-keygen` for the rest of the module.

use std::{
    ffi::{OsStr, OsString},
    fs,
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{LOOPBACK, Sshd};
use crate::CmdOutput;

/// Default limit on a whole client command (the client's own `ConnectTimeout` is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// `ConnectTimeout` given to the clients, in seconds.
const CONNECT_TIMEOUT_SECS: u32 = 10;

/// Which OpenSSH client an [`SshCommand`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Client {
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
    pub(super) fn new(
        client: Client,
        sshd: &Sshd,
        login: &str,
        identity: &Path,
        certificate: &Path,
    ) -> Self {
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

/// Run `command` with piped output, optional stdin, and a time limit (kill + panic).
#[track_caller]
pub(super) fn run_process(
    command: &mut Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> CmdOutput {
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
