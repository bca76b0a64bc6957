//! The sshd harness runs real OpenSSH: certificates from a trusted CA with an authorized
//! principal log in and the log names their key id; wrong principals, untrusted CAs, expired
//! and revoked certificates are refused; the host key is pinned. No control plane needed.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use gatehouse_tests::sshd::{
    CertSpec, Sshd, SshdConfig, current_login, fingerprint, generate_key, sign_user_key, write_krl,
};
use tempfile::TempDir;

const LOG_WAIT: Duration = Duration::from_secs(10);
/// The principal the test sshd accepts for the current login.
const PRINCIPAL: &str = "gatehouse-test-principal";

/// A directory with a CA and a user key pair.
struct Keys {
    dir: TempDir,
    ca: PathBuf,
    ca_public: String,
    user: PathBuf,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let (ca, ca_public) = generate_key(dir.path(), "user-ca");
        let (user, _) = generate_key(dir.path(), "user");
        Self {
            dir,
            ca,
            ca_public,
            user,
        }
    }

    fn user_public(&self) -> PathBuf {
        self.user.with_file_name("user.pub")
    }

    fn ca_public_path(&self) -> PathBuf {
        self.ca.with_file_name("user-ca.pub")
    }

    /// Sign the user key with this CA.
    fn sign(&self, key_id: &str, principals: &[&str], validity: &str, serial: u64) -> PathBuf {
        sign_user_key(
            &self.ca,
            &self.user_public(),
            &CertSpec {
                key_id,
                principals,
                validity,
                serial,
            },
        )
    }

    /// An sshd trusting this CA and accepting [`PRINCIPAL`] for the current login.
    fn sshd(&self) -> Sshd {
        Sshd::start(
            &SshdConfig::trusting(&self.ca_public).authorize(&current_login(), &[PRINCIPAL]),
        )
    }
}

/// Assert that ssh could not log in: exit 255, "Permission denied (publickey)", and the
/// remote command never ran.
#[track_caller]
fn assert_refused(out: &gatehouse_tests::CmdOutput) {
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("hello"), "{out:?}");
}

#[test]
fn certificate_with_authorized_principal_logs_in() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("alice@gatehouse-ok", &[PRINCIPAL], "+5m", 4242);
    let login = current_login();

    let out = sshd
        .ssh(&login, &keys.user, &cert)
        .arg("echo hello; exit 3")
        .run();
    assert_eq!(
        out.code,
        Some(3),
        "the remote exit code comes back: {out:?}"
    );
    assert_eq!(out.stdout, "hello\n", "{out:?}");

    sshd.expect_log(
        &format!("Accepted publickey for {login} from 127.0.0.1"),
        LOG_WAIT,
    );
    let log = sshd.log();
    let accepted = log
        .lines()
        .find(|l| l.starts_with("Accepted publickey"))
        .unwrap_or_else(|| panic!("no Accepted line:\n{log}"));
    assert!(
        accepted.contains("ID alice@gatehouse-ok (serial 4242)"),
        "{accepted}"
    );
    assert!(
        accepted.contains(&fingerprint(&keys.ca_public_path())),
        "the log names the CA: {accepted}"
    );
}

