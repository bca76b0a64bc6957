//! Durable audit events (issue 15), end to end: the real `gatehouse-proxy` on a real MinIO,
//! real `ssh` sessions through it to a real `sshd`. N sessions with the store up, M more while
//! MinIO is stopped (logins still work: each event is fsynced in the proxy's audit spool before
//! the login or session goes on), then the proxy is SIGKILLed with batches sealed but not
//! uploaded and events in the open segment; MinIO and the proxy come back. Every batch under
//! `audit/<writer>/` (the writer is `<POD_NAME>.<run id>`: one run, its spool is kept) is read
//! back with curl, the hash chain verifies, and the request's
//! loginAccepted / sessionStarted / sessionEnded events are counted: exactly N+M each, every
//! session once.
//!
//! The operator likewise: an extra operator with a pending TTL of seconds (the shared one's is
//! 24h) is the only one to expire the test's pending requests; it stores its audit events in
//! MinIO. Some requests expire while MinIO is up, the rest while it is stopped; the operator
//! is SIGKILLed, MinIO and the operator come back, and exactly one `expired` event per request
//! is in its chain.
//!
//! And the boundary: a login whose `loginAccepted` cannot be made durable (the audit spool's
//! file system is full: a 256 KiB tmpfs filled up) is refused, and accepted again once there
//! is room.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use gatehouse_crds::{Phase, audit::verify_chain};
use gatehouse_tests::{
    Cmd, User, control_plane,
    minio::{ACCESS_KEY, Minio, SECRET_KEY},
    operator::{Operator, OperatorConfig},
    proxied_world::ProxiedWorld,
    scenario::{self, Scenario, Setup, public_key},
    wait_for,
};
use serde_json::{Value, json};

const BUCKET: &str = "recordings";
/// The harness's POD_NAME of the proxy: its batches' writer is `<POD_NAME>.<run id>`.
const WRITER: &str = "proxy-under-test";

/// The batch keys of pod `pod`'s one run (`audit/<pod>.<run id>/`): Err if it had several
/// (its spool is kept across restarts here, so it is one run, one chain).
fn run_keys(minio: &Minio, pod: &str) -> Result<Vec<String>, String> {
    let keys = minio.list(BUCKET, &format!("audit/{pod}."));
    let mut writers: Vec<&str> = keys.iter().filter_map(|k| k.split('/').nth(1)).collect();
    writers.dedup();
    match writers.len() {
        0 | 1 => Ok(keys),
        _ => Err(format!("{pod} had more than one run: {writers:?}")),
    }
}

/// Every stored batch of pod `pod`'s run: Err when the chain does not verify, else its events.
fn stored_events(minio: &Minio, pod: &str) -> Result<Vec<Value>, String> {
    let keys = run_keys(minio, pod)?;
    let mut texts = Vec::new();
    for key in &keys {
        let bytes = minio
            .get(BUCKET, key)
            .ok_or_else(|| format!("{key} is listed but cannot be read"))?;
        texts.push(String::from_utf8(bytes).map_err(|e| format!("{key}: {e}"))?);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let chain = verify_chain(&refs, None).map_err(|e| format!("{e} in {keys:?}"))?;
    let events: Vec<Value> = texts
        .iter()
        .flat_map(|t| t.lines().skip(1))
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    assert_eq!(chain.events as usize, events.len());
    Ok(events)
}

/// Per type, how many events of request `name` in `ns`; and per (type, sessionId), how often.
fn tally(events: &[Value], ns: &str, name: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut types = BTreeMap::new();
    let mut sessions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e["namespace"] == ns && e["request"]["name"] == name)
    {
        let type_ = event["type"].as_str().unwrap_or_default().to_owned();
        *types.entry(type_.clone()).or_default() += 1;
        if let Some(id) = event["sessionId"].as_str() {
            *sessions.entry((type_, id.to_owned())).or_default() += 1;
        }
    }
    let repeated = sessions
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((t, id), n)| format!("{t} {id} x{n}"))
        .collect();
    (types, repeated)
}

