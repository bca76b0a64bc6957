//! The operating-system side of a test sshd's life.
//!
//! In: `GATEHOUSE_SSHD` or the installed sshd, the kernel's free loopback ports, sshd's log
//! file and Linux `/proc`. Out: the sshd binary to run, a privilege-separation directory when
//! running as root, a port to listen on, word that the started sshd accepts connections (or a
//! [`StartFailure`] saying why not), and, on drop, a frozen then killed sshd process tree
//! including the per-connection children that escaped its process group.

use std::{
    collections::BTreeSet,
    fs,
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{LOOPBACK, START_TIMEOUT, read_log};

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

pub(super) use crate::net::free_port;

pub(super) struct StartFailure {
    pub(super) message: String,
    pub(super) retry: bool,
}

pub(super) fn wait_until_listening(
    child: &mut Child,
    port: u16,
    log: &Path,
) -> Result<(), StartFailure> {
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
pub(super) fn stop_tree(root: u32) -> Vec<u32> {
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
pub(super) fn signal(name: &str, pids: &[u32]) -> bool {
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
