//! Audit batches are write-once, and no run overwrites another's chain, end to end on a real
//! MinIO.
//!
//! The attack (or accident): two proxies with one `POD_NAME` (a copied manifest, a hostname
//! fallback, StatefulSet-style name reuse), and a proxy that comes back under its name with an
//! emptied audit spool (the emptyDir lost). Before run ids, each such writer claimed the same
//! `audit/<pod>/<sequence>.jsonl` keys and replaced the other's batches (plain PUTs): recorded
//! evidence gone, and the chain `audit verify` reads was the newcomer's. Now each fresh spool is
//! a run of its own (`<pod>.<run id>`) and every upload is create-only: every object seen in the
//! bucket keeps its bytes to the end, no event is lost, and the real `kubectl gatehouse audit
//! verify` passes listing one chain per run, each from sequence 0.
//!
//! And the store-level guard under it, with the store's own client on a locked (versioned)
//! bucket: a batch whose key already holds other bytes is never stored over them (no second
//! version), stays in the writer's spool and is counted as a conflict; a pod's second run on
//! the same bucket writes a chain of its own.

#![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use gatehouse_crds::audit::{AuditEvent, verify_chain};
use gatehouse_proxy::recording::store::{
    LockMode, ObjectLock, S3Config, S3Store, Store,
    audit::{AuditWriter, decide},
};
use gatehouse_tests::{
    Cmd,
    minio::Minio,
    proxied_world::ProxiedWorld,
    proxy::{Proxy, ProxyConfig},
    ssh_client::Client,
    wait_for,
};
use serde_json::{Value, json};

const BUCKET: &str = "recordings";
/// The harness's `POD_NAME`, which both proxies here get.
const POD: &str = "proxy-under-test";
/// The request whose sessions are counted.
const REQUEST: &str = "write-once";

/// Every object under `audit/`, with its bytes.
fn audit_objects(minio: &Minio) -> BTreeMap<String, Vec<u8>> {
    minio
        .list(BUCKET, "audit/")
        .into_iter()
        .filter_map(|key| Some((key.clone(), minio.get(BUCKET, &key)?)))
        .collect()
}

/// Remember each object's bytes the first time it is seen; fail if a known one changed.
#[track_caller]
fn unchanged(seen: &mut BTreeMap<String, Vec<u8>>, now: &BTreeMap<String, Vec<u8>>) {
    for (key, bytes) in now {
        let first = seen.entry(key.clone()).or_insert_with(|| bytes.clone());
        assert!(first == bytes, "{key} was overwritten");
    }
    for key in seen.keys() {
        assert!(now.contains_key(key), "{key} is gone");
    }
}

/// The writers' chains (each verified) and the `sessionEnded` events of the request in them.
fn chains(objects: &BTreeMap<String, Vec<u8>>, ns: &str) -> Result<(Vec<String>, usize), String> {
    let mut writers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, bytes) in objects {
        let writer = key.split('/').nth(1).ok_or(format!("{key}: no writer"))?;
        let text = std::str::from_utf8(bytes).map_err(|e| format!("{key}: {e}"))?;
        writers.entry(writer).or_default().push(text);
    }
    let mut ended = 0;
    for (writer, texts) in &writers {
        verify_chain(texts, None).map_err(|e| format!("{writer}: {e}"))?;
        ended += texts
            .iter()
            .flat_map(|t| t.lines().skip(1))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["namespace"] == ns
                    && e["request"]["name"] == REQUEST
                    && e["type"] == "sessionEnded"
            })
            .count();
    }
    Ok((writers.keys().map(|w| (*w).to_owned()).collect(), ended))
}

