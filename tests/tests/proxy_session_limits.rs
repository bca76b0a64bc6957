//! A policy's `session` limits (issue 20 §5) through `gatehouse-proxy` with the real `ssh` and
//! `sshd`: `idleTimeout` ends a quiet session and `maxSessions` refuses one too many, each with
//! a message naming the rule on the engineer's terminal; the API server refuses limits out of
//! range (CEL and schema on the CRD).

use std::time::{Duration, Instant};

use gatehouse_tests::{User, proxied_world::ProxiedWorld, wait_for};
use serde_json::json;

#[tokio::test]
async fn idle_sessions_end_and_too_many_are_refused_with_the_rule_named() {
    let w = ProxiedWorld::start(
        "limits",
        ProxiedWorld::local_storage,
        json!({"session": {"idleTimeout": "5s", "maxSessions": 1}}),
    )
    .await;
    let cert = w.issue(w.request("limited")).await;
    let user = format!("{}@db1", w.login);

    // Quiet for longer than 5 s: ended, with the rule on stderr.
    let started = Instant::now();
    let out = w
        .ssh(&cert, &user, &["echo started; sleep 30; echo never"])
        .run();
    let took = started.elapsed();
    assert_eq!(out.code, Some(255), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("started") && !out.stdout.contains("never"));
    assert!(
        out.stderr.contains("session.idleTimeout is 5s"),
        "{}\n{}",
        out.stderr,
        w.proxy.log_tail()
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    eprintln!("idle session ended after {took:?}");

    // Busy sessions are not idle: output every second for 8 s.
    let out = w
        .ssh(
            &cert,
            &user,
            &["for i in 1 2 3 4 5 6 7 8; do echo tick; sleep 1; done"],
        )
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // One session at a time for this request.
    let first = w
        .ssh(
            &cert,
            &user,
            &["echo first; for i in 1 2 3 4 5 6; do sleep 1; echo .; done"],
        )
        .spawn();
    wait_for(Duration::from_secs(15), "the first session", || async {
        w.proxy
            .metrics()
            .contains("gatehouse_proxy_sessions_active 1")
            .then_some(())
    })
    .await;
    let second = w.ssh(&cert, &user, &["echo second"]).run();
    assert_eq!(second.code, Some(255), "{}", second.stdout);
    assert!(
        second.stderr.contains("session.maxSessions is 1"),
        "{}\n{}",
        second.stderr,
        w.proxy.log_tail()
    );
    let first = first.wait();
    assert_eq!(first.code, Some(0), "{}", first.stderr);

    // Out-of-range limits never reach the proxy.
    for (session, needle) in [
        (json!({"idleTimeout": "1s"}), "from 5s to 24h"),
        (json!({"idleTimeout": "48h"}), "from 5s to 24h"),
        (json!({"maxSessions": 0}), "maxSessions"),
        (json!({"maxSessions": 101}), "maxSessions"),
    ] {
        let policy = json!({
            "apiVersion": "gatehouse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "bad-limits"},
            "spec": {
                "subjects": [{"kind": "User", "name": "alice"}],
                "hostSelector": {},
                "logins": ["root"],
                "session": session,
            }
        });
        let out = w.s.apply(w.cp, User::Admin, &policy);
        assert!(
            !out.success && out.stderr.contains(needle),
            "{session}: {}\n{}",
            out.stdout,
            out.stderr
        );
    }
}
