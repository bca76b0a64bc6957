//! Keys, certificates and KRLs for the test hosts, all made by the real `ssh-keygen`.
//!
//! In: a directory to write to, key names, a user CA's private key and a [`CertSpec`] (key id,
//! principals, validity, serial), or an ssh-keygen KRL spec. Out: key pairs, `…-cert.pub`
//! certificates and KRL files on disk, which tests hand to [`super::SshdConfig`] (CA key lines,
//! `RevokedKeys`) and to the clients (identity, certificate), and the fingerprints sshd logs.
//! [`current_login`] names the unix user the tests log in as.

use std::{
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use super::write_file;
use crate::command::{Cmd, CmdOutput};

/// The unix user the tests run as (`root` in CI): the login tests use on their sshd.
///
/// With `UsePAM no`, sshd refuses accounts whose password is locked (`!` in /etc/shadow; `*`
/// is fine), and the user needs a real login shell to run commands.
pub fn current_login() -> String {
    static LOGIN: OnceLock<String> = OnceLock::new();
    LOGIN
        .get_or_init(|| {
            let out = Cmd::new("id")
                .arg("-un")
                .timeout(Duration::from_secs(10))
                .run();
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
    Cmd::new("ssh-keygen")
        .args(args)
        .timeout(Duration::from_secs(30))
        .run()
}

/// Make an Ed25519 key pair `dir/<name>` + `dir/<name>.pub` (no passphrase, mode 0600) and
/// return the private key's path and the public key line. Also good for a test user CA.
#[track_caller]
pub fn generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    generate_key_as(dir, name, name)
}

/// [`generate_key`] with `comment` as the public key's comment.
#[track_caller]
pub fn generate_key_as(dir: &Path, name: &str, comment: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    ssh_keygen([
        OsStr::new("-q"),
        OsStr::new("-t"),
        OsStr::new("ed25519"),
        OsStr::new("-N"),
        OsStr::new(""),
        OsStr::new("-C"),
        OsStr::new(comment),
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
pub(super) fn public_path(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

#[track_caller]
pub(super) fn read_key_line(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}