/// Lines in the audit spool's files (open segment and sealed batches) naming `needle`.
fn spooled(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.lines().filter(|l| l.contains(needle)).count())
                .sum()
        })
        .unwrap_or(0)
}

fn sealed_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 26 && n.ends_with(".jsonl"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn proxy_audit_events_survive_an_s3_outage_and_a_sigkill() {
    const N: usize = 3;
    const M: usize = 4;
    let mut minio_slot = None;
    let mut w = ProxiedWorld::start(
        "audit-durable",
        |dir| {
            let server = Minio::start(dir);
            server.create_bucket(BUCKET);
            let storage = server.storage(BUCKET);
            minio_slot = Some(server);
            storage
        },
        json!({}),
    )
    .await;
    let mut minio = minio_slot.expect("no MinIO");
    let ns = w.s.ns.clone();
    let audit_spool: PathBuf = w
        .proxy
        .spool_dir()
        .parent()
        .expect("the spool has a parent")
        .join("audit-spool");
    let cert = w.issue(w.request("durable")).await;
    let user = format!("{}@db1", w.login);
    let ssh = |i: usize| {
        let out = w.ssh(&cert, &user, &[&format!("echo audit-{i}")]).run();
        assert_eq!(
            out.code,
            Some(0),
            "session {i}: {out:?}\n{}",
            w.proxy.log_tail()
        );
        assert_eq!(out.stdout.trim(), format!("audit-{i}"));
    };

    for i in 0..N {
        ssh(i);
    }
    // With the store up, the first sessions' events reach it within seconds.
    wait_for(
        Duration::from_secs(20),
        "the first sessions' events in MinIO",
        || async {
            let events = stored_events(&minio, WRITER).ok()?;
            let (types, _) = tally(&events, &ns, "durable");
            (types.get("sessionEnded") == Some(&N)).then_some(())
        },
    )
    .await;

    // Outage: logins and sessions go on, their events wait in the spool.
    minio.stop();
    for i in N..N + M {
        ssh(i);
    }
    // Every session's end is written (the last one, moments ago, in the open segment)...
    wait_for(
        Duration::from_secs(10),
        "the sessions' ends in the audit spool",
        || async { (spooled(&audit_spool, "\"sessionEnded\"") >= M).then_some(()) },
    )
    .await;
    // A segment is sealed a second after its first event: wait for one (a loaded machine
    // may be slow to get there).
    wait_for(
        Duration::from_secs(10),
        "a batch sealed in the audit spool during the outage",
        || async { (!sealed_in(&audit_spool).is_empty()).then_some(()) },
    )
    .await;
    let sealed = sealed_in(&audit_spool);
    let metrics = w.proxy.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gatehouse_audit_pending_batches ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // ...and the proxy dies hard.
    w.proxy.kill();
    let open = std::fs::read_to_string(audit_spool.join("open.jsonl")).unwrap_or_default();
    eprintln!(
        "killed with {} sealed batches waiting and {} events in the open segment",
        sealed.len(),
        open.lines().count()
    );

    minio.restart();
    w.proxy.restart();
    let events = wait_for(Duration::from_secs(60), "every event in MinIO", || async {
        let events = stored_events(&minio, WRITER).ok()?;
        let (types, _) = tally(&events, &ns, "durable");
        (types.get("sessionEnded") >= Some(&(N + M)) && sealed_in(&audit_spool).is_empty())
            .then_some(events)
    })
    .await;
    let (types, repeated) = tally(&events, &ns, "durable");
    for type_ in ["loginAccepted", "sessionStarted", "sessionEnded"] {
        assert_eq!(types.get(type_), Some(&(N + M)), "{type_}: {types:?}");
    }
    assert!(repeated.is_empty(), "events repeated: {repeated:?}");
    // One chain: batch keys are 0, 1, 2, … and the chain verified above.
    let keys = run_keys(&minio, WRITER).unwrap();
    let writer = keys[0].split('/').nth(1).unwrap().to_owned();
    assert!(writer.starts_with(&format!("{WRITER}.")), "{writer}");
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(key, &format!("audit/{writer}/{i:020}.jsonl"), "{keys:?}");
    }

    // `kubectl gatehouse audit verify` with the auditor's store environment: the trail this
    // proxy wrote (and its recordings) is whole; with its first batch deleted it names where
    // the chain now starts.
    let store = minio.store(BUCKET);
    let verify = || {
        Cmd::new(gatehouse_tests::repo_root().join("target/debug/kubectl-gatehouse"))
            .args(["audit", "verify"])
            .env("GATEHOUSE_S3_ENDPOINT", &store.endpoint)
            .env("GATEHOUSE_S3_BUCKET", BUCKET)
            .env("GATEHOUSE_S3_REGION", &store.region)
            .env("GATEHOUSE_S3_PATH_STYLE", "true")
            .env("AWS_ACCESS_KEY_ID", &store.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &store.secret_key)
            .run()
    };
    let whole = verify();
    assert_eq!(whole.code, Some(0), "{}\n{}", whole.stdout, whole.stderr);
    assert!(keys.len() >= 2, "{keys:?}");
    minio
        .s3_request("DELETE", &format!("{BUCKET}/{}", keys[0]), &[], None)
        .ok();
    let broken = verify();
    assert_eq!(broken.code, Some(1), "{}\n{}", broken.stdout, broken.stderr);
    assert!(
        broken
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("FAIL {}: ", keys[1])) && l.contains("sequence")),
        "{}",
        broken.stdout
    );
}

