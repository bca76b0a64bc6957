//! The one way the harness runs a program to completion: `kubectl`, `helm`, `ssh`/`scp`/`sftp`,
//! `ssh-keygen`, `curl`, `sshd -t`, `make`, `control-plane.sh`.
//!
//! In: a [`Cmd`] (program, arguments, environment, standard input as bytes, a stream or a pipe
//! held open, and a time limit). Out: a [`CmdOutput`] with the exit code and everything the
//! program printed, and a command line fit for messages (file names only for programs, no
//! kubeconfig paths). Output is read on threads while the program runs, so neither a chatty
//! program nor a large stdin can deadlock it. [`Cmd::spawn`] gives a [`Running`] command for
//! tests that act while it runs; [`Cmd::run_visible`] lets the user watch (`make up`).

use std::{
    ffi::{OsStr, OsString},
    fmt,
    io::{BufWriter, Read, Write},
    path::Path,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Mutex, PoisonError},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a command may run unless told otherwise (`helm install` is the slowest).
const DEFAULT_LIMIT: Duration = Duration::from_secs(300);
/// Arguments whose value is a path nobody needs to read in a message.
const HIDDEN_VALUES: [&str; 2] = ["--kubeconfig", "--cache-dir"];

/// What the command reads on standard input.
enum Input {
    Null,
    /// In a mutex only so that a `Cmd` (and what holds one) stays `Sync`.
    Stream(Mutex<Box<dyn Read + Send>>),
    /// A pipe left open until the command ends (`ssh -W`, idle interactive sessions).
    Open,
}

/// What happens when the time limit passes.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Kill the command and panic with what it printed.
    Panic(Duration),
    /// Kill the command and return what it printed (`timed_out`).
    Kill(Duration),
}

impl Limit {
    fn duration(self) -> Duration {
        match self {
            Self::Panic(limit) | Self::Kill(limit) => limit,
        }
    }
}

/// A program to run, built up with arguments, environment, stdin and a time limit.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    input: Input,
    limit: Limit,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cmd").field(&self.command_line()).finish()
    }
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// What was run, for messages.
    pub command: String,
    /// Whether it exited 0.
    pub success: bool,
    /// Its exit code, if it exited (not when a signal or the time limit ended it).
    pub code: Option<i32>,
    /// Whether [`Cmd::kill_after`]'s limit ended it.
    pub timed_out: bool,
    /// Standard output, as text (lossy).
    pub stdout: String,
    /// Standard output, byte for byte.
    pub stdout_bytes: Vec<u8>,
    /// Standard error, as text (lossy).
    pub stderr: String,
}

impl CmdOutput {
    /// Panic with everything the command printed unless it succeeded; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.success,
            "`{}` failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Panic unless the command failed and its stderr contains every one of `needles`.
    #[track_caller]
    pub fn fails_with(&self, needles: &[&str]) {
        assert!(
            !self.success,
            "`{}` succeeded but should have failed\nstdout:\n{}",
            self.command, self.stdout
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "`{}` failed, but its error lacks {needle:?}\nstderr:\n{}",
                self.command,
                self.stderr
            );
        }
    }
}

