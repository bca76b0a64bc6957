//! The README's quickstart as CI runs it: `make demo` alone (it starts everything with
//! `make up`: its own control plane, the chart, operator, proxy and demo sshd), its transcript,
//! and `make down`, which must leave no process behind. Once with recordings in a local
//! directory (the default), once in a local MinIO (`RECORDINGS=minio`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use gatehouse_tests::{
    Cmd,
    binaries::{operator_binary, proxy_binary},
    repo_root,
};

fn make(target: &str, dir: &Path, recordings: &str) -> (bool, String) {
    let started = Instant::now();
    let out = Cmd::new("make")
        .arg("-C")
        .arg(repo_root())
        .arg(target)
        .arg(format!("UP_DIR={}", dir.display()))
        .arg(format!("RECORDINGS={recordings}"))
        // Built by `make test` already; cargo is busy running this test.
        .env("GATEHOUSE_OPERATOR_BIN", operator_binary())
        .env("GATEHOUSE_PROXY_BIN", proxy_binary())
        .env("GATEHOUSE_UP_BIN", env!("CARGO_BIN_EXE_gatehouse-up"))
        .timeout(Duration::from_secs(600))
        .run();
    let text = format!(
        "{}{}\n(make {target} took {:?})",
        out.stdout,
        out.stderr,
        started.elapsed()
    );
    (out.success, text)
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
}

/// `make demo` then `make down` with the plane in `dir`; the transcript must hold `needles`, and
/// every daemon in `daemons` must have been started and be gone afterwards.
fn demo_then_down(dir: &Path, recordings: &str, daemons: &[&str], needles: &[&str]) {
    let up_dir = dir.join("control-plane");
    let (ok, transcript) = make("demo", &up_dir, recordings);
    let pids: Vec<(String, String)> = daemons
        .iter()
        .map(|name| {
            let pid =
                std::fs::read_to_string(up_dir.join(format!("{name}.pid"))).unwrap_or_default();
            (name.to_string(), pid)
        })
        .collect();
    let (down_ok, down) = make("down", &up_dir, recordings);
    assert!(ok, "make demo failed:\n{transcript}");
    for needle in STORY.iter().chain(needles) {
        assert!(
            transcript.contains(needle),
            "no {needle:?} in:\n{transcript}"
        );
    }
    assert!(down_ok, "make down failed:\n{down}");
    for (name, pid) in &pids {
        assert!(!pid.is_empty(), "{name} was not started:\n{transcript}");
        assert!(!alive(pid), "{name} (pid {pid}) still runs after make down");
    }
    let leftovers = Cmd::new("pgrep")
        .arg("-f")
        .arg(format!("{}/", up_dir.display()))
        .run();
    assert!(
        leftovers.stdout.is_empty(),
        "processes left: {}",
        leftovers.stdout
    );
}

/// What every run of the demo prints, wherever recordings go.
const STORY: [&str; 9] = [
    "AccessRequest alice-prod-db-01 created by alice — Pending",
    "refused:",
    "Approved by bob — Issued",
    "certificate issued ttl=1h principals=[gatehouse-proxy:demo/alice-prod-db-01",
    "$ kubectl gatehouse ssh prod-db-01",
    "matches status",
    "$ asciinema cat",
    "Revoked; ssh now fails",
    "demo passed",
];

const DAEMONS: [&str; 5] = ["etcd", "apiserver", "operator", "proxy", "demo-sshd"];

#[test]
fn make_demo_tells_the_whole_story_and_make_down_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    demo_then_down(dir.path(), "local", &DAEMONS, &["recording → recordings/"]);
}

#[test]
fn make_demo_with_recordings_in_minio_fetches_the_object_and_checks_it() {
    let mut daemons = DAEMONS.to_vec();
    daemons.push("minio");
    let dir = tempfile::tempdir().unwrap();
    demo_then_down(
        dir.path(),
        "minio",
        &daemons,
        &[
            "recordings   s3://gatehouse-recordings/recordings/ at http://127.0.0.1:",
            "recording → s3://gatehouse-recordings/recordings/",
            "$ curl --aws-sigv4 aws:amz:us-east-1:s3",
        ],
    );
}