/// How many requests of `ns` the events hold an `expired` event for, and any repeated.
fn expired(events: &[Value], ns: &str) -> (usize, Vec<String>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e["namespace"] == ns && e["type"] == "expired")
    {
        let name = event["request"]["name"].as_str().unwrap_or_default();
        *seen.entry(name.to_owned()).or_default() += 1;
    }
    let repeated = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, n)| format!("{r} x{n}"))
        .collect();
    (seen.len(), repeated)
}

#[tokio::test]
async fn operator_audit_events_survive_an_s3_outage_and_a_sigkill() {
    const N: usize = 3;
    const M: usize = 3;
    let cp = control_plane();
    // Requests wait for an approval nobody gives.
    let s = Scenario::new(cp, "audit-op", &Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut minio = Minio::start(dir.path());
    minio.create_bucket(BUCKET);
    let public = public_key();
    let writer = format!("{}-operator", s.ns);
    let spool = dir.path().join("operator-audit-spool");
    let system = cp.namespace("audit-op-system").await;
    let config = OperatorConfig {
        pending_ttl: Some("3s".to_owned()),
        env: [
            ("POD_NAME", writer.clone()),
            ("GATEHOUSE_AUDIT_STORE", "s3".to_owned()),
            ("GATEHOUSE_AUDIT_SPOOL_DIR", spool.display().to_string()),
            ("GATEHOUSE_S3_ENDPOINT", minio.endpoint()),
            ("GATEHOUSE_S3_BUCKET", BUCKET.to_owned()),
            ("GATEHOUSE_S3_PATH_STYLE", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        ..OperatorConfig::extra(cp, &system, &s.ns)
    };
    let make = async |name: &str| {
        s.apply(cp, User::Alice, &scenario::request(name, "ubuntu", &public))
            .ok();
        s.wait_phase(name, Phase::Pending, Duration::from_secs(10))
            .await;
    };
    let names: Vec<String> = (0..N + M).map(|i| format!("r{i}")).collect();
    for name in &names[..N] {
        make(name).await;
    }
    // The extra operator expires them and stores the events.
    let mut later = Operator::start(&config);
    for name in &names[..N] {
        s.wait_phase(name, Phase::Expired, Duration::from_secs(15))
            .await;
    }
    wait_for(
        Duration::from_secs(20),
        "the first expiries in MinIO",
        || async {
            let (count, _) = expired(&stored_events(&minio, &writer).ok()?, &s.ns);
            (count == N).then_some(())
        },
    )
    .await;

    // Outage: it stops, more requests are made and expire while MinIO is down.
    later.stop();
    minio.stop();
    for name in &names[N..] {
        make(name).await;
    }
    let later = Operator::start(&config);
    for name in &names[N..] {
        s.wait_phase(name, Phase::Expired, Duration::from_secs(15))
            .await;
    }
    wait_for(
        Duration::from_secs(10),
        "the expiries in the audit spool",
        || async { (spooled(&spool, "\"expired\"") >= M).then_some(()) },
    )
    .await;
    // SIGKILL: no chance to seal or upload.
    drop(later);

    minio.restart();
    let _again = Operator::start(&config);
    let events = wait_for(Duration::from_secs(60), "every expiry in MinIO", || async {
        let events = stored_events(&minio, &writer).ok()?;
        let (count, _) = expired(&events, &s.ns);
        (count == N + M && sealed_in(&spool).is_empty()).then_some(events)
    })
    .await;
    let (count, repeated) = expired(&events, &s.ns);
    assert_eq!(count, N + M);
    assert!(repeated.is_empty(), "expiries repeated: {repeated:?}");
}

/// A tmpfs of `size` mounted on `dir` while this lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Cmd::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(dir)
            .run()
            .ok();
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Cmd::new("umount").arg("-l").arg(&self.0).run();
    }
}

/// Fill the file system of `dir` with `dir/filler` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file =
        std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let chunk = vec![b'x'; 4096];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
    path
}

