//! The proxy end to end, with real everything: the real `ssh`/`scp`/`sftp` client →
//! `gatehouse-proxy` (running as the chart's ServiceAccount) → a real Debian `sshd` that trusts
//! ONLY the upstream CA, recordings in a real MinIO (or a directory), read back with curl and
//! replayed with Debian's `asciinema`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use gatehouse_crds::{
    Phase,
    contract::{annotations, identity, secrets},
};
use gatehouse_tests::{
    Cmd, CmdOutput, User,
    minio::Minio,
    proxied_world::ProxiedWorld,
    repo_root, scenario, sha256_hex,
    ssh_client::{Client, SshCommand},
    sshd::{CertSpec, generate_key},
    wait_for,
};
use serde_json::{Value, json};

#[tokio::test]
async fn interactive_session_is_bridged_recorded_to_s3_and_replays() {
    let mut minio = None;
    let w = ProxiedWorld::start(
        "proxy-pty",
        |dir| {
            let server = Minio::start(dir);
            server.create_bucket("recordings");
            let storage = server.storage("recordings");
            minio = Some(server);
            storage
        },
        json!({}),
    )
    .await;
    let minio = minio.expect("no MinIO");
    let cert = w.issue(w.request("shell")).await;
    let user = format!("{}@db1", w.login);
    let out = w.pty_session(
        &cert,
        &user,
        &json!([
            {"send": "echo gatehouse-$((6*7))\n"},
            {"expect": "gatehouse-42"},
            {"resize": [50, 132]},
            {"sleep": 0.3},
            {"send": "stty size\n"},
            {"expect": "50 132"},
            {"send": "exit 3\n"},
        ]),
    );
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, w.proxy.log_tail());

    // The target's log names the human and the request, not just "the proxy".
    w.sshd.expect_log(
        &identity::upstream_key_id_prefix(&w.s.ns, "shell", User::Alice.username()),
        Duration::from_secs(5),
    );

    let sessions = w.recorded("shell", 1, Duration::from_secs(20)).await;
    let recording = sessions[0].recording.clone().expect("no recording");
    assert_eq!(sessions[0].host, "db1");
    assert!(sessions[0].end_time.is_some());
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    assert!(
        recording
            .key
            .starts_with(&format!("recordings/{today}/alice_db1_{}", sessions[0].id)),
        "{}",
        recording.key
    );
    let object = minio
        .get("recordings", &recording.key)
        .unwrap_or_else(|| panic!("{} not in MinIO", recording.key));
    assert_eq!(sha256_hex(&object), recording.sha256);
    assert_eq!(object.len() as i64, recording.bytes);

    // The header carries Gatehouse's metadata; the resize is an "r" event.
    let text = String::from_utf8_lossy(&object).into_owned();
    let header: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("header: {e}\n{text}"));
    assert_eq!(header["version"], 2);
    assert_eq!(header["gatehouse"]["requester"], "alice");
    assert_eq!(header["gatehouse"]["requestName"], "shell");
    assert_eq!(header["gatehouse"]["host"], "db1");
    assert!(text.contains(r#""r", "132x50""#), "{text}");

    // asciinema (Debian's) replays it, and the typed command's output is in it. `asciinema
    // cat` insists on a terminal, so it gets one.
    let cast = w.dir.path().join("session.cast");
    std::fs::write(&cast, &object).unwrap();
    let replay = Cmd::new("python3")
        .arg(repo_root().join("tests/scripts/pty-session.py"))
        .args(["[]", "--", "asciinema", "cat"])
        .arg(&cast)
        .run();
    assert_eq!(replay.code, Some(0), "{}", replay.stderr);
    assert!(replay.stdout.contains("gatehouse-42"), "{}", replay.stdout);

    // An Event says where the recording went.
    let reasons = w.s.event_reasons(w.cp, "shell");
    assert!(
        reasons.iter().any(|r| r == "SessionRecorded"),
        "{reasons:?}"
    );
    let metrics = w.proxy.metrics();
    assert!(
        metrics.contains("gatehouse_proxy_sessions_total{kind=\"shell\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_proxy_logins_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn exec_returns_exit_codes_and_files_cross_intact() {
    let w = ProxiedWorld::with_local_store("proxy-exec").await;
    let cert = w.issue(w.request("exec")).await;
    let user = format!("{}@db1", w.login);

    let out = w
        .ssh(&cert, &user, &["echo out-$((40+2)); echo err >&2; exit 7"])
        .run();
    assert_eq!(out.code, Some(7), "{}\n{}", out.stderr, w.proxy.log_tail());
    assert_eq!(out.stdout.trim(), "out-42");
    assert_eq!(out.stderr.trim(), "err");

    // 50 MiB up with scp (SFTP protocol), back down with sftp.
    let payload: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = w.dir.path().join("payload.bin");
    std::fs::write(&local, &payload).unwrap();
    let remote_dir = w.dir.path().join("remote");
    std::fs::create_dir_all(&remote_dir).unwrap();
    let remote = remote_dir.join("payload.bin");
    let started = Instant::now();
    let out = w
        .client(Client::Scp, &cert, &user)
        .arg(&local)
        .arg(format!("{user}@127.0.0.1:{}", remote.display()))
        .run();
    assert_eq!(
        out.code,
        Some(0),
        "scp: {}\n{}",
        out.stderr,
        w.proxy.log_tail()
    );
    let uploaded = std::fs::read(&remote).unwrap();
    assert_eq!(
        sha256_hex(&uploaded),
        sha256_hex(&payload),
        "scp upload corrupted"
    );
    let scp_time = started.elapsed();

    let back = w.dir.path().join("back.bin");
    let out = w
        .client(Client::Sftp, &cert, &user)
        .stdin(format!("get {} {}\n", remote.display(), back.display()))
        .run();
    assert_eq!(
        out.code,
        Some(0),
        "sftp: {}\n{}",
        out.stderr,
        w.proxy.log_tail()
    );
    let downloaded = std::fs::read(&back).unwrap();
    assert_eq!(
        sha256_hex(&downloaded),
        sha256_hex(&payload),
        "sftp download corrupted"
    );
    eprintln!("50 MiB scp upload through the proxy: {scp_time:?}");

    // Every session is recorded: the exec with its output, the transfers as sftp sessions.
    let sessions = w.recorded("exec", 3, Duration::from_secs(20)).await;
    let store = w.local_store();
    let exec = sessions
        .iter()
        .filter_map(|s| s.recording.clone())
        .map(|r| std::fs::read_to_string(store.join(&r.key)).unwrap_or_default())
        .find(|text| text.contains("\"exec\""))
        .unwrap_or_else(|| panic!("no exec recording: {sessions:?}"));
    assert!(exec.contains("out-42"), "{exec}");
}

#[tokio::test]
async fn refused_logins_wrong_ca_expired_revoked_other_host_other_login_wrong_host_key() {
    let w = ProxiedWorld::with_local_store("proxy-refuse").await;
    let mut one_host = w.request("db1-only");
    one_host["spec"]["target"]["host"] = json!("db1");
    let cert = w.issue(one_host).await;
    let user = |host: &str| format!("{}@{host}", w.login);
    let refused = |cert: &Path, user: &str, why: &str| {
        let out = w.ssh(cert, user, &["true"]).run();
        assert_eq!(
            out.code,
            Some(255),
            "{why}: must be refused: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("Permission denied"),
            "{why}: {}",
            out.stderr
        );
    };
    // The granted host works.
    let out = w.ssh(&cert, &user("db1"), &["true"]).run();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stderr, w.proxy.log_tail());

    refused(
        &cert,
        &user("db2"),
        "another host of the group than the one requested",
    );
    refused(&cert, "postgres@db1", "another login");

    // A certificate with the right principal and key id from a CA that is not Gatehouse's.
    let status = w.s.get("db1-only").await.status.unwrap_or_default();
    let (rogue_ca, _) = generate_key(w.dir.path(), "rogue-ca");
    let principal = identity::proxied_principal(&w.s.ns, "db1-only");
    let key_id = status.key_id.clone().unwrap_or_default();
    let serial: u64 = status.serial.clone().unwrap_or_default().parse().unwrap();
    let sign = |ca: &Path, validity: &str, name: &str| {
        let spec = CertSpec {
            key_id: &key_id,
            principals: &[&principal],
            validity,
            serial,
        };
        w.certificate_from(ca, name, &spec)
    };
    refused(
        &sign(&rogue_ca, "-5m:+1h", "rogue"),
        &user("db1"),
        "a certificate from another CA",
    );

    // The real user CA (read as cluster admin), but a validity window that has ended.
    let ca_file = w.cp.ca_private_key(secrets::USER_CA, w.dir.path()).await;
    refused(
        &sign(&ca_file, "-2h:-1h", "expired"),
        &user("db1"),
        "an expired certificate",
    );

    // A target presenting another host key than the one pinned in its HostGroup.
    let (_, other_host_key) = generate_key(w.dir.path(), "impostor");
    let group = scenario::host_group(
        "impostor",
        "Proxied",
        "prod",
        &[(
            "db9".into(),
            "127.0.0.1".into(),
            w.sshd.port(),
            other_host_key,
        )],
    );
    w.s.apply(w.cp, User::Admin, &group).ok();
    let mut to_impostor = w.request("impostor");
    to_impostor["spec"]["target"] = json!({"hostGroup": "impostor"});
    let impostor_cert = w.issue(to_impostor).await;
    let out = w.ssh(&impostor_cert, &user("db9"), &["true"]).run();
    assert_eq!(out.code, Some(255), "{}", out.stderr);
    assert!(
        out.stderr.contains("not among its 1 pinned hostKeys"),
        "{}",
        out.stderr
    );

    // Revoked: refused from the moment the request says so.
    w.s.annotate(w.cp, User::Alice, "db1-only", annotations::REVOKE, "done")
        .ok();
    w.s.wait_phase("db1-only", Phase::Revoked, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    refused(&cert, &user("db1"), "a revoked request");

    let log = w.proxy.log_text();
    for reason in [
        "is not the host \\\"db1\\\" the AccessRequest is for",
        "login \\\"postgres\\\" is not the login",
        "is not valid for the Gatehouse user CA",
        "is Revoked, not Issued",
    ] {
        assert!(log.contains(reason), "proxy log lacks {reason:?}:\n{log}");
    }
}

#[tokio::test]
async fn revoking_mid_session_ends_it_within_two_seconds() {
    let w = ProxiedWorld::with_local_store("proxy-revoke").await;
    let cert = w.issue(w.request("live")).await;
    let session = w.live_session("live", &cert).await;
    let pid = session.pid();
    let revoked_at = Instant::now();
    w.s.annotate(
        w.cp,
        User::Bob,
        "live",
        annotations::REVOKE,
        "incident over",
    )
    .ok();
    let waited = tokio::task::spawn_blocking(move || session.wait())
        .await
        .unwrap();
    let took = revoked_at.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "session of pid {pid} lasted {took:?} after revoke"
    );
    assert!(
        waited
            .stderr
            .contains("is Revoked (revoked by bob: incident over); session closed"),
        "{}",
        waited.stderr
    );
    assert_eq!(waited.stdout.trim(), "started");
    let sessions = w.recorded("live", 1, Duration::from_secs(20)).await;
    let key = sessions[0]
        .recording
        .clone()
        .map(|r| r.key)
        .unwrap_or_default();
    let text = std::fs::read_to_string(w.local_store().join(key)).unwrap_or_default();
    assert!(
        text.contains("is Revoked (revoked by bob: incident over); session closed"),
        "{text}"
    );
    let metrics = w.proxy.metrics();
    assert!(
        metrics.contains("gatehouse_proxy_sessions_terminated_total{reason=\"revoked\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn recordings_survive_an_s3_outage_and_a_proxy_crash() {
    let mut minio_slot = None;
    let mut w = ProxiedWorld::start(
        "proxy-outage",
        |dir| {
            let server = Minio::start(dir);
            server.create_bucket("recordings");
            let storage = server.storage("recordings");
            minio_slot = Some(server);
            storage
        },
        json!({}),
    )
    .await;
    let mut minio = minio_slot.expect("no MinIO");
    let cert = w.issue(w.request("outage")).await;
    let user = format!("{}@db1", w.login);

    // S3 goes away during a session; the session is unaffected and the recording waits.
    let session = w
        .ssh(&cert, &user, &["echo first-$((1+1)); sleep 1; echo done"])
        .spawn();
    minio.stop();
    let out = session.wait();
    assert!(out.success, "{out:?}\n{}", w.proxy.log_tail());
    assert!(out.stdout.contains("first-2"));
    wait_for(
        Duration::from_secs(20),
        "a failed upload attempt",
        || async {
            w.proxy
                .metrics()
                .lines()
                .any(|l| {
                    l.starts_with("gatehouse_proxy_upload_failures_total ") && !l.ends_with(" 0")
                })
                .then_some(())
        },
    )
    .await;
    assert!(
        w.recorded("outage", 0, Duration::from_secs(1))
            .await
            .iter()
            .all(|s| s.recording.is_none())
    );
    minio.restart();
    let sessions = w.recorded("outage", 1, Duration::from_secs(60)).await;
    let first = sessions
        .iter()
        .find_map(|s| s.recording.clone())
        .expect("none");
    let object = minio.get("recordings", &first.key).expect("not in MinIO");
    assert_eq!(sha256_hex(&object), first.sha256);
    assert!(String::from_utf8_lossy(&object).contains("first-2"));

    // S3 down again, a session, then the proxy dies hard: the spool outlives it.
    minio.stop();
    let out = w.ssh(&cert, &user, &["echo second-$((2+1))"]).run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    w.proxy
        .await_spooled_output("second-3", Duration::from_secs(10))
        .await;
    let spool = w.proxy.spool_dir();
    w.proxy.kill();
    // What a kill in the middle of writing leaves: a half-written `.json` replacement, and a
    // `.cast` whose `.json` was never written. The restarted proxy must clear both.
    std::fs::write(spool.join(".0000000000000001.json.tmp"), "{\"half").unwrap();
    std::fs::write(spool.join("0000000000000002.cast"), "{\"version\": 2}\n").unwrap();
    minio.restart();
    w.proxy.restart();
    let sessions = w.recorded("outage", 2, Duration::from_secs(60)).await;
    let uploaded: Vec<String> = sessions
        .iter()
        .filter_map(|s| s.recording.as_ref())
        .map(|r| {
            String::from_utf8_lossy(&minio.get("recordings", &r.key).unwrap_or_default())
                .into_owned()
        })
        .collect();
    assert!(
        uploaded.iter().any(|t| t.contains("second-3")),
        "{uploaded:?}"
    );
    // The uploader writes status before it deletes the spool (a crash in between re-uploads
    // rather than loses), so the spool empties a moment after status shows the recording;
    // the planted partial files are gone from the start.
    w.proxy.await_empty_spool(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn eleventh_bad_login_from_one_address_is_blocked() {
    let w = ProxiedWorld::with_local_store("proxy-ratelimit").await;
    let cert = w.issue(w.request("limited")).await;
    let (rogue_ca, _) = generate_key(w.dir.path(), "rogue-ca");
    let bad = w.certificate_from(
        &rogue_ca,
        "bad",
        &CertSpec {
            key_id: "bad",
            principals: &[&identity::proxied_principal(&w.s.ns, "limited")],
            validity: "-5m:+1h",
            serial: 0,
        },
    );
    for attempt in 1..=10 {
        let out = w.ssh(&bad, &format!("{}@db1", w.login), &["true"]).run();
        assert_eq!(out.code, Some(255), "attempt {attempt}: {}", out.stderr);
    }
    // The 11th login from this address is refused even with a good certificate.
    let out = w.ssh(&cert, &format!("{}@db1", w.login), &["true"]).run();
    assert_eq!(
        out.code,
        Some(255),
        "the 11th login must be blocked: {}",
        out.stderr
    );
    let log = w.proxy.log_text();
    assert!(log.contains("too many failed logins"), "{log}");
    let metrics = w.proxy.metrics();
    assert!(
        metrics.contains("gatehouse_proxy_auth_failures_total{reason=\"blocked\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_proxy_auth_failures_total{reason=\"untrusted_ca\"} 10"),
        "{metrics}"
    );
}

#[tokio::test]
async fn port_forwarding_needs_the_certificate_extension() {
    let w = ProxiedWorld::start(
        "proxy-forward",
        ProxiedWorld::local_storage,
        json!({"certificate": {"extensions": ["permit-pty", "permit-port-forwarding"]},
               "recording": {"allowForwards": true}}),
    )
    .await;
    let allowed = w.issue(w.request("forward")).await;
    let user = format!("{}@db1", w.login);
    // `ssh -W` is a direct-tcpip channel: through the target to its own sshd port.
    let to = format!("127.0.0.1:{}", w.sshd.port());
    let forward = w.ssh(&allowed, &user, &[]).flag("-W").flag(&to);
    let out = for_three_seconds(forward);
    assert!(
        out.stdout.starts_with("SSH-2.0-OpenSSH"),
        "{out:?}\n{}",
        w.proxy.log_tail()
    );

    // The default policy grants permit-pty only: the same forward is refused.
    let other = ProxiedWorld::with_local_store("proxy-noforward").await;
    let denied = other.issue(other.request("noforward")).await;
    let forward = other
        .ssh(&denied, &format!("{}@db1", other.login), &[])
        .flag("-W")
        .flag(&to);
    let out = for_three_seconds(forward);
    assert!(
        out.stderr.contains("administratively prohibited"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("SSH-2.0"), "{out:?}");
}

// A policy granting `permit-port-forwarding` under `recording.required` without
// `recording.allowForwards` is now refused by the API server (CEL rule, e2e in
// policy_options.rs), so no such policy can be set up here. The proxy still refuses such
// forwards (a policy stored before the rule and kept by ratcheting): the decision is
// `session::record_rule::forward_refusal`, table-tested in the proxy crate.

#[tokio::test]
async fn a_session_that_cannot_be_recorded_is_refused_when_recording_is_required() {
    let w = ProxiedWorld::with_local_store("proxy-failclosed").await;
    let cert = w.issue(w.request("unrecordable")).await;
    std::fs::remove_dir_all(w.proxy.spool_dir()).unwrap();
    let out = w
        .ssh(&cert, &format!("{}@db1", w.login), &["echo should-not-run"])
        .run();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("should-not-run"), "{out:?}");
    assert!(
        out.stderr.contains("cannot record this session")
            && out.stderr.contains("requires recording"),
        "{out:?}"
    );
}

/// Run with stdin open (so `ssh -W` keeps its channel) and kill it after three seconds.
fn for_three_seconds(forward: SshCommand) -> CmdOutput {
    forward
        .into_cmd()
        .stdin_open()
        .kill_after(Duration::from_secs(3))
        .run()
}
