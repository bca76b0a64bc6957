//! The one supervisor for the long-running processes the harness starts: the operator, the
//! proxy, MinIO and sshd.
//!
//! In: a [`Spec`] (program, arguments, environment, log file) and a [`Ready`] probe (HTTP 200
//! on a path, a TCP accept, a line in the log) with a time limit. Out: a running [`Process`]
//! whose stdout and stderr go to the log; failures panic with the log's last lines. It can be
//! restarted, stopped with SIGTERM (SIGKILL after a grace period), killed, or detached with a
//! pid file that `control-plane.sh down` stops it by. Dropped, it freezes and kills its whole
//! process tree: sshd's per-connection children call `setsid()`, so no process group covers
//! them, and they are reparented as soon as the listener dies.

use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    command::Cmd,
    net::{LOOPBACK, free_port, http_get_at},
};

/// How often a start is tried on new ports when another process took one first.
const PORT_ATTEMPTS: usize = 5;
/// How a program says it could not bind a port (Rust, Go and OpenSSH alike, in any case).
const PORT_TAKEN: &str = "address already in use";
/// How many log lines a failure shows from the end (and from the start of a start's log).
const TAIL_LINES: usize = 40;
/// How many lines from its start a failure to start shows, when the log is longer: where a
/// program says why it exits, before a backtrace fills the end.
const HEAD_LINES: usize = 20;

/// What to run (a [`Cmd`]'s program, arguments and environment; its stdin and time limit do
/// not apply), what to call it in messages, and where its output goes.
#[derive(Debug)]
pub struct Spec {
    name: String,
    cmd: Cmd,
    log: PathBuf,
    fresh_log: bool,
    own_process_group: bool,
}

