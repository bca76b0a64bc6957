//! OpenSSH clients as people configure them, against the proxy (issue 20 §4): the real `ssh`
//! with the options engineers carry in their ssh_config (`ForwardAgent`, `ForwardX11`,
//! `SetEnv`, `ServerAliveInterval`, `Compression`, `RequestTTY`, `ControlMaster`), through
//! `gatehouse-proxy` to a real `sshd`. The proxy must answer channel requests exactly as
//! OpenSSH's sshd does: reply only when asked to, one reply per request, a declined pty runs the
//! session without one, and at most ten sessions share one connection.

use std::time::{Duration, Instant};

use gatehouse_tests::{Cmd, proxied_world::ProxiedWorld, repo_root, wait_for};
use serde_json::json;

/// `ssh -A` (or `ForwardAgent yes`) with a real agent: the exec runs, and no agent reaches the
/// target. Then each common ssh_config option, one exec each.
#[tokio::test]
async fn agent_forwarding_and_common_client_options_work_through_the_proxy() {
    let w = ProxiedWorld::with_local_store("clients-opts").await;
    let cert = w.issue(w.request("opts")).await;
    let user = format!("{}@db1", w.login);

    let sock = w.dir.path().join("agent.sock");
    let agent = Cmd::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .kill_after(Duration::from_secs(300))
        .spawn();
    wait_for(Duration::from_secs(5), "the ssh-agent socket", || async {
        sock.exists().then_some(())
    })
    .await;

    // The harness says `IdentityAgent none` (which hides any agent); an engineer has one.
    let agent_path = sock.display().to_string();
    let out = w
        .ssh(
            &cert,
            &user,
            &["echo agent-$((6*7)) sock=${SSH_AUTH_SOCK:-none}"],
        )
        .flag("-A")
        .flag("-v")
        .option("IdentityAgent", &agent_path)
        .run();
    assert!(
        out.stderr
            .contains("Requesting authentication agent forwarding"),
        "the client did not ask for agent forwarding:\n{}",
        out.stderr
    );
    assert_eq!(
        out.code,
        Some(0),
        "ssh -A: {}\n{}",
        out.stderr,
        w.proxy.log_tail()
    );
    assert_eq!(out.stdout.trim(), "agent-42 sock=none", "{}", out.stderr);

    // What people put in ~/.ssh/config, one at a time and then all together.
    let everything: &[(&str, &str)] = &[
        ("ForwardAgent", "yes"),
        ("ForwardX11", "yes"),
        ("ForwardX11Trusted", "yes"),
        ("SetEnv", "GATEHOUSE_PROBE=1"),
        ("SendEnv", "LANG LC_*"),
        ("ServerAliveInterval", "1"),
        ("ServerAliveCountMax", "3"),
        ("Compression", "yes"),
        ("TCPKeepAlive", "yes"),
        ("RequestTTY", "no"),
        ("EscapeChar", "none"),
        ("LogLevel", "ERROR"),
    ];
    let mut cases: Vec<(String, Vec<(&str, &str)>)> = everything
        .iter()
        .map(|(k, v)| (format!("{k} {v}"), vec![(*k, *v)]))
        .collect();
    cases.push(("all of them".to_owned(), everything.to_vec()));
    for (n, (name, options)) in cases.iter().enumerate() {
        let mut ssh = w.ssh(
            &cert,
            &user,
            // Long enough for ServerAliveInterval's keepalives to cross the proxy.
            &[&format!("sleep 1.5; echo case-{n}-$((6*7)); exit 5")],
        );
        for (key, value) in options {
            ssh = ssh.option(key, value);
        }
        ssh = ssh.option("IdentityAgent", &agent_path);
        let started = Instant::now();
        let out = ssh
            .into_cmd()
            .env("DISPLAY", ":77")
            .env("LANG", "C.UTF-8")
            .run();
        assert_eq!(
            (out.code, out.stdout.trim()),
            (Some(5), format!("case-{n}-42").as_str()),
            "{name}: {}\n{}",
            out.stderr,
            w.proxy.log_tail()
        );
        eprintln!("{name}: ok in {:?}", started.elapsed());
    }

    // A script piped into `bash -s` (the input is the program) and `ssh -tt` for an exec.
    let out = w
        .ssh(&cert, &user, &["bash -s"])
        .stdin("echo piped-$((6*7))\nexit 6\n")
        .run();
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(6), "piped-42"),
        "{}",
        out.stderr
    );
    let out = w
        .ssh(&cert, &user, &["tty >/dev/null && echo has-tty"])
        .flag("-tt")
        .option("ForwardAgent", "yes")
        .option("IdentityAgent", &agent_path)
        .run();
    assert_eq!(out.code, Some(0), "ssh -tt -A: {}", out.stderr);
    assert!(out.stdout.contains("has-tty"), "{}", out.stdout);
    drop(agent.kill());
}

