//! The writer against a real directory store: crashes (the task aborted without a flush, a
//! torn last line), an unreachable store, a lost spool and two pods of one name (each run its
//! own chain), a key already taken (never overwritten), an earlier version's spool, and the
//! bound on what waits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use gatehouse_crds::audit::{AuditEvent, verify_chain};

use super::*;
use crate::objects::LocalStore;

fn event(n: usize) -> AuditEvent {
    serde_json::from_value(serde_json::json!({
        "time": "2026-12-03T10:00:00.000001Z", "type": "sessionStarted", "message": format!("e{n}")
    }))
    .unwrap()
}

/// Every batch of `writer` in `store`: the chain verifies, and the events' messages.
async fn stored(store: &Store, writer: &str) -> (usize, Vec<String>) {
    let keys = store.list(&decide::writer_prefix(writer)).await.unwrap();
    let mut texts = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(key, &decide::batch_key(writer, i as u64), "{keys:?}");
        texts.push(String::from_utf8(store.get(key).await.unwrap()).unwrap());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let chain = verify_chain(&refs, None).unwrap();
    let mut messages = Vec::new();
    for text in &texts {
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(header["count"].as_u64().unwrap() <= decide::MAX_BATCH_EVENTS as u64);
        for line in lines {
            let event: AuditEvent = serde_json::from_str(line).unwrap();
            messages.push(event.message.unwrap());
        }
    }
    assert_eq!(chain.events as usize, messages.len());
    (keys.len(), messages)
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("e{n}")).collect()
}

async fn record_all(writer: &AuditWriter, range: std::ops::Range<usize>) {
    for n in range {
        writer.record(&event(n)).await.unwrap();
    }
}

/// Spawn the writer's task; `Some` handle to abort it (a SIGKILL: nothing is flushed).
fn start(dir: &Path, store: &Store) -> (AuditWriter, tokio::task::JoinHandle<()>) {
    let (writer, run) = AuditWriter::open(dir, "proxy-1", store.clone()).unwrap();
    (writer, tokio::spawn(run))
}

#[tokio::test]
async fn events_survive_a_crash_and_a_torn_line_in_one_chain() {
    let root = tempfile::tempdir().unwrap();
    let spool = root.path().join("spool");
    let store = Store::Local(LocalStore::new(root.path().join("store")));

    let (writer, task) = start(&spool, &store);
    record_all(&writer, 0..1500).await;
    // Killed: no shutdown, no seal of what is open; the last append is torn.
    task.abort();
    let _ = task.await;
    drop(writer);
    let mut segment = std::fs::OpenOptions::new()
        .append(true)
        .open(spool.join(spool::SEGMENT))
        .unwrap();
    std::io::Write::write_all(&mut segment, b"{\"time\":\"2026-12").unwrap();

    let (writer, task) = start(&spool, &store);
    record_all(&writer, 1500..1700).await;
    writer.shutdown().await;
    task.await.unwrap();

    // The spool was kept: one run, one chain.
    let (batches, messages) = stored(&store, writer.name()).await;
    assert_eq!(store.list("audit/").await.unwrap().len(), batches);
    assert_eq!(messages, expected(0..1700));
    assert!(batches >= 2, "{batches}");
    // Only the chain and writer files are left in the spool.
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, [spool::CHAIN, spool::SEGMENT, spool::WRITER]);
    assert_eq!(
        std::fs::metadata(spool.join(spool::SEGMENT)).unwrap().len(),
        0
    );
}

#[tokio::test]
async fn an_unreachable_store_delays_batches_and_loses_none() {
    let root = tempfile::tempdir().unwrap();
    let spool = root.path().join("spool");
    // A store under a regular file: every write fails, as in an outage.
    std::fs::write(root.path().join("down"), b"").unwrap();
    let down = Store::Local(LocalStore::new(root.path().join("down").join("store")));
    let store = Store::Local(LocalStore::new(root.path().join("store")));

    // The chain is known locally from the first run, so batches seal during the outage.
    let (writer, task) = start(&spool, &store);
    record_all(&writer, 0..10).await;
    writer.shutdown().await;
    task.await.unwrap();

    let (writer, task) = start(&spool, &down);
    record_all(&writer, 10..1300).await;
    writer.shutdown().await;
    assert!(
        writer.pending_batches() >= 2,
        "{}",
        writer.pending_batches()
    );
    // Still retrying when killed.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!task.is_finished());
    task.abort();
    let _ = task.await;

    let (writer, task) = start(&spool, &store);
    record_all(&writer, 1300..1310).await;
    writer.shutdown().await;
    task.await.unwrap();
    assert_eq!((writer.pending_batches(), writer.conflicts()), (0, 0));
    let (_, messages) = stored(&store, writer.name()).await;
    assert_eq!(messages, expected(0..1310));
}

