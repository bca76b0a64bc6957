//! The proxy stopped the way Kubernetes stops a pod (SIGTERM): live sessions end with a
//! message, their recordings are stored before the process exits, and nothing stays spooled
//! (a pod's spool is an emptyDir that goes with it).

use std::time::{Duration, Instant};

use gatehouse_tests::{proxied_world::ProxiedWorld, sha256_hex};

#[tokio::test]
async fn sigterm_ends_sessions_with_a_message_and_stores_their_recordings_before_exit() {
    let mut w = ProxiedWorld::with_local_store("proxy-sigterm").await;
    let cert = w.issue(w.request("drain")).await;
    let session = w.live_session("drain", &cert).await;

    let stopping = Instant::now();
    let status = w.proxy.terminate(Duration::from_secs(20));
    let took = stopping.elapsed();
    assert!(status.success(), "the proxy exited with {status}");
    assert!(took < Duration::from_secs(5), "shutting down took {took:?}");

    let ssh = tokio::task::spawn_blocking(move || session.wait())
        .await
        .unwrap();
    let stderr = &ssh.stderr;
    assert!(
        stderr.contains("the proxy is shutting down; connect again to reach another replica"),
        "{stderr}"
    );
    assert_eq!(ssh.code, Some(255), "{stderr}");
    assert_eq!(
        ssh.stdout.trim(),
        "started",
        "stderr: {stderr}\nproxy: {}",
        w.proxy.log_tail()
    );

    // Stored, and named in status, before the process exited: nothing is left to a next start.
    let log = w.proxy.log_text();
    assert!(
        log.contains("sessions closed and recordings stored; stopped"),
        "{log}"
    );
    let spooled = w.proxy.spooled_files();
    assert!(spooled.is_empty(), "left in the spool: {spooled:?}");
    let sessions = w.recorded("drain", 1, Duration::from_secs(1)).await;
    let recording = sessions[0]
        .recording
        .clone()
        .unwrap_or_else(|| panic!("no recording in {sessions:?}"));
    let bytes = std::fs::read(w.local_store().join(&recording.key))
        .unwrap_or_else(|e| panic!("{}: {e}", recording.key));
    assert_eq!(sha256_hex(&bytes), recording.sha256);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(r#""o", "started"#), "{text}");
    assert!(text.contains("the proxy is shutting down"), "{text}");
    // The session's audit events are sealed and stored before the exit too.
    // Under the proxy's run, `audit/<POD_NAME>.<run id>/`.
    let audit = w.local_store().join("audit");
    let batches: String = std::fs::read_dir(&audit)
        .unwrap_or_else(|e| panic!("{}: {e}", audit.display()))
        .filter_map(Result::ok)
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with("proxy-under-test.")
        })
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    let ended = format!(
        "\"sessionId\":\"{}\"",
        recording
            .key
            .rsplit('_')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".cast")
    );
    assert!(
        batches
            .lines()
            .any(|l| l.contains("\"sessionEnded\"") && l.contains(&ended)),
        "{batches}"
    );
}