/// A pty under a policy without `permit-pty`, as OpenSSH's sshd answers it: a plain
/// interactive `ssh host` (RequestTTY auto) gets `PTY allocation request failed` and its shell
/// runs without a pty, to the end; `ssh -tt` (RequestTTY force), for which the client itself
/// treats the refusal as fatal, ends at once instead of hanging.
#[tokio::test]
async fn tty_without_permit_pty_runs_the_session_without_one_like_sshd() {
    let w = ProxiedWorld::start(
        "clients-nopty",
        ProxiedWorld::local_storage,
        json!({"certificate": {"extensions": []}}),
    )
    .await;
    let cert = w.issue(w.request("nopty")).await;
    let user = format!("{}@db1", w.login);
    let pty_script = |steps: serde_json::Value| {
        Cmd::new("python3")
            .arg(repo_root().join("tests/scripts/pty-session.py"))
            .arg(steps.to_string())
            .arg("--")
    };

    // `ssh host` from a terminal: the shell runs without a pty. `SendEnv LANG LC_*` (in
    // Debian's and Ubuntu's default ssh_config) puts env requests without want_reply between the
    // pty request and the shell, as engineers' clients do.
    let started = Instant::now();
    let out = w
        .ssh(&cert, &user, &[])
        .option("SendEnv", "LANG LC_*")
        .timeout(Duration::from_secs(40))
        .into_cmd_under(Some(pty_script(json!([
            {"expect": "PTY allocation request failed"},
            {"send": "echo shell-$((6*7)); tty || true\n"},
            {"expect": "shell-42"},
            {"send": "exit 4\n"},
        ]))))
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .run();
    assert_eq!(
        out.code,
        Some(4),
        "ssh host without permit-pty: {}\n{}",
        out.stdout,
        w.proxy.log_tail()
    );
    assert!(out.stdout.contains("not a tty"), "{}", out.stdout);
    eprintln!(
        "interactive ssh without permit-pty: {:?}",
        started.elapsed()
    );

    // `ssh -tt`, exec and shell: the client gives up on the refused pty, promptly.
    for args in [&["tty"][..], &[][..]] {
        let started = Instant::now();
        let out = w
            .ssh(&cert, &user, args)
            .flag("-tt")
            .timeout(Duration::from_secs(30))
            .into_cmd_under(Some(pty_script(
                json!([{"expect": "PTY allocation request failed"}]),
            )))
            .run();
        assert!(
            out.stdout.contains("PTY allocation request failed"),
            "ssh -tt {args:?}: {}\n{}",
            out.stdout,
            w.proxy.log_tail()
        );
        // 255, as with sshd itself (sshd_harness.rs: the same client against a certificate
        // without permit-pty); 124 would be the timeout, a hang.
        assert_eq!(out.code, Some(255), "ssh -tt {args:?}: {}", out.stdout);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        eprintln!(
            "ssh -tt {args:?} without permit-pty: {:?} exit {:?}",
            started.elapsed(),
            out.code
        );
    }
}

