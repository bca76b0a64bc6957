//! Replay safety (issue 20 §5): a target that prints an OSC 52 clipboard write, an OSC 2 window
//! title and a DCS string around its output, through the real `ssh` → `gatehouse-proxy` → a
//! real `sshd`. The stored recording holds those bytes (it is evidence, kept as printed), and
//! Debian's `asciinema cat` passes them to the auditor's terminal; the real
//! `kubectl-gatehouse replay --cat` prints the text and none of them, including a clipboard
//! write split across two output events.

use std::time::Duration;

use gatehouse_tests::{Cmd, proxied_world::ProxiedWorld, repo_root};
use serde_json::Value;

/// What the target prints. `\033` is ESC, `\007` BEL, `\134` a backslash (so `\033\134` is
/// ST); the text around the sequences reads GATEHOUSE-REPLAY-MARKER-42-END once they are gone.
/// The second half starts a clipboard write, pauses (so it ends in a later output event) and
/// finishes it before SPLIT-OK-42.
const HOSTILE: &str = r#"printf 'GATEHOUSE-\033]52;c;Y2xpcGJvYXJkLXB3bmVk\007REPLAY-\033]2;title-pwned\033\134MARKER-%s\033P$q"p\033\134-END\n' $((6*7)); printf 'SPLIT-\033]52;c;'; sleep 1; printf 'c3BsaXQtcHduZWQ=\007OK-%s\n' $((6*7))"#;

/// Bytes that start a control string (OSC, DCS, SOS, PM, APC), 7-bit or C1.
const STRING_STARTS: &[&str] = &[
    "\u{1b}]", "\u{1b}P", "\u{1b}X", "\u{1b}^", "\u{1b}_", "\u{9d}", "\u{90}", "\u{98}", "\u{9e}",
    "\u{9f}",
];

/// The clipboard and title payloads, which must not reach the auditor even as text.
const PAYLOADS: &[&str] = &["Y2xpcGJvYXJkLXB3bmVk", "c3BsaXQtcHduZWQ=", "title-pwned"];

#[tokio::test]
async fn replay_prints_the_session_text_and_none_of_its_escape_strings() {
    let w = ProxiedWorld::with_local_store("replay").await;
    let cert = w.issue(w.request("replay")).await;
    let user = format!("{}@db1", w.login);

    let out = w.ssh(&cert, &user, &[HOSTILE]).run();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stderr, w.proxy.log_tail());
    assert!(out.stdout.contains("\u{1b}]52;c;"), "{:?}", out.stdout);

    let sessions = w.recorded("replay", 1, Duration::from_secs(30)).await;
    let key = sessions[0].recording.clone().unwrap().key;
    let cast_path = w.local_store().join(&key);
    let cast = std::fs::read_to_string(&cast_path).unwrap();

    // The stored recording holds what the target printed, escape strings included, and the
    // split clipboard write is in two output events (a per-event filter would see neither
    // half as a whole).
    let outputs: Vec<String> = cast
        .lines()
        .skip(1)
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event[1] == "o")
        .filter_map(|event| event[2].as_str().map(str::to_owned))
        .collect();
    let raw: String = outputs.concat();
    for needle in [
        "\u{1b}]52;c;",
        "\u{1b}]2;title-pwned",
        "\u{1b}P$q",
        "MARKER-42",
    ] {
        assert!(raw.contains(needle), "{needle:?} not in the cast:\n{cast}");
    }
    let opens = outputs
        .iter()
        .position(|o| o.contains("SPLIT-\u{1b}]52;c;"))
        .unwrap_or_else(|| panic!("no event starts the split write:\n{cast}"));
    assert!(
        !outputs[opens].contains("c3BsaXQtcHduZWQ="),
        "the split write is in one event:\n{cast}"
    );

    // Debian's asciinema passes the clipboard write to the terminal (why the README says to
    // replay with kubectl gatehouse); `asciinema cat` insists on a terminal, so it gets one.
    let asciinema = Cmd::new("python3")
        .arg(repo_root().join("tests/scripts/pty-session.py"))
        .args(["[]", "--", "asciinema", "cat"])
        .arg(&cast_path)
        .run();
    assert_eq!(asciinema.code, Some(0), "{}", asciinema.stderr);
    assert!(
        asciinema
            .stdout
            .contains("\u{1b}]52;c;Y2xpcGJvYXJkLXB3bmVk"),
        "{:?}",
        asciinema.stdout
    );

    // The real plugin binary, from the file and from standard input.
    let plugin = repo_root().join("target/debug/kubectl-gatehouse");
    assert!(
        plugin.exists(),
        "build it first: cargo build -p gatehouse-cli"
    );
    let from_file = Cmd::new(&plugin)
        .args(["replay", "--cat"])
        .arg(&cast_path)
        .run();
    let from_stdin = Cmd::new(&plugin)
        .args(["replay", "--cat", "-"])
        .stdin(cast.clone())
        .run();
    for replay in [&from_file, &from_stdin] {
        let shown = replay.ok();
        for text in ["GATEHOUSE-REPLAY-MARKER-42-END", "SPLIT-OK-42"] {
            assert!(shown.contains(text), "{text} not shown: {shown:?}");
        }
        for bad in STRING_STARTS.iter().chain(PAYLOADS) {
            assert!(
                !shown.contains(bad),
                "{bad:?} reached the terminal: {shown:?}"
            );
        }
        // The header, on standard error: who, where, which request.
        let header = &replay.stderr;
        assert!(
            header.contains(&format!("→ {}@db1", w.login))
                && header.contains(&format!("AccessRequest {}/replay", w.s.ns)),
            "{header}"
        );
    }

    // A damaged recording stops with the line named, exit code 1.
    let damaged = w.dir.path().join("damaged.cast");
    let mut lines: Vec<&str> = cast.lines().collect();
    lines.insert(2, "[1.5, \"o\"]");
    std::fs::write(&damaged, lines.join("\n")).unwrap();
    let refused = Cmd::new(&plugin)
        .args(["replay", "--cat"])
        .arg(&damaged)
        .run();
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("line 3: event: not a JSON array"),
        "{}",
        refused.stderr
    );
}