#[tokio::test]
async fn a_login_whose_audit_event_cannot_be_made_durable_is_refused() {
    let mount = tempfile::tempdir().unwrap();
    let spool = mount.path().join("audit-spool");
    let _tmpfs = Tmpfs::mount(&spool, "256k");
    let spool_arg = format!("--audit-spool-dir={}", spool.display());
    let w = ProxiedWorld::start_with_args(
        "audit-full",
        ProxiedWorld::local_storage,
        json!({}),
        &[&spool_arg],
    )
    .await;
    let cert = w.issue(w.request("full")).await;
    let user = format!("{}@db1", w.login);
    let out = w.ssh(&cert, &user, &["echo before"]).run();
    assert_eq!(out.code, Some(0), "{out:?}\n{}", w.proxy.log_tail());

    // Once the first session's events are stored the segment is empty (no page to write in)
    // and the stored batch's file is gone (freeing no page after the fill).
    // The proxy's run's batches: `audit/<WRITER>.<run id>/` (one run).
    let audit = w.local_store().join("audit");
    let run = format!("{WRITER}.");
    let stored = |needle: &'static str| {
        let audit = audit.clone();
        let run = run.clone();
        move || {
            let text: String = std::fs::read_dir(&audit)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|d| d.file_name().to_string_lossy().starts_with(&run))
                .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect();
            text.lines().filter(|l| l.contains(needle)).count()
        }
    };
    let ended = stored("\"sessionEnded\"");
    wait_for(
        Duration::from_secs(20),
        "the first session stored",
        || async {
            let empty = std::fs::metadata(spool.join("open.jsonl")).is_ok_and(|m| m.len() == 0);
            (ended() == 1 && empty && sealed_in(&spool).is_empty()).then_some(())
        },
    )
    .await;

    // The attacker's lever: no room for the event. The login must not go through unrecorded.
    let filler = fill(&spool);
    let out = w.ssh(&cert, &user, &["echo unaudited"]).run();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("unaudited"), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(
        w.proxy
            .log_text()
            .contains("login refused: its audit event could not be made durable"),
        "{}",
        w.proxy.log_tail()
    );

    // Room again: logins work, and the store holds exactly the two accepted ones.
    std::fs::remove_file(filler).unwrap();
    let out = w.ssh(&cert, &user, &["echo after"]).run();
    assert_eq!(out.code, Some(0), "{out:?}\n{}", w.proxy.log_tail());
    wait_for(
        Duration::from_secs(20),
        "both sessions' ends stored",
        || async { (ended() == 2).then_some(()) },
    )
    .await;
    assert_eq!(stored("\"loginAccepted\"")(), 2);
}