#[tokio::test]
async fn two_proxies_of_one_pod_name_and_a_lost_spool_never_overwrite_a_batch() {
    let mut minio_slot = None;
    let mut w = ProxiedWorld::start(
        "write-once",
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
    let minio = minio_slot.expect("no MinIO");
    let ns = w.s.ns.clone();
    let cert = w.issue(w.request(REQUEST)).await;
    let user = format!("{}@db1", w.login);
    let run = |proxy: &Proxy, i: usize| {
        let out = proxy
            .client(Client::Ssh, &user, &w.key, &cert, &w.known_hosts)
            .args([&format!("echo once-{i}")])
            .run();
        assert_eq!(
            out.code,
            Some(0),
            "session {i}: {out:?}\n{}",
            proxy.log_tail()
        );
        assert_eq!(out.stdout.trim(), format!("once-{i}"));
    };
    let mut seen = BTreeMap::new();
    let mut sessions = 0;
    // Until every session so far has its end stored (no event lost), checking on every look
    // that nothing seen before changed.
    let settle = async |seen: &mut BTreeMap<String, Vec<u8>>, sessions: usize, what: &str| {
        let mut last = String::new();
        wait_for(Duration::from_secs(60), what, || {
            let now = audit_objects(&minio);
            unchanged(seen, &now);
            let found = chains(&now, &ns);
            // What the store holds, each time it changes (a timeout then says why).
            let state = format!("{found:?}");
            if state != last {
                eprintln!(
                    "{what}: {} objects, chains and sessions ended: {state}",
                    now.len()
                );
                last = state;
            }
            async move { found.ok().filter(|(_, ended)| *ended >= sessions) }
        })
        .await
    };

    // The first proxy's run.
    for _ in 0..2 {
        run(&w.proxy, sessions);
        sessions += 1;
    }
    let (writers, _) = settle(&mut seen, sessions, "the first run's batches").await;
    assert_eq!(writers.len(), 1, "{writers:?}");

    // A second proxy of the same POD_NAME on the same bucket, both taking sessions.
    let second = Proxy::start(
        w.cp,
        ProxyConfig::new(w.dir.path().join("second-proxy"), minio.storage(BUCKET)),
    );
    for _ in 0..2 {
        run(&second, sessions);
        run(&w.proxy, sessions + 1);
        sessions += 2;
    }
    let (writers, _) = settle(&mut seen, sessions, "both proxies' batches").await;
    assert_eq!(writers.len(), 2, "{writers:?}");

    // The first proxy dies and comes back with its audit spool emptied (a new emptyDir).
    w.proxy.kill();
    let audit_spool = w.proxy.spool_dir().parent().unwrap().join("audit-spool");
    assert!(
        audit_spool.join("writer").exists(),
        "{}",
        audit_spool.display()
    );
    std::fs::remove_dir_all(&audit_spool).unwrap();
    w.proxy.restart();
    for _ in 0..2 {
        run(&w.proxy, sessions);
        sessions += 1;
    }
    let (writers, ended) = settle(&mut seen, sessions, "the third run's batches").await;
    // Three runs, three chains, and every session's end once.
    assert_eq!(writers.len(), 3, "{writers:?}");
    assert_eq!(ended, sessions);
    for writer in &writers {
        assert!(writer.starts_with(&format!("{POD}.")), "{writer}");
    }
    unchanged(&mut seen, &audit_objects(&minio));

    // The auditor's `kubectl gatehouse audit verify` agrees: three chains, each from 0.
    let store = minio.store(BUCKET);
    let out = Cmd::new(gatehouse_tests::repo_root().join("target/debug/kubectl-gatehouse"))
        .args(["audit", "verify", "-o", "json"])
        .env("GATEHOUSE_S3_ENDPOINT", &store.endpoint)
        .env("GATEHOUSE_S3_BUCKET", BUCKET)
        .env("GATEHOUSE_S3_REGION", &store.region)
        .env("GATEHOUSE_S3_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", &store.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &store.secret_key)
        .run();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["problems"], json!([]), "{report}");
    let listed: Vec<(String, u64)> = report["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let name = w["writer"].as_str().unwrap().to_owned();
            (name, w["firstSequence"].as_u64().unwrap())
        })
        .collect();
    let want: Vec<(String, u64)> = writers.iter().map(|w| (w.clone(), 0)).collect();
    assert_eq!(listed, want);
}