impl Spec {
    /// `cmd`, called `name` in messages ("the operator"), logging to `log` (appended to).
    pub fn new(name: &str, cmd: Cmd, log: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            cmd,
            log: log.into(),
            fresh_log: false,
            own_process_group: false,
        }
    }

    /// Empty the log at every start (for probes that read it).
    pub fn fresh_log(mut self) -> Self {
        self.fresh_log = true;
        self
    }

    /// Start it in a process group of its own, as a daemon to be [`Process::detach`]ed: the
    /// terminal's Ctrl-C does not reach it, and `control-plane.sh down` signals the group.
    pub fn daemon(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// One readiness check.
#[derive(Debug, Clone)]
enum Probe {
    Http { addr: SocketAddr, path: String },
    Tcp(SocketAddr),
    LogLine(String),
}

impl Probe {
    fn passes(&self, log: &Path) -> bool {
        match self {
            Self::Http { addr, path } => {
                http_get_at(*addr, path).is_some_and(|(code, _)| code == 200)
            }
            Self::Tcp(addr) => TcpStream::connect_timeout(addr, Duration::from_millis(500)).is_ok(),
            Self::LogLine(needle) => read_text(log).contains(needle.as_str()),
        }
    }
}

/// When a started process counts as ready: every probe passes, checked in order, within a time
/// limit (default 60 s).
#[derive(Debug, Clone)]
pub struct Ready {
    probes: Vec<Probe>,
    timeout: Duration,
}

impl Ready {
    /// `GET path` on loopback `port` answers 200.
    pub fn http(port: u16, path: &str) -> Self {
        Self::http_at(SocketAddr::from((LOOPBACK, port)), path)
    }

    /// `GET path` on `addr` answers 200.
    pub fn http_at(addr: SocketAddr, path: &str) -> Self {
        Self::with(Probe::Http {
            addr,
            path: path.to_owned(),
        })
    }

    /// `addr` accepts a TCP connection.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::with(Probe::Tcp(addr))
    }

    /// The log contains `needle`.
    pub fn log_line(needle: &str) -> Self {
        Self::with(Probe::LogLine(needle.to_owned()))
    }

    fn with(probe: Probe) -> Self {
        Self {
            probes: vec![probe],
            timeout: Duration::from_secs(60),
        }
    }

    /// Also require `other`'s probes, after these.
    pub fn and(mut self, other: Ready) -> Self {
        self.probes.extend(other.probes);
        self
    }

    /// Give up after `timeout`.
    pub fn within(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why a process did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// How it exited, if it exited before it was ready (else it was still not ready in time).
    pub exited: Option<ExitStatus>,
    /// What went wrong, naming the process and its log.
    pub message: String,
    /// Its whole log.
    pub log: String,
}

impl StartFailure {
    /// The message and the log: its first and last lines when it is long.
    pub fn report(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        let shown = if lines.len() <= HEAD_LINES + TAIL_LINES {
            self.log.clone()
        } else {
            format!(
                "{}\n…\n{}",
                lines[..HEAD_LINES].join("\n"),
                tail(&self.log, TAIL_LINES)
            )
        };
        format!("{}:\n{shown}", self.message)
    }
}

/// A process started from a [`Spec`]; killed with its process tree when dropped, unless detached.
#[derive(Debug)]
pub struct Process {
    spec: Spec,
    ready: Ready,
    child: Option<Child>,
}

impl Process {
    /// Start a process on `N` free loopback ports ([`free_port`]): `build` makes its spec and
    /// readiness for them. A port can be taken between the probe and the program's own bind;
    /// when the program exits saying so, it is started again on new ports.
    pub fn start_on_free_ports<const N: usize>(
        build: impl FnMut([u16; N]) -> (Spec, Ready),
    ) -> (Self, [u16; N]) {
        Self::try_start_on_free_ports(build)
            .unwrap_or_else(|failure| panic!("{}", failure.report()))
    }

    /// [`Self::start_on_free_ports`], returning the last failure.
    pub fn try_start_on_free_ports<const N: usize>(
        mut build: impl FnMut([u16; N]) -> (Spec, Ready),
    ) -> Result<(Self, [u16; N]), StartFailure> {
        let mut attempt = 1;
        loop {
            let ports = std::array::from_fn(|_| free_port());
            let (spec, ready) = build(ports);
            match Self::try_start(spec, ready) {
                Ok(process) => return Ok((process, ports)),
                Err(failure)
                    if attempt < PORT_ATTEMPTS
                        && failure.exited.is_some()
                        && failure.log.to_lowercase().contains(PORT_TAKEN) =>
                {
                    attempt += 1;
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Start it and wait until it is ready; panic with its log's end when it is not.
    #[track_caller]
    pub fn start(spec: Spec, ready: Ready) -> Self {
        Self::try_start(spec, ready).unwrap_or_else(|failure| panic!("{}", failure.report()))
    }

    /// Start it and wait until it is ready; on failure it is killed and the failure returned.
    pub fn try_start(spec: Spec, ready: Ready) -> Result<Self, StartFailure> {
        let mut process = Self {
            spec,
            ready,
            child: None,
        };
        process.try_restart().map(|()| process)
    }

    /// Start it again (same program, arguments, environment and log), and wait until ready.
    #[track_caller]
    pub fn restart(&mut self) {
        self.try_restart()
            .unwrap_or_else(|failure| panic!("{}", failure.report()));
    }

    fn try_restart(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "{} already runs", self.spec.name);
        let spec = &self.spec;
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .append(!spec.fresh_log)
            .truncate(spec.fresh_log)
            .open(&spec.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", spec.log.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", spec.log.display()));
        let mut command = spec.cmd.command();
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        if spec.own_process_group {
            command.process_group(0);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} (`{}`): {e}",
                spec.name,
                spec.cmd.command_line()
            )
        });
        self.child = Some(child);
        self.wait_ready().inspect_err(|_| self.kill())
    }

    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + self.ready.timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(self.failure(
                    Some(status),
                    format!("{} exited ({status}) before it was ready", self.spec.name),
                ));
            }
            if self.ready.probes.iter().all(|p| p.passes(&self.spec.log)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let message = format!(
                    "{} did not become ready within {:?}",
                    self.spec.name, self.ready.timeout
                );
                return Err(self.failure(None, message));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn failure(&self, exited: Option<ExitStatus>, message: String) -> StartFailure {
        StartFailure {
            exited,
            message: format!("{message} (log: {})", self.spec.log.display()),
            log: self.log_text(),
        }
    }

    /// Send SIGTERM and return at once (a leader stepping down while the test watches).
    pub fn send_sigterm(&self) {
        if let Some(pid) = self.pid() {
            signal("TERM", &[pid]);
        }
    }

    /// Stop it with SIGTERM, as Kubernetes stops a pod, and wait up to `grace` for it to exit.
    /// Returns how it exited, or None when it had to be killed (or was not running).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = self.pid()?;
        signal("TERM", &[pid]);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Kill it and everything it started with SIGKILL (no chance to clean up), and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Freeze the whole tree first: a stopped process cannot fork a child we would miss.
            let tree = stop_tree(child.id());
            let _ = child.kill();
            let _ = child.wait();
            signal("KILL", &tree);
        }
    }

    /// Leave it running after this handle is gone, recording its pid in `pid_file` (where
    /// `control-plane.sh down` finds what to stop). Returns the pid.
    pub fn detach(mut self, pid_file: &Path) -> u32 {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.spec.name));
        fs::write(pid_file, format!("{pid}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", pid_file.display()));
        self.child = None;
        pid
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        read_text(&self.spec.log)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), TAIL_LINES)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A file's text (lossy), or "" when it cannot be read.
pub(crate) fn read_text(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `kill -<name> pids…`, ignoring processes that are already gone.
fn signal(name: &str, pids: &[u32]) {
    if !pids.is_empty() {
        Cmd::new("kill")
            .arg(format!("-{name}"))
            .args(pids.iter().map(u32::to_string))
            .run();
    }
}

/// Send `SIGSTOP` to `root` and every process below it until no new one shows up, and return
/// the descendants (not `root`).
fn stop_tree(root: u32) -> Vec<u32> {
    let mut stopped: BTreeSet<u32> = BTreeSet::new();
    let mut batch = vec![root];
    for _round in 0..50 {
        signal("STOP", &batch);
        wait_stopped(&batch);
        stopped.extend(batch.iter().copied().filter(|p| *p != root));
        batch = descendants_of(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if batch.is_empty() {
            break;
        }
    }
    stopped.extend(descendants_of(root));
    stopped.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(dir: &Path, script: &str) -> Spec {
        Spec::new(
            "the test shell",
            Cmd::new("sh").args(["-c", script]),
            dir.join("sh.log"),
        )
    }

    #[test]
    fn waits_for_a_log_line_and_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        // A child that escapes the process group, as sshd's per-connection processes do.
        let mut process = Process::start(
            shell(dir.path(), "setsid sleep 300 & echo listening; wait"),
            Ready::log_line("listening").within(Duration::from_secs(10)),
        );
        let pid = process.pid().unwrap();
        let tree = descendants_of(pid);
        assert!(!tree.is_empty());
        process.kill();
        thread::sleep(Duration::from_millis(100));
        for pid in tree.iter().chain([&pid]) {
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                state.is_empty() || state.contains(") Z"),
                "{pid} survived: {state}"
            );
        }
    }

    #[test]
    fn a_port_taken_by_someone_else_is_retried_on_new_ports() {
        let dir = tempfile::tempdir().unwrap();
        let tried = dir.path().join("tried");
        let mut ports = Vec::new();
        let (_process, [port]) = Process::start_on_free_ports(|[port]| {
            ports.push(port);
            let script = format!(
                "if [ -e {tried} ]; then echo listening; exec sleep 300; fi; touch {tried}; \
                 echo 'bind: Address already in use' >&2; exit 1",
                tried = tried.display()
            );
            let spec = Spec::new(
                "the test shell",
                Cmd::new("sh").args(["-c", &script]),
                dir.path().join("sh.log"),
            )
            .fresh_log();
            (spec, Ready::log_line("listening"))
        });
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert_eq!(ports[1], port);
    }

    #[test]
    fn an_early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let failure = Process::try_start(
            shell(dir.path(), "echo cannot bind >&2; exit 4"),
            Ready::log_line("never"),
        )
        .unwrap_err();
        assert_eq!(failure.exited.and_then(|s| s.code()), Some(4));
        assert!(
            failure.report().contains("the test shell exited"),
            "{}",
            failure.report()
        );
        assert!(
            failure.report().contains("cannot bind"),
            "{}",
            failure.report()
        );
    }

    #[test]
    fn sigterm_stops_and_detach_writes_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Process::start(
            shell(
                dir.path(),
                "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done",
            ),
            Ready::log_line("up"),
        );
        assert!(process.rss_kib().is_some_and(|kib| kib > 0));
        let status = process.stop(Duration::from_secs(5)).unwrap();
        assert!(status.success(), "{status}");
        assert!(process.pid().is_none());

        let detached = Process::start(
            shell(dir.path(), "echo up; sleep 300"),
            Ready::log_line("up"),
        );
        let pid_file = dir.path().join("sh.pid");
        let pid = detached.detach(&pid_file);
        assert_eq!(
            fs::read_to_string(&pid_file).unwrap().trim(),
            pid.to_string()
        );
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "detached, it runs on"
        );
        signal("KILL", &[pid]);
    }
}