impl Cmd {
    /// A command running `program` (a path, or a name looked up on `PATH`).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            input: Input::Null,
            limit: Limit::Panic(DEFAULT_LIMIT),
        }
    }

    /// Add an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Self::arg)
    }

    /// Set an environment variable (the rest of the environment is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Set environment variables.
    pub fn envs<I, K, V>(self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter().fold(self, |cmd, (k, v)| cmd.env(k, v))
    }

    /// Feed `input` on standard input, then close it.
    pub fn stdin(self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin_from(std::io::Cursor::new(input.into()))
    }

    /// Stream standard input from `reader` (like 1 GiB from `io::repeat`), then close it.
    pub fn stdin_from(mut self, reader: impl Read + Send + 'static) -> Self {
        self.input = Input::Stream(Mutex::new(Box::new(reader)));
        self
    }

    /// Keep standard input open, with nothing on it, until the command ends.
    pub fn stdin_open(mut self) -> Self {
        self.input = Input::Open;
        self
    }

    /// Kill the command and panic if it runs longer than `limit` (default 5 minutes).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.limit = Limit::Panic(limit);
        self
    }

    /// Kill the command after `limit` and return what it printed, with `timed_out` set.
    pub fn kill_after(mut self, limit: Duration) -> Self {
        self.limit = Limit::Kill(limit);
        self
    }

    /// The command line for messages: the program's file name, then the arguments (quoted
    /// when they hold white space), without the paths of `--kubeconfig` and `--cache-dir`.
    pub fn command_line(&self) -> String {
        let program = Path::new(&self.program)
            .file_name()
            .unwrap_or(&self.program)
            .to_string_lossy()
            .into_owned();
        let mut shown = vec![program];
        let mut hide_next = false;
        for arg in &self.args {
            let arg = arg.to_string_lossy();
            if std::mem::take(&mut hide_next) {
                continue;
            }
            if HIDDEN_VALUES.contains(&arg.as_ref()) {
                hide_next = true;
                continue;
            }
            if HIDDEN_VALUES
                .iter()
                .any(|flag| arg.starts_with(&format!("{flag}=")))
            {
                continue;
            }
            shown.push(if arg.is_empty() || arg.contains(char::is_whitespace) {
                format!("'{arg}'")
            } else {
                arg.into_owned()
            });
        }
        shown.join(" ")
    }

    /// The `std` command: program, arguments and environment (for the process supervisor).
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().cloned());
        command
    }

    /// Run to completion and return what it printed.
    #[track_caller]
    pub fn run(self) -> CmdOutput {
        self.spawn().wait()
    }

    /// Start it; [`Running::wait`] collects the output.
    #[track_caller]
    pub fn spawn(self) -> Running {
        let shown = self.command_line();
        let mut command = self.command();
        command
            .stdin(match self.input {
                Input::Null => Stdio::null(),
                Input::Stream(_) | Input::Open => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        let pipe = child.stdin.take();
        let (writer, held_stdin) = match (self.input, pipe) {
            (Input::Stream(reader), Some(pipe)) => (
                Some(thread::spawn(move || {
                    let mut reader = reader.into_inner().unwrap_or_else(PoisonError::into_inner);
                    // The program may exit without reading everything; that is its business.
                    let mut pipe = BufWriter::with_capacity(1 << 20, pipe);
                    let _ = std::io::copy(&mut reader, &mut pipe);
                    let _ = pipe.flush();
                })),
                None,
            ),
            (_, pipe) => (None, pipe),
        };
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        Running {
            child,
            command: shown,
            limit: self.limit,
            started: Instant::now(),
            writer,
            held_stdin,
            stdout,
            stderr,
        }
    }

    /// Run with the terminal's stdout and stderr (for steps the user watches, like builds) and
    /// return whether it exited 0. Standard input is closed; the time limit applies.
    #[track_caller]
    pub fn run_visible(self) -> bool {
        let shown = self.command_line();
        let limit = self.limit.duration();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        let status = wait_until(&mut child, Instant::now() + limit, &shown);
        status
            .unwrap_or_else(|| panic!("`{shown}` did not finish within {limit:?}"))
            .success()
    }
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Wait for `child` until `deadline`; kill it (and return None) when the deadline passes.
#[track_caller]
fn wait_until(child: &mut Child, deadline: Instant, shown: &str) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{shown}`: {e}"),
        }
    }
}

/// A started [`Cmd`].
#[derive(Debug)]
pub struct Running {
    child: Child,
    command: String,
    limit: Limit,
    started: Instant,
    writer: Option<JoinHandle<()>>,
    held_stdin: Option<ChildStdin>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (its output is still there for [`Self::wait`]).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kill it now and return what it printed.
    pub fn kill(mut self) -> CmdOutput {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.collect(status)
    }

    /// Wait for it to exit (within the command's time limit) and return what it printed.
    #[track_caller]
    pub fn wait(mut self) -> CmdOutput {
        let limit = self.limit.duration();
        let status = wait_until(&mut self.child, self.started + limit, &self.command);
        let panics = matches!(self.limit, Limit::Panic(_));
        let out = self.collect(status);
        if out.timed_out && panics {
            panic!(
                "`{}` did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                out.command, out.stdout, out.stderr
            );
        }
        out
    }

    /// Close stdin, wait for the output threads and put it all together.
    fn collect(mut self, status: Option<ExitStatus>) -> CmdOutput {
        drop(self.held_stdin.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let stdout_bytes = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        CmdOutput {
            command: self.command,
            success: status.is_some_and(|s| s.success()),
            code: status.and_then(|s| s.code()),
            timed_out: status.is_none(),
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_stdin_env_and_exit_code() {
        let out = Cmd::new("sh")
            .args([
                "-c",
                "read line; echo \"$line $GREETING\"; echo err >&2; exit 3",
            ])
            .env("GREETING", "world")
            .stdin("hello\n")
            .run();
        assert_eq!(out.code, Some(3));
        assert!(!out.success);
        assert_eq!(out.stdout, "hello world\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn kill_after_returns_what_was_printed() {
        let out = Cmd::new("sh")
            .args(["-c", "echo started; exec sleep 30"])
            .kill_after(Duration::from_millis(500))
            .run();
        assert!(out.timed_out);
        assert_eq!(out.code, None);
        assert_eq!(out.stdout, "started\n");
    }

    #[test]
    fn streams_large_input() {
        let bytes = 8u64 << 20;
        let out = Cmd::new("wc")
            .arg("-c")
            .stdin_from(std::io::repeat(b'x').take(bytes))
            .run();
        assert_eq!(out.ok().trim(), bytes.to_string());
    }

    #[test]
    fn the_command_line_leaves_out_kubeconfig_paths() {
        let cmd = Cmd::new("/opt/tools/kubectl")
            .args(["--kubeconfig", "/plane/kubeconfigs/alice.kubeconfig"])
            .args(["--cache-dir=/plane/cache", "apply", "-f", "two words"]);
        assert_eq!(cmd.command_line(), "kubectl apply -f 'two words'");
    }
}
