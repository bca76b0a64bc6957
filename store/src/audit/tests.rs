//! The writer against a real directory store: crashes (the task aborted without a flush, a
//! torn last line), an unreachable store, a lost spool, and the bound on what waits.

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

    let (batches, messages) = stored(&store, "proxy-1").await;
    assert_eq!(messages, expected(0..1700));
    assert!(batches >= 2, "{batches}");
    // Only the chain file is left in the spool.
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, [spool::CHAIN, spool::SEGMENT]);
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
    assert_eq!(writer.pending_batches(), 0);
    let (_, messages) = stored(&store, "proxy-1").await;
    assert_eq!(messages, expected(0..1310));
}

#[tokio::test]
async fn a_lost_spool_continues_the_chain_after_the_stores_newest_batch() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::Local(LocalStore::new(root.path().join("store")));
    let first = root.path().join("spool-1");
    let (writer, task) = start(&first, &store);
    record_all(&writer, 0..5).await;
    writer.shutdown().await;
    task.await.unwrap();
    let (writer, task) = start(&first, &store);
    record_all(&writer, 5..9).await;
    writer.shutdown().await;
    task.await.unwrap();

    // A new, empty spool (no chain file): the chain goes on from the store.
    let (writer, task) = start(&root.path().join("spool-2"), &store);
    record_all(&writer, 9..12).await;
    writer.shutdown().await;
    task.await.unwrap();
    let (batches, messages) = stored(&store, "proxy-1").await;
    assert_eq!((batches, messages), (3, expected(0..12)));
}

#[tokio::test]
async fn without_the_chain_the_open_segment_is_bounded_and_then_refuses() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("down"), b"").unwrap();
    let down = Store::Local(LocalStore::new(root.path().join("down").join("store")));
    let spool = root.path().join("spool");
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
    let (batches, messages) = stored(&store, "proxy-1").await;
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
    let (mut spool, _) = spool::Spool::open(dir, "w").unwrap();
    spool.set_head(None);
    let lines: Vec<String> = (0..3).map(|n| event(n).to_line()).collect();
    spool.append(&lines).unwrap();
    let segment = std::fs::read(dir.join(spool::SEGMENT)).unwrap();
    assert_eq!(spool.seal().unwrap(), Some(0));
    drop(spool);
    // The crash came before the segment was emptied.
    std::fs::write(dir.join(spool::SEGMENT), &segment).unwrap();
    let (spool, recovered) = spool::Spool::open(dir, "w").unwrap();
    assert!(recovered.already_sealed, "{recovered:?}");
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
}