/// The store's own client on `bucket` of `minio`, with a lock if `locked`.
fn s3(endpoint: &str, minio: &Minio, locked: bool) -> Store {
    let info = minio.store(BUCKET);
    let lock = locked.then_some(ObjectLock {
        mode: LockMode::Governance,
        retention: Duration::from_secs(3600),
    });
    Store::S3(
        S3Store::new(S3Config {
            endpoint: Some(endpoint.to_owned()),
            bucket: BUCKET.to_owned(),
            region: info.region.clone(),
            access_key_id: info.access_key.clone(),
            secret_access_key: info.secret_key.clone(),
            path_style: true,
            prefix: String::new(),
        })
        .with_object_lock(lock),
    )
}

fn event(n: usize) -> AuditEvent {
    serde_json::from_value(json!({
        "time": "2026-12-07T03:00:00.000001Z", "type": "sessionStarted", "message": format!("e{n}")
    }))
    .unwrap()
}

/// Open a writer for pod `POD` on `spool`, record `events`, seal; the task keeps running.
async fn write(
    spool: &Path,
    store: &Store,
    events: std::ops::Range<usize>,
) -> (AuditWriter, tokio::task::JoinHandle<()>) {
    let (writer, task) = AuditWriter::open(spool, POD, store.clone()).unwrap();
    let task = tokio::spawn(task);
    for n in events {
        writer.record(&event(n)).await.unwrap();
    }
    writer.shutdown().await;
    (writer, task)
}

#[tokio::test]
async fn on_a_locked_bucket_a_taken_key_is_kept_and_a_second_run_has_its_own_chain() {
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(dir.path());
    minio.create_locked_bucket(BUCKET);
    let store = s3(&minio.endpoint(), &minio, true);
    store.check_object_lock().await.unwrap();

    // Run one, then a second run of the same pod (a fresh spool): two chains from 0.
    let (one, task) = write(&dir.path().join("spool-1"), &store, 0..3).await;
    task.await.unwrap();
    let before = audit_objects(&minio);
    let (two, task) = write(&dir.path().join("spool-2"), &store, 3..5).await;
    task.await.unwrap();
    assert_ne!(one.name(), two.name());
    let after = audit_objects(&minio);
    for (key, bytes) in &before {
        assert_eq!(after.get(key), Some(bytes), "{key}");
    }
    let keys: BTreeSet<&str> = after.keys().map(String::as_str).collect();
    let want: BTreeSet<String> = [one.name(), two.name()]
        .into_iter()
        .map(|w| decide::batch_key(w, 0))
        .collect();
    assert_eq!(keys, want.iter().map(String::as_str).collect());

    // A third run seals its batch while the store is unreachable; then someone else's
    // object takes that batch's key. The batch is never stored over it: no second version,
    // the batch stays in the spool, counted as a conflict, still retried.
    let spool = dir.path().join("spool-3");
    let unreachable = s3("http://127.0.0.1:9", &minio, true);
    let (three, task) = write(&spool, &unreachable, 5..7).await;
    task.abort();
    let _ = task.await;
    let key = decide::batch_key(three.name(), 0);
    let ours = std::fs::read(spool.join(decide::batch_file_name(0))).unwrap();
    let theirs = b"{\"writer\":\"someone else\"}\n".to_vec();
    store.put_new_object(&key, theirs.clone()).await.unwrap();
    let (again, task) = AuditWriter::open(&spool, POD, store.clone()).unwrap();
    assert_eq!(again.name(), three.name());
    let task = tokio::spawn(task);
    wait_for(Duration::from_secs(20), "the conflict counted", || async {
        (again.conflicts() == 1).then_some(())
    })
    .await;
    again.shutdown().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "the writer gave up on its batch");
    task.abort();
    let _ = task.await;
    assert_eq!(again.pending_batches(), 1);
    assert_eq!(minio.get(BUCKET, &key).unwrap(), theirs);
    assert_eq!(minio.versions(BUCKET, &key).len(), 1);
    assert_eq!(
        std::fs::read(spool.join(decide::batch_file_name(0))).unwrap(),
        ours
    );
    // The earlier runs' batches: one version each, as written.
    for key in before.keys().chain(want.iter()) {
        assert_eq!(minio.versions(BUCKET, key).len(), 1, "{key}");
    }
}
