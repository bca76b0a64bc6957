//! A flood cannot destroy evidence (issue 20 §2), with real everything: the real `ssh` →
//! `gatehouse-proxy` → a real `sshd`, recordings in a real MinIO.
//!
//! - A session printing without end is cut at its spool budget with a message naming the limit;
//!   what it did before (`echo EVIDENCE`) is in the stored recording, and the proxy goes on.
//! - While a session runs its recording is already in the store in pieces, so a proxy that
//!   dies with its spool loses at most the last piece; a finished session leaves no pieces.
//!
//! Limits are small (flags) so the tests are quick; the defaults are 1 GiB per session,
//! 8 GiB per replica, a piece every 10 s or 8 MiB.

use std::time::{Duration, Instant};

use gatehouse_tests::{Cmd, minio::Minio, proxied_world::ProxiedWorld, sha256_hex, wait_for};
use serde_json::json;

const BUCKET: &str = "recordings";

/// A world recording to a fresh MinIO, the proxy started with `args`.
async fn world(prefix: &str, args: &[&str]) -> (ProxiedWorld, Minio) {
    let mut minio = None;
    let w = ProxiedWorld::start_with_args(
        prefix,
        |dir| {
            let server = Minio::start(dir);
            server.create_bucket(BUCKET);
            let storage = server.storage(BUCKET);
            minio = Some(server);
            storage
        },
        json!({}),
        args,
    )
    .await;
    (w, minio.unwrap_or_else(|| panic!("no MinIO")))
}

/// The pieces stored so far for session `id`, joined in order.
fn joined_pieces(minio: &Minio, id: &str) -> (Vec<String>, String) {
    let pieces: Vec<String> = minio
        .list(BUCKET, "recordings/")
        .into_iter()
        .filter(|k| k.contains(&format!("_{id}.cast.parts/")))
        .collect();
    let text = pieces
        .iter()
        .map(|k| String::from_utf8_lossy(&minio.get(BUCKET, k).unwrap_or_default()).into_owned())
        .collect();
    (pieces, text)
}

#[tokio::test]
async fn a_flood_is_cut_at_the_budget_and_the_evidence_before_it_is_stored() {
    let (w, minio) = world(
        "flood",
        &[
            "--spool-max-session-bytes=4Mi",
            "--spool-max-bytes=64Mi",
            "--live-upload-interval=1s",
            "--live-upload-piece-bytes=1Mi",
        ],
    )
    .await;
    let cert = w.issue(w.request("flood")).await;
    let user = format!("{}@db1", w.login);

    // The flood's output is not kept locally (only its last bytes), and `timeout` ends it after
    // a minute and a half: without a budget nothing else would.
    let flood = w
        .ssh(
            &cert,
            &user,
            &["echo EVIDENCE; yes $(head -c4000 /dev/zero | tr '\\0' x)"],
        )
        .into_cmd_under(Some(Cmd::new("bash").args([
            "-c",
            r#"timeout -s KILL 90 "$@" | tail -c 2000 >/dev/null; exit "${PIPESTATUS[0]}""#,
            "bash",
        ])))
        // Generous: a login on this machine can wait for a shell's start-up scripts.
        .kill_after(Duration::from_secs(120));
    let started = Instant::now();
    let out = flood.run();
    let took = started.elapsed();
    assert!(
        !out.timed_out && out.code != Some(137),
        "the flood ran {took:?} without being cut: {out:?}\n{}",
        w.proxy.log_tail()
    );
    println!("the flood was cut after {took:?}");
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr.contains(
            "this session's recording reached its limit of 4.0 MiB (--spool-max-session-bytes)"
        ) && out.stderr.contains("requires recording; session closed"),
        "{out:?}"
    );

    // The proxy is still there and serves the next session.
    assert!(w.proxy.pid().is_some(), "{}", w.proxy.log_tail());
    let next = w.ssh(&cert, &user, &["echo still-serving"]).run();
    assert_eq!(next.stdout.trim(), "still-serving", "{next:?}");

    // The flood's recording is stored, bounded, with the evidence and the reason.
    let sessions = w.recorded("flood", 2, Duration::from_secs(60)).await;
    let mut floods = Vec::new();
    for s in &sessions {
        let recording = s.recording.clone().expect("recorded");
        let object = minio
            .get(BUCKET, &recording.key)
            .unwrap_or_else(|| panic!("{} not in MinIO", recording.key));
        assert_eq!(sha256_hex(&object), recording.sha256);
        let text = String::from_utf8_lossy(&object).into_owned();
        if text.contains("EVIDENCE") {
            floods.push((s.id.clone(), text, object.len()));
        }
    }
    assert_eq!(floods.len(), 1, "{sessions:?}");
    let (id, text, bytes) = &floods[0];
    assert!(
        *bytes <= 4 * 1024 * 1024 + 4096,
        "the recording exceeds its budget: {bytes} bytes"
    );
    assert!(text.contains("xxxxxxxx"), "the flood itself is recorded");
    assert!(
        text.contains("reached its limit of 4.0 MiB"),
        "the reason is in the recording"
    );
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not asciicast ({e}): {line:.200}"));
    }

    // Completed sessions keep only their final object: the live pieces are removed, and the
    // spool is empty again.
    wait_for(
        Duration::from_secs(10),
        "the live pieces removed",
        || async { joined_pieces(&minio, id).0.is_empty().then_some(()) },
    )
    .await;
    w.proxy.await_empty_spool(Duration::from_secs(10)).await;
    let metrics = w.proxy.metrics();
    assert!(
        metrics.contains("gatehouse_proxy_sessions_terminated_total{reason=\"recording\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_running_session_is_in_the_store_before_it_ends_and_outlives_a_lost_pod() {
    let (mut w, minio) = world("live", &["--live-upload-interval=1s"]).await;
    let cert = w.issue(w.request("live")).await;
    let session = w
        .ssh(
            &cert,
            &format!("{}@db1", w.login),
            &["echo started; sleep 120"],
        )
        .spawn();
    let id = wait_for(
        Duration::from_secs(90),
        "the live session in status",
        || async {
            let sessions = w.sessions("live").await;
            sessions
                .into_iter()
                .find(|s| s.end_time.is_none())
                .map(|s| s.id)
        },
    )
    .await;

    // Within a couple of intervals of the output the output is in MinIO as a piece, while
    // the session is still live.
    let (pieces, text) = wait_for(Duration::from_secs(90), "a live piece in MinIO", || async {
        let (pieces, text) = joined_pieces(&minio, &id);
        text.contains(r#""o", "started"#).then_some((pieces, text))
    })
    .await;
    assert!(pieces[0].ends_with(".cast.parts/000001"), "{pieces:?}");
    let header: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a header line");
    assert_eq!(header["version"], 2, "{text}");
    assert_eq!(header["gatehouse"]["sessionId"], id.as_str(), "{text}");
    assert!(
        w.sessions("live")
            .await
            .iter()
            .any(|s| s.id == id && s.end_time.is_none()),
        "the session is still running"
    );

    // The pod is lost with its spool (an emptyDir): what was stored stays.
    w.proxy.kill();
    std::fs::remove_dir_all(w.proxy.spool_dir()).expect("removing the spool");
    let _ = session.kill();
    let (_, after) = joined_pieces(&minio, &id);
    assert!(after.contains(r#""o", "started"#), "{after}");
    for line in after.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("pieces hold whole lines ({e}): {line}"));
    }
}