/// Every object under `audit/`, with its bytes.
async fn objects(store: &Store) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for key in store.list("audit/").await.unwrap() {
        let bytes = store.get(&key).await.unwrap();
        all.push((key, bytes));
    }
    all
}

#[tokio::test]
async fn a_lost_spool_or_a_second_pod_of_the_name_starts_its_own_chain() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::Local(LocalStore::new(root.path().join("store")));
    let first = root.path().join("spool-1");
    let (one, task) = start(&first, &store);
    record_all(&one, 0..5).await;
    one.shutdown().await;
    task.await.unwrap();
    // Restarted with its spool: the same run, the same chain.
    let (again, task) = start(&first, &store);
    assert_eq!(again.name(), one.name());
    record_all(&again, 5..9).await;
    again.shutdown().await;
    task.await.unwrap();
    let before = objects(&store).await;
    assert_eq!(before.len(), 2);
    assert!(one.name().starts_with("proxy-1."), "{}", one.name());

    // A new, empty spool (the emptyDir lost) and, at the same time, another pod of the same
    // name: each is a new run with its own chain from 0; nothing of the first is replaced.
    let (two, task_two) = start(&root.path().join("spool-2"), &store);
    let (three, task_three) = start(&root.path().join("spool-3"), &store);
    for n in 9..12 {
        two.record(&event(n)).await.unwrap();
        three.record(&event(n + 100)).await.unwrap();
    }
    two.shutdown().await;
    three.shutdown().await;
    task_two.await.unwrap();
    task_three.await.unwrap();
    let names: BTreeSet<&str> = [one.name(), two.name(), three.name()].into();
    assert_eq!(names.len(), 3, "{names:?}");
    let after = objects(&store).await;
    for object in &before {
        assert!(after.contains(object), "{} changed", object.0);
    }
    assert_eq!(after.len(), 4);
    assert_eq!(stored(&store, one.name()).await, (2, expected(0..9)));
    assert_eq!(stored(&store, two.name()).await, (1, expected(9..12)));
    assert_eq!(stored(&store, three.name()).await, (1, expected(109..112)));
}

#[tokio::test]
async fn a_key_already_taken_by_other_bytes_is_never_overwritten() {
    // What is under batch 0's key before the writer uploads it -> whether it is stored and
    // leaves the spool, or is a conflict: kept in the spool, retried, counted.
    #[derive(Debug, Clone, Copy)]
    enum Before {
        Nothing,
        SameBytes,
        OtherBytes,
    }
    for before in [Before::Nothing, Before::SameBytes, Before::OtherBytes] {
        let root = tempfile::tempdir().unwrap();
        let spool = root.path().join("spool");
        std::fs::write(root.path().join("down"), b"").unwrap();
        let down = Store::Local(LocalStore::new(root.path().join("down").join("store")));
        let store = Store::Local(LocalStore::new(root.path().join("store")));
        // Sealed while the store is down: batch 0 waits in the spool.
        let (writer, task) = start(&spool, &down);
        record_all(&writer, 0..3).await;
        writer.shutdown().await;
        task.abort();
        let _ = task.await;
        let batch = spool.join(decide::batch_file_name(0));
        let ours = std::fs::read(&batch).unwrap();
        let key = decide::batch_key(writer.name(), 0);
        let theirs = b"{\"writer\":\"someone else\"}\n".to_vec();
        match before {
            Before::Nothing => {}
            // Our own upload that landed before a crash.
            Before::SameBytes => store.put_new_object(&key, ours.clone()).await.unwrap(),
            Before::OtherBytes => store.put_new_object(&key, theirs.clone()).await.unwrap(),
        }

        let (writer, task) = start(&spool, &store);
        writer.shutdown().await;
        match before {
            Before::Nothing | Before::SameBytes => {
                task.await.unwrap();
                assert_eq!(store.get(&key).await.unwrap(), ours, "{before:?}");
                assert!(!batch.exists(), "{before:?}");
                assert_eq!((writer.pending_batches(), writer.conflicts()), (0, 0));
            }
            Before::OtherBytes => {
                // Still retrying: never given up, never overwritten, never deleted.
                tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                assert!(!task.is_finished());
                task.abort();
                let _ = task.await;
                assert_eq!(store.get(&key).await.unwrap(), theirs);
                assert_eq!(std::fs::read(&batch).unwrap(), ours);
                assert_eq!((writer.pending_batches(), writer.conflicts()), (1, 1));
            }
        }
    }
}