#[test]
fn certificate_without_authorized_principal_is_refused() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("wrong-principal", &["someone-else"], "+5m", 7);

    let out = sshd
        .ssh(&current_login(), &keys.user, &cert)
        .arg("echo hello")
        .run();
    assert_refused(&out);
    sshd.expect_log(
        "Certificate does not contain an authorized principal",
        LOG_WAIT,
    );
    sshd.expect_log("ID wrong-principal (serial 7)", LOG_WAIT);
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn certificate_from_untrusted_ca_is_refused() {
    let keys = Keys::new();
    let rogue = Keys::new();
    // DEBUG2 makes sshd say why the CA was not accepted.
    let sshd = Sshd::start(&SshdConfig {
        log_level: "DEBUG2".to_owned(),
        ..SshdConfig::trusting(&keys.ca_public).authorize(&current_login(), &[PRINCIPAL])
    });
    let cert = rogue.sign("rogue-ca", &[PRINCIPAL], "+5m", 9);

    let out = sshd
        .ssh(&current_login(), &rogue.user, &cert)
        .arg("echo hello")
        .run();
    assert_refused(&out);
    let rogue_ca = fingerprint(&rogue.ca_public_path());
    sshd.expect_log(&format!("CA ED25519 {rogue_ca} is not listed in"), LOG_WAIT);
    sshd.expect_log("ID rogue-ca (serial 9)", LOG_WAIT);
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn expired_certificate_is_refused() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("expired", &[PRINCIPAL], "20200101:20200102", 11);

    let out = sshd
        .ssh(&current_login(), &keys.user, &cert)
        .arg("echo hello")
        .run();
    assert_refused(&out);
    sshd.expect_log("Certificate invalid: expired", LOG_WAIT);
    sshd.expect_log("ID expired (serial 11)", LOG_WAIT);
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn host_key_is_pinned() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("pinned", &[PRINCIPAL], "+5m", 13);
    let login = current_login();

    // The harness's known_hosts holds sshd's real key: logging in works.
    let known = std::fs::read_to_string(sshd.known_hosts()).expect("reading known_hosts");
    assert_eq!(
        known.trim(),
        format!("{} {}", sshd.host_pattern(), sshd.host_key())
    );
    sshd.ssh(&login, &keys.user, &cert).arg("true").run().ok();

    // Another key for the same host and port: the client refuses before authenticating.
    let (_, impostor) = generate_key(keys.dir.path(), "impostor-host");
    let wrong: PathBuf = keys.dir.path().join("wrong_known_hosts");
    write(&wrong, &format!("{} {impostor}\n", sshd.host_pattern()));
    let out = sshd
        .ssh(&login, &keys.user, &cert)
        .known_hosts(&wrong)
        .arg("echo hello")
        .run();
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("Host key verification failed"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("hello"), "{out:?}");

    // And no entry at all is no trust either (StrictHostKeyChecking yes).
    let empty: PathBuf = keys.dir.path().join("empty_known_hosts");
    write(&empty, "");
    let out = sshd
        .ssh(&login, &keys.user, &cert)
        .known_hosts(&empty)
        .arg("echo hello")
        .run();
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr.contains("Host key verification failed"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "the client must not learn the key"
    );

    // Only the first login got through.
    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "log:\n{log}");
}

#[test]
fn revoked_serial_is_refused() {
    let keys = Keys::new();
    let krl = keys.dir.path().join("revoked.krl");
    let ca_public = keys.ca_public_path();
    // Start with a KRL revoking some other serial: serial 21 still logs in.
    write_krl(&krl, &ca_public, "serial: 20");
    let sshd = Sshd::start(&SshdConfig {
        revoked_keys: Some(krl.clone()),
        ..SshdConfig::trusting(&keys.ca_public).authorize(&current_login(), &[PRINCIPAL])
    });
    let login = current_login();
    let cert = keys.sign("soon-revoked", &[PRINCIPAL], "+5m", 21);
    let out = sshd.ssh(&login, &keys.user, &cert).arg("echo hello").run();
    assert_eq!(out.ok(), "hello\n");

    // Revoke serial 21; sshd reads the KRL at every login.
    write_krl(&krl, &ca_public, "serial: 21");
    let out = sshd.ssh(&login, &keys.user, &cert).arg("echo hello").run();
    assert_refused(&out);
    sshd.expect_log(&format!("revoked by file {}", krl.display()), LOG_WAIT);
    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "log:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("Failed publickey") && l.contains("ID soon-revoked (serial 21)")),
        "log:\n{log}"
    );
}

#[test]
fn sftp_and_scp_use_the_same_certificate() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("files", &[PRINCIPAL], "+5m", 31);
    let login = current_login();
    let local = keys.dir.path().join("local.txt");
    write(&local, "payload\n");
    let remote_dir = keys.dir.path().join("remote");
    std::fs::create_dir(&remote_dir).unwrap();

    let remote = remote_dir.join("via-scp.txt");
    sshd.scp(&login, &keys.user, &cert)
        .arg(&local)
        .arg(sshd.remote_path(&login, &remote.to_string_lossy()))
        .run()
        .ok();
    assert_eq!(read(&remote), "payload\n");

    let out = sshd
        .sftp(&login, &keys.user, &cert)
        .stdin(format!(
            "put {} {}\nls {}\n",
            local.display(),
            remote_dir.join("via-sftp.txt").display(),
            remote_dir.display()
        ))
        .run();
    assert!(out.ok().contains("via-sftp.txt"), "{out:?}");
    assert_eq!(read(&remote_dir.join("via-sftp.txt")), "payload\n");
    // scp (OpenSSH >= 9) and sftp both went through the sftp subsystem.
    sshd.expect_log("Starting session: subsystem 'sftp'", LOG_WAIT);
    let log = sshd.log();
    assert_eq!(
        log.matches("Starting session: subsystem 'sftp'").count(),
        2,
        "log:\n{log}"
    );
}

#[test]
fn drop_stops_sshd() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let port = sshd.port();
    let pid = sshd.pid();
    let dir = sshd.dir().to_path_buf();
    assert!(std::net::TcpStream::connect(sshd.addr()).is_ok());
    drop(sshd);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sshd (pid {pid}) survived the drop"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after drop"
    );
    assert!(!dir.exists(), "{} survived the drop", dir.display());
}

