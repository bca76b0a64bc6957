//! What a recording holds (issue 20 §1), with the real `ssh` through `gatehouse-proxy` to a
//! real `sshd`, recordings read back from the store: the input of a session without a pty is
//! recorded whatever `recordInput` says (it is the command stream), keystrokes at a terminal
//! stay out unless the policy keeps them (passwords are typed there), and a forced-command
//! certificate asked for a subsystem (`ssh -s host sftp`) is recorded as the forced command.

use std::time::Duration;

use gatehouse_tests::{Cmd, proxied_world::ProxiedWorld, repo_root};
use serde_json::{Value, json};

/// The recorded casts of request `name` once `count` are stored.
async fn casts(w: &ProxiedWorld, name: &str, count: usize) -> Vec<String> {
    let store = w.local_store();
    w.recorded(name, count, Duration::from_secs(20))
        .await
        .iter()
        .filter_map(|s| s.recording.clone())
        .map(|r| std::fs::read_to_string(store.join(&r.key)).unwrap_or_default())
        .collect()
}

/// The data of a cast's events with `code` (`"i"`, `"o"`), joined.
fn events(cast: &str, code: &str) -> String {
    cast.lines()
        .skip(1)
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event[1] == code)
        .filter_map(|event| event[2].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn input_without_a_pty_is_recorded_and_keystrokes_at_a_terminal_are_not() {
    // The default policy: recordInput off.
    let w = ProxiedWorld::with_local_store("rec-input").await;
    let cert = w.issue(w.request("input")).await;
    let user = format!("{}@db1", w.login);

    // A script piped into `bash -s`: what ran is only in the input (the output shows nothing of
    // the `rm`).
    let script = "true rm -rf /srv/piped-marker-$((6*7))\necho done-$((6*7))\n";
    let out = w.ssh(&cert, &user, &["bash -s"]).stdin(script).run();
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "done-42"),
        "{}",
        out.stderr
    );
    let cast = casts(&w, "input", 1).await.remove(0);
    assert!(
        events(&cast, "i").contains("true rm -rf /srv/piped-marker-$((6*7))"),
        "the piped script is not in the recording:\n{cast}"
    );
    assert!(events(&cast, "o").contains("done-42"), "{cast}");

    // At a terminal, a password typed without echo stays out of the recording.
    let steps = json!([
        {"send": "echo ready-$((6*7)); read -rs secret; echo got-${#secret}\n"},
        {"expect": "ready-42"},
        {"sleep": 0.3},
        {"send": "hunter2-typed-secret\n"},
        {"expect": "got-20"},
        {"send": "exit\n"},
    ]);
    let script = Cmd::new("python3")
        .arg(repo_root().join("tests/scripts/pty-session.py"))
        .arg(steps.to_string())
        .arg("--");
    let out = w
        .ssh(&cert, &user, &[])
        .flag("-tt")
        .into_cmd_under(Some(script))
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    let casts = casts(&w, "input", 2).await;
    let shell = casts
        .iter()
        .find(|c| c.contains("got-20"))
        .unwrap_or_else(|| panic!("no shell recording: {casts:?}"));
    assert!(!shell.contains("hunter2-typed-secret"), "{shell}");
    assert_eq!(events(shell, "i"), "", "{shell}");
}

#[tokio::test]
async fn a_forced_command_asked_for_sftp_is_recorded_as_the_forced_command() {
    let w = ProxiedWorld::start(
        "rec-forced",
        ProxiedWorld::local_storage,
        json!({"certificate": {"forceCommand": "echo forced-$((6*7)); cat"}}),
    )
    .await;
    let cert = w.issue(w.request("forced")).await;
    let user = format!("{}@db1", w.login);

    // sshd runs the forced command whatever the client asks for, sftp included.
    let out = w
        .ssh(&cert, &user, &["sftp"])
        .flag("-s")
        .stdin("typed-into-forced-$((6*7))\n")
        .run();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stderr, w.proxy.log_tail());
    assert!(out.stdout.contains("forced-42"), "{}", out.stdout);
    let cast = casts(&w, "forced", 1).await.remove(0);
    let header: Value = serde_json::from_str(cast.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("header: {e}\n{cast}"));
    assert_eq!(
        header["gatehouse"]["kind"],
        json!({"type": "exec", "command": "echo forced-$((6*7)); cat"}),
        "{cast}"
    );
    assert!(events(&cast, "o").contains("forced-42"), "{cast}");
    assert!(
        events(&cast, "i").contains("typed-into-forced-$((6*7))"),
        "{cast}"
    );
}