#[tokio::test]
async fn an_earlier_versions_spool_goes_on_with_its_pod_named_chain() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::Local(LocalStore::new(root.path().join("store")));
    // Before run ids the writer was the pod name; its batch 0 is stored, and its spool
    // holds an acknowledged event in the open segment (and no writer file).
    let (_, text) = decide::render_next("proxy-1", None, &[event(0)]);
    store
        .put_new_object(&decide::batch_key("proxy-1", 0), text.into_bytes())
        .await
        .unwrap();
    let spool = root.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(
        spool.join(spool::SEGMENT),
        format!("{}\n", event(1).to_line()),
    )
    .unwrap();
    let (writer, task) = start(&spool, &store);
    assert_eq!(writer.name(), "proxy-1");
    record_all(&writer, 2..4).await;
    writer.shutdown().await;
    task.await.unwrap();
    assert_eq!(stored(&store, "proxy-1").await, (2, expected(0..4)));
    let named = std::fs::read_to_string(spool.join(spool::WRITER)).unwrap();
    assert_eq!(named, "proxy-1\n");
}

#[tokio::test]
async fn without_the_chain_the_open_segment_is_bounded_and_then_refuses() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("down"), b"").unwrap();
    let down = Store::Local(LocalStore::new(root.path().join("down").join("store")));
    let spool = root.path().join("spool");
    // A spool that names its writer but has lost its chain file: the chain is not known
    // until the store answers.
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join(spool::WRITER), "proxy-1.0123456789abcdef\n").unwrap();
    let (writer, task) = start(&spool, &down);
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..decide::MAX_BATCH_EVENTS {
        let writer = writer.clone();
        waiting.spawn(async move { writer.record(&event(n)).await });
    }
    while let Some(done) = waiting.join_next().await {
        done.unwrap().unwrap();
    }
    let refused = writer.record(&event(1000)).await.unwrap_err();
    assert!(matches!(refused, Error::AuditSegmentFull), "{refused}");
    task.abort();
    let _ = task.await;

    // Once the store answers, the 1000 acknowledged events are stored as one batch.
    let store = Store::Local(LocalStore::new(root.path().join("store")));
    let (writer, task) = start(&spool, &store);
    writer.shutdown().await;
    task.await.unwrap();
    let (batches, messages) = stored(&store, "proxy-1.0123456789abcdef").await;
    assert_eq!(batches, 1);
    assert_eq!(
        messages.into_iter().collect::<BTreeSet<_>>(),
        expected(0..1000).into_iter().collect()
    );
}

#[test]
fn a_segment_sealed_just_before_a_crash_is_not_sealed_twice() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let (mut spool, recovered) = spool::Spool::open(dir, "w").unwrap();
    // A fresh spool: a new run, whose chain is new.
    assert!(recovered.new_run && spool.writer().starts_with("w."));
    assert_eq!(spool.head(), Some(None));
    let writer = spool.writer().to_owned();
    let lines: Vec<String> = (0..3).map(|n| event(n).to_line()).collect();
    spool.append(&lines).unwrap();
    let segment = std::fs::read(dir.join(spool::SEGMENT)).unwrap();
    assert_eq!(spool.seal().unwrap(), Some(0));
    drop(spool);
    // The crash came before the segment was emptied.
    std::fs::write(dir.join(spool::SEGMENT), &segment).unwrap();
    let (spool, recovered) = spool::Spool::open(dir, "w").unwrap();
    assert_eq!(spool.writer(), writer);
    assert!(
        recovered.already_sealed && !recovered.new_run,
        "{recovered:?}"
    );
    assert_eq!((spool.events(), recovered.sealed), (0, 1));
    assert_eq!(spool.head().unwrap().unwrap().sequence, 0);
    // Likewise after the batch was uploaded and deleted: the chain file remembers it.
    std::fs::remove_file(dir.join(decide::batch_file_name(0))).unwrap();
    std::fs::write(dir.join(spool::SEGMENT), &segment).unwrap();
    let (spool, recovered) = spool::Spool::open(dir, "w").unwrap();
    assert!(
        recovered.already_sealed && spool.events() == 0,
        "{recovered:?}"
    );
}

#[test]
fn a_writer_name_that_is_no_pod_name_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::Local(LocalStore::new(root.path()));
    for name in ["", "../x", "Proxy", "a/b"] {
        let refused = AuditWriter::open(root.path(), name, store.clone()).map(|_| ());
        assert!(matches!(refused, Err(Error::AuditWriterName(_))), "{name}");
    }
    // Nor does a spool whose writer file was damaged guess a writer.
    let spool = root.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join(spool::WRITER), "Not/A/Name\n").unwrap();
    let refused = AuditWriter::open(&spool, "proxy-1", store).map(|_| ());
    assert!(
        matches!(refused, Err(Error::AuditSpool { .. })),
        "{refused:?}"
    );
}