#[test]
fn drop_ends_live_sessions() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("long-session", &[PRINCIPAL], "+5m", 41);
    // A remote command nobody else runs, to find it among all processes.
    let marker = format!("sleep {}", 100_000 + u32::from(sshd.port()));
    let client = sshd
        .ssh(&current_login(), &keys.user, &cert)
        .arg(format!("echo started; exec {marker}"));
    let session = std::thread::spawn(move || client.run());
    sshd.expect_log("Starting session: command", LOG_WAIT);
    assert!(
        wait_until(|| running(&marker)),
        "the remote {marker:?} never started"
    );

    drop(sshd);
    let out = session.join().expect("ssh thread panicked");
    assert_eq!(out.code, Some(255), "the connection was cut: {out:?}");
    assert_eq!(out.stdout, "started\n", "{out:?}");
    assert!(
        wait_until(|| !running(&marker)),
        "{marker:?} outlived the sshd that started it"
    );
}

/// Poll `check` for up to 10 seconds.
fn wait_until(check: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Whether a live process has exactly this command line (arguments joined by spaces).
fn running(command_line: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|raw| {
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.join(" ") == command_line
        })
}

#[test]
#[should_panic(expected = "sshd refuses the generated config")]
fn invalid_config_fails_before_start() {
    let keys = Keys::new();
    let _sshd = Sshd::start(&SshdConfig {
        extra_config: vec!["NoSuchDirective yes".to_owned()],
        ..SshdConfig::trusting(&keys.ca_public)
    });
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The baseline the proxy copies (`proxy_clients.rs`): OpenSSH's sshd given a certificate
/// without `permit-pty`. A plain interactive `ssh host` prints `PTY allocation request failed`
/// and its shell runs without a pty to the end; `ssh -tt` (RequestTTY force) makes the client
/// end with 255 at the refusal, for an exec and for a shell alike.
/// The logged-in shell runs in the account's working directory but with an empty HOME of
/// this sshd's own, so no dotfile of the machine's user (root's `~/.bashrc` with `pyenv init`
/// on these machines, which hangs on a stale lock) runs in a target's shell.
#[test]
fn the_targets_shell_has_an_empty_home_of_its_own() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    let cert = keys.sign("alice@home", &[PRINCIPAL], "+5m", 7);
    let out = sshd
        .ssh(&current_login(), &keys.user, &cert)
        .arg("echo \"$HOME\"; ls -A \"$HOME\" | wc -l")
        .run();
    assert_eq!(out.code, Some(0), "{out:?}");
    let home = sshd.dir().join("login-home");
    assert_eq!(out.stdout, format!("{}\n0\n", home.display()), "{out:?}");
}

#[test]
fn sshd_without_permit_pty_runs_the_shell_without_one_and_ends_ssh_tt() {
    let keys = Keys::new();
    let sshd = keys.sshd();
    gatehouse_tests::sshd::ssh_keygen([
        "-q".as_ref(),
        "-s".as_ref(),
        keys.ca.as_os_str(),
        "-I".as_ref(),
        "no-pty".as_ref(),
        "-n".as_ref(),
        PRINCIPAL.as_ref(),
        "-V".as_ref(),
        "+5m".as_ref(),
        "-O".as_ref(),
        "clear".as_ref(),
        keys.user_public().as_os_str(),
    ])
    .ok();
    let cert = keys.user.with_file_name("user-cert.pub");
    let login = current_login();
    let pty_script = |steps: serde_json::Value| {
        gatehouse_tests::Cmd::new("python3")
            .arg(gatehouse_tests::repo_root().join("tests/scripts/pty-session.py"))
            .arg(steps.to_string())
            .arg("--")
    };

    let out = sshd
        .ssh(&login, &keys.user, &cert)
        .timeout(Duration::from_secs(30))
        .into_cmd_under(Some(pty_script(serde_json::json!([
            {"expect": "PTY allocation request failed"},
            {"send": "echo shell-$((6*7)); tty || true\n"},
            {"expect": "shell-42"},
            {"send": "exit 4\n"},
        ]))))
        .run();
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("not a tty"), "{}", out.stdout);

    for args in [&["tty"][..], &[][..]] {
        let out = sshd
            .ssh(&login, &keys.user, &cert)
            .args(args)
            .flag("-tt")
            .timeout(Duration::from_secs(30))
            .into_cmd_under(Some(pty_script(serde_json::json!([
                {"expect": "PTY allocation request failed"}
            ]))))
            .run();
        assert!(
            out.stdout.contains("PTY allocation request failed"),
            "ssh -tt {args:?}: {out:?}"
        );
        assert_eq!(out.code, Some(255), "ssh -tt {args:?}: {out:?}");
    }
}
