//! Revocation works with the operator down: `kubectl delete` of an Issued request ends its
//! session and refuses its certificate through the real proxy, although the operator (webhook
//! and reconcilers) is dead and its finalizer keeps the object, still Issued. Alone in its test
//! binary: it kills the plane's shared operator, which every other test needs.

use std::time::{Duration, Instant};

use gatehouse_crds::Phase;
use gatehouse_tests::{User, proxied_world::ProxiedWorld};

#[tokio::test]
async fn deleting_a_request_with_the_operator_down_ends_its_session() {
    let w = ProxiedWorld::with_local_store("operator-down").await;
    let cert = w.issue(w.request("r1")).await;
    let session = w.live_session("r1", &cert).await;

    w.cp.kill_shared_operator();
    // With the webhook gone (failurePolicy Fail) no annotation goes through: revoking by
    // annotation is impossible, so deleting is what is left, and it must work.
    w.s.annotate(
        w.cp,
        User::Bob,
        "r1",
        gatehouse_crds::contract::annotations::REVOKE,
        "now",
    )
    .fails_with(&["failed calling webhook"]);
    let deleted_at = Instant::now();
    w.cp.kubectl(User::Admin)
        .args([
            "-n",
            &w.s.ns,
            "delete",
            "accessrequest",
            "r1",
            "--wait=false",
        ])
        .run()
        .ok();
    let ended = tokio::task::spawn_blocking(move || session.wait())
        .await
        .unwrap();
    let took = deleted_at.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the session lasted {took:?} after the delete"
    );
    let why = format!("AccessRequest {}/r1 was deleted; session closed", w.s.ns);
    assert!(ended.stderr.contains(&why), "{}", ended.stderr);
    // Still there (the finalizer waits for the operator), still Issued, and refused.
    let request = w.s.get("r1").await;
    assert!(request.metadata.deletion_timestamp.is_some());
    assert_eq!(
        request.status.unwrap_or_default().phase,
        Some(Phase::Issued)
    );
    let out = w.ssh(&cert, &format!("{}@db1", w.login), &["true"]).run();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        w.proxy.log_text().contains("was deleted"),
        "{}",
        w.proxy.log_tail()
    );

    // Back up, the operator records the revocation and lets the request go.
    w.cp.restart_shared_operator();
    gatehouse_tests::wait_for(
        Duration::from_secs(15),
        "the request to be gone",
        || async {
            w.s.requests
                .get_opt("r1")
                .await
                .ok()
                .and_then(|r| r.is_none().then_some(()))
        },
    )
    .await;
}
