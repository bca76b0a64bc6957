//! Session history cannot be washed out, and parallel sessions all land in it (issue 20 §2
//! and §4), with the real `ssh` → `gatehouse-proxy` → a real `sshd`, read back from the
//! AccessRequest's status.
//!
//! - 64 more `ssh host true` after an engineer's first sessions and a failed one leave those
//!   in `status.sessions` (a 64-entry ring dropped them), `sessionsTotal` counts everything,
//!   and every recording is still in the store.
//! - Ten sessions of one request opened at once are all recorded in its status (conflicting
//!   status writers lost some of them).
//! - A port forward (`ssh -W`) is listed with its destination and the bytes it carried.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use gatehouse_crds::SessionRecord;
use gatehouse_tests::{proxied_world::ProxiedWorld, wait_for};
use serde_json::json;

/// Wait until request `name` counts `total` sessions and lists `listed` with recordings;
/// on timeout, fail with the status and the proxy's log.
async fn settled(w: &ProxiedWorld, name: &str, total: i64, listed: usize) -> Vec<SessionRecord> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = w.s.get(name).await.status.unwrap_or_default();
        let recorded = status
            .sessions
            .iter()
            .filter(|s| s.recording.is_some())
            .count();
        if status.sessions_total == Some(total) && recorded == listed {
            return status.sessions;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {total} sessions counted, {listed} recorded: total {:?}, {recorded} \
             recorded in {:?}\n{}",
            status.sessions_total,
            status.sessions,
            w.proxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ids(sessions: &[SessionRecord]) -> BTreeSet<String> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

/// The `.cast` files in the world's local store.
fn stored_recordings(w: &ProxiedWorld) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk(&path)
                } else {
                    usize::from(path.extension().is_some_and(|x| x == "cast"))
                }
            })
            .sum()
    }
    walk(&w.local_store())
}

#[tokio::test]
async fn a_flood_of_logins_keeps_the_first_and_the_failed_sessions_in_history() {
    let w = ProxiedWorld::with_local_store("history").await;
    let cert = w.issue(w.request("history")).await;
    let user = format!("{}@db1", w.login);

    for i in 0..8 {
        let out = w.ssh(&cert, &user, &[&format!("echo first-{i}")]).run();
        assert_eq!(out.stdout.trim(), format!("first-{i}"), "{out:?}");
    }
    let first = ids(&settled(&w, "history", 8, 8).await);
    let out = w.ssh(&cert, &user, &["exit 3"]).run();
    assert_eq!(out.code, Some(3), "{out:?}");
    let failed = settled(&w, "history", 9, 9)
        .await
        .into_iter()
        .find(|s| !first.contains(&s.id))
        .unwrap_or_else(|| panic!("the failed session is not in status"));
    assert_eq!(failed.exit_status, Some(3));

    // The wash: 64 trivial sessions.
    for i in 0..64 {
        let out = w.ssh(&cert, &user, &["true"]).run();
        assert_eq!(out.code, Some(0), "session {i}: {out:?}");
    }
    let sessions = settled(&w, "history", 73, 64).await;
    let listed = ids(&sessions);
    assert_eq!(sessions.len(), 64);
    assert!(
        first.is_subset(&listed),
        "the first sessions were washed out: {first:?} not all in {listed:?}"
    );
    let kept = sessions
        .iter()
        .find(|s| s.id == failed.id)
        .unwrap_or_else(|| panic!("the failed session {} was washed out", failed.id));
    assert_eq!(kept.exit_status, Some(3));
    assert!(
        sessions
            .iter()
            .filter(|s| !first.contains(&s.id) && s.id != failed.id)
            .all(|s| s.exit_status == Some(0)),
        "{sessions:?}"
    );
    // Oldest first; what is not listed is still stored.
    assert!(
        sessions
            .windows(2)
            .all(|p| p[0].start_time.0 <= p[1].start_time.0)
    );
    wait_for(
        Duration::from_secs(30),
        "73 recordings in the store",
        || async { (stored_recordings(&w) == 73).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn parallel_sessions_of_one_request_all_land_in_history() {
    let w = ProxiedWorld::with_local_store("history-parallel").await;
    let cert = w.issue(w.request("parallel")).await;
    let user = format!("{}@db1", w.login);
    // Ten at once: each writes its start and its recording, twenty writers of one status.
    let running: Vec<_> = (0..10)
        .map(|i| w.ssh(&cert, &user, &[&format!("echo p{i}")]).spawn())
        .collect();
    for (i, session) in running.into_iter().enumerate() {
        let out = session.wait();
        assert_eq!(out.stdout.trim(), format!("p{i}"), "{out:?}");
    }
    let sessions = settled(&w, "parallel", 10, 10).await;
    assert_eq!(sessions.len(), 10, "{sessions:?}");
    assert!(sessions.iter().all(|s| s.exit_status == Some(0)));
    let log = w.proxy.log_text();
    assert!(
        !log.contains("recording the session start in status failed"),
        "a session start was lost:\n{log}"
    );
}

#[tokio::test]
async fn a_port_forward_is_listed_with_its_destination_and_bytes_each_way() {
    let w = ProxiedWorld::start(
        "history-forward",
        ProxiedWorld::local_storage,
        json!({"certificate": {"extensions": ["permit-pty", "permit-port-forwarding"]},
               "recording": {"allowForwards": true}}),
    )
    .await;
    let cert = w.issue(w.request("forward")).await;
    let user = format!("{}@db1", w.login);
    // `ssh -W` to the target's own sshd: its banner comes back, our hello goes there.
    let to = format!("127.0.0.1:{}", w.sshd.port());
    let out = w
        .ssh(&cert, &user, &[])
        .flag("-W")
        .flag(&to)
        .into_cmd()
        .stdin("SSH-2.0-forward-test\r\n")
        .kill_after(Duration::from_secs(3))
        .run();
    assert!(out.stdout.starts_with("SSH-2.0-OpenSSH"), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let forward = loop {
        let sessions = w.s.get("forward").await.status.unwrap_or_default().sessions;
        if let Some(f) = sessions
            .iter()
            .find(|s| s.end_time.is_some() && s.forward.is_some())
        {
            break f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no closed forward in {sessions:?}\n{}",
            w.proxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bytes = forward
        .forward
        .clone()
        .unwrap_or_else(|| panic!("no forward"));
    assert_eq!(bytes.destination, to);
    assert!(bytes.bytes_to_target >= 22, "{forward:?}");
    assert!(bytes.bytes_to_client >= 20, "{forward:?}");
    assert!(forward.recording.is_none() && forward.host == "db1");
    let log = w.proxy.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("port forward closed") && l.contains(&forward.id)),
        "{log}"
    );
}
