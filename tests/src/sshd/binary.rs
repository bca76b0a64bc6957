//! What the operating system must provide for a test sshd.
//!
//! In: `GATEHOUSE_SSHD` or the installed sshd, and whether the tests run as root. Out: the sshd
//! binary to run, and the privilege-separation directory a root sshd insists on.

use std::{fs, os::unix::fs::PermissionsExt, path::Path, path::PathBuf};

/// Where Debian's sshd (built with privilege separation) wants its chroot directory as root.
const PRIVSEP_DIR: &str = "/run/sshd";

/// `sshd`: `GATEHOUSE_SSHD`, Debian's `/usr/sbin/sshd`, or the first on `PATH`.
#[track_caller]
pub(super) fn sshd_binary() -> PathBuf {
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
pub(super) fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if dir.is_dir() {
        return;
    }
    if fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}