/// One connection carries at most ten sessions (sshd's `MaxSessions`): an eleventh over the same
/// `ControlMaster` connection is refused (the client falls back to a connection of its own), and once sessions end there is room again.
#[tokio::test]
async fn ten_sessions_share_one_connection_at_most() {
    let w = ProxiedWorld::with_local_store("clients-mux").await;
    let cert = w.issue(w.request("mux")).await;
    let user = format!("{}@db1", w.login);
    let control = w.dir.path().join("mux.sock");
    let control_path = control.display().to_string();
    let master = w
        .ssh(&cert, &user, &[])
        .flag("-N")
        .option("ControlMaster", "yes")
        .option("ControlPath", &control_path)
        .timeout(Duration::from_secs(300))
        .spawn();
    wait_for(
        Duration::from_secs(15),
        "the ControlMaster socket",
        || async { control.exists().then_some(()) },
    )
    .await;
    let muxed = |command: &str| {
        w.ssh(&cert, &user, &[command])
            .option("ControlPath", &control_path)
            .option("ControlMaster", "no")
    };
    let sleepers: Vec<_> = (0..10)
        .map(|i| muxed(&format!("echo up-{i}; sleep 6; exit {}", i + 3)).spawn())
        .collect();
    wait_for(Duration::from_secs(20), "ten live sessions", || async {
        w.proxy
            .metrics()
            .contains("gatehouse_proxy_sessions_active 10")
            .then_some(())
    })
    .await;
    // The master's connection refuses it; the client then logs in on a connection of its own,
    // as it does against sshd.
    let eleventh = muxed("echo eleventh").run();
    assert!(
        eleventh.stderr.contains("Session open refused by peer"),
        "an eleventh session shared the connection: {}\n{}",
        eleventh.stdout,
        eleventh.stderr
    );
    // Refused by the proxy's own cap, not by the target's sshd (which also stops at ten).
    assert!(
        w.proxy
            .log_text()
            .contains("session channel refused: 10 are open on this connection"),
        "{}",
        w.proxy.log_tail()
    );
    // Each ran to its end with its own exit status (a lost status made ssh exit 255).
    for (i, sleeper) in sleepers.into_iter().enumerate() {
        let out = sleeper.wait();
        assert_eq!(
            (out.code, out.stdout.trim()),
            (
                Some(i32::try_from(i).unwrap_or(0) + 3),
                format!("up-{i}").as_str()
            ),
            "session {i}: {}\n{}",
            out.stderr,
            w.proxy.log_tail()
        );
    }
    // Closed sessions give their slots back: ten fit again.
    wait_for(Duration::from_secs(20), "the sessions to close", || async {
        w.proxy
            .metrics()
            .contains("gatehouse_proxy_sessions_active 0")
            .then_some(())
    })
    .await;
    // Half of these close their output a second before they exit (as a daemon or `cmd &`
    // does): the target's EOF comes first, and the client answers it with its close at once.
    let again: Vec<_> = (0..10)
        .map(|i| {
            let quiet = if i % 2 == 0 {
                "exec >&- 2>&-; sleep 1;"
            } else {
                ""
            };
            muxed(&format!("echo again-{i}; {quiet} exit {}", i + 3)).spawn()
        })
        .collect();
    for (i, run) in again.into_iter().enumerate() {
        let out = run.wait();
        assert!(
            !out.stderr.contains("Session open refused"),
            "session {i} of the second ten was refused: {}",
            out.stderr
        );
        assert_eq!(
            (out.code, out.stdout.trim()),
            (
                Some(i32::try_from(i).unwrap_or(0) + 3),
                format!("again-{i}").as_str()
            ),
            "session {i} of the second ten: {}\n{}",
            out.stderr,
            w.proxy.log_tail()
        );
    }
    let again = muxed("echo room-again").run();
    assert_eq!(
        (again.code, again.stdout.trim()),
        (Some(0), "room-again"),
        "{}",
        again.stderr
    );
    drop(master.kill());
}
