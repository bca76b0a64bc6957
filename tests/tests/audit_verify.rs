//! `kubectl gatehouse audit verify` (issue 15 acceptance: "passes, then fails naming the batch
//! after one audit object is deleted or edited in MinIO"), with the real `kubectl-gatehouse`
//! reading a real store: a directory, and a real MinIO bucket through the S3 environment an
//! auditor would set. The batches are written as the writers write them (`render_batch`, the
//! contract's keys), with a recording that a `recordingStored` event names.
//!
//! The attacker here has write access to the store (a leaked key, an operator with too much
//! access): deleting a batch, editing a batch, swapping a recording's bytes, or dropping a
//! stray object in must each make `verify` exit 1 naming the object.

#![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

use std::path::{Path, PathBuf};

use gatehouse_crds::audit::{
    AuditEvent, BatchHeader, EventType, RecordingDetail, batch_sha256, render_batch,
};
use gatehouse_tests::{Cmd, CmdOutput, minio::Minio, repo_root, sha256_hex};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

const CAST: &str =
    "{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.1, \"o\", \"hello\\r\\n\"]\n";
const RECORDING_KEY: &str = "recordings/2026-12-03/alice_prod-db-01_0f3a9c2b1d4e5f60.cast";

fn key(writer: &str, sequence: u64) -> String {
    format!("audit/{writer}/{sequence:020}.jsonl")
}

fn event(second: i64, type_: EventType) -> AuditEvent {
    let time = jiff::Timestamp::from_second(1_796_300_000 + second).unwrap();
    let mut e = AuditEvent::new(MicroTime(time), type_);
    e.namespace = Some("team".into());
    e.host = Some("prod-db-01".into());
    e
}

/// Three chained batches of `writer`; the second names the recording.
fn batches(writer: &str) -> Vec<(String, String)> {
    let mut stored = event(3, EventType::RecordingStored);
    stored.recording = Some(RecordingDetail {
        key: RECORDING_KEY.to_owned(),
        sha256: sha256_hex(CAST.as_bytes()),
        bytes: CAST.len() as u64,
    });
    let contents = [
        vec![
            event(0, EventType::LoginAccepted),
            event(1, EventType::SessionStarted),
        ],
        vec![event(2, EventType::SessionEnded), stored],
        vec![event(4, EventType::Revoked)],
    ];
    let mut previous = String::new();
    contents
        .iter()
        .enumerate()
        .map(|(sequence, events)| {
            let header = BatchHeader {
                writer: writer.to_owned(),
                sequence: sequence as u64,
                previous_batch_sha256: previous.clone(),
                count: 0,
            };
            let text = render_batch(&header, events);
            previous = batch_sha256(&text);
            (key(writer, sequence as u64), text)
        })
        .collect()
}

fn plugin() -> PathBuf {
    let bin = repo_root().join("target/debug/kubectl-gatehouse");
    assert!(bin.exists(), "build it first: cargo build -p gatehouse-cli");
    bin
}

fn write(dir: &Path, key: &str, bytes: &[u8]) {
    let path = dir.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn verify_dir(dir: &Path) -> CmdOutput {
    Cmd::new(plugin())
        .args(["audit", "verify", "--store-dir"])
        .arg(dir)
        .env_remove_s3()
        .run()
}

trait NoS3 {
    fn env_remove_s3(self) -> Self;
}

impl NoS3 for Cmd {
    /// Nothing from the caller's environment picks another store.
    fn env_remove_s3(self) -> Self {
        self.env("GATEHOUSE_S3_BUCKET", "")
    }
}

/// `out` failed and its report names `object` with `message`.
#[track_caller]
fn fails_naming(out: &CmdOutput, object: &str, message: &str) {
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let line = format!("FAIL {object}: ");
    let found = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&line))
        .unwrap_or_else(|| panic!("no {line:?} in:\n{}", out.stdout));
    assert!(found.contains(message), "{found}");
}

#[test]
fn verify_a_directory_store_then_tamper_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let root = dir.path().join(name);
        for (k, text) in batches("gatehouse-proxy-7d9f")
            .into_iter()
            .chain(batches("gatehouse-operator-0"))
        {
            write(&root, &k, text.as_bytes());
        }
        write(&root, RECORDING_KEY, CAST.as_bytes());
        root
    };

    let intact = fresh("intact");
    let out = verify_dir(&intact);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("2 writer(s), 6 batch(es), 10 event(s), 1 recording(s): OK"),
        "{}",
        out.stdout
    );
    let json = Cmd::new(plugin())
        .args(["audit", "verify", "-o", "json", "--store-dir"])
        .arg(&intact)
        .run();
    let report: serde_json::Value = serde_json::from_str(json.ok()).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["writers"][1]["writer"], "gatehouse-proxy-7d9f");

    // Deleting a batch: the next one names the gap.
    let deleted = fresh("deleted");
    std::fs::remove_file(deleted.join(key("gatehouse-proxy-7d9f", 1))).unwrap();
    fails_naming(
        &verify_dir(&deleted),
        &key("gatehouse-proxy-7d9f", 2),
        "batch sequence 1 is missing (found 2)",
    );

    // Editing a batch (one event's host): the next header's SHA-256 no longer matches.
    let edited = fresh("edited");
    let path = edited.join(key("gatehouse-operator-0", 0));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("prod-db-01", "prod-db-02", 1)).unwrap();
    fails_naming(
        &verify_dir(&edited),
        &key("gatehouse-operator-0", 1),
        "the previous batch was changed",
    );

    // Swapping the recording's bytes.
    let swapped = fresh("swapped");
    write(
        &swapped,
        RECORDING_KEY,
        CAST.replace("hello", "HELLO").as_bytes(),
    );
    fails_naming(
        &verify_dir(&swapped),
        RECORDING_KEY,
        "the recording was changed",
    );

    // Deleting the first batch: the chain no longer starts at 0.
    let truncated = fresh("truncated");
    std::fs::remove_file(truncated.join(key("gatehouse-proxy-7d9f", 0))).unwrap();
    fails_naming(
        &verify_dir(&truncated),
        &key("gatehouse-proxy-7d9f", 1),
        "starts at sequence 1",
    );
}

#[test]
fn verify_a_minio_bucket_with_the_auditors_environment_then_delete_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(dir.path());
    let bucket = "gatehouse-audit-verify";
    minio.create_bucket(bucket);
    let store = minio.store(bucket);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = gatehouse_store::Store::S3(gatehouse_store::S3Store::new(gatehouse_store::S3Config {
        endpoint: Some(store.endpoint.clone()),
        bucket: bucket.to_owned(),
        region: store.region.clone(),
        access_key_id: store.access_key.clone(),
        secret_access_key: store.secret_key.clone(),
        path_style: true,
        prefix: String::new(),
    }));
    let put = |key: &str, bytes: &[u8]| {
        runtime
            .block_on(s3.put_object(key, bytes.to_vec()))
            .unwrap();
    };
    for (k, text) in batches("gatehouse-proxy-7d9f") {
        put(&k, text.as_bytes());
    }
    put(RECORDING_KEY, CAST.as_bytes());
    let verify = || {
        Cmd::new(plugin())
            .args(["audit", "verify"])
            .env("GATEHOUSE_S3_ENDPOINT", &store.endpoint)
            .env("GATEHOUSE_S3_BUCKET", bucket)
            .env("GATEHOUSE_S3_REGION", &store.region)
            .env("GATEHOUSE_S3_PATH_STYLE", "true")
            .env("AWS_ACCESS_KEY_ID", &store.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &store.secret_key)
            .run()
    };
    let out = verify();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("1 writer(s), 3 batch(es), 5 event(s), 1 recording(s): OK"),
        "{}",
        out.stdout
    );

    // Edit the first batch in the bucket.
    let first = key("gatehouse-proxy-7d9f", 0);
    let text = String::from_utf8(minio.get(bucket, &first).unwrap()).unwrap();
    put(
        &first,
        text.replacen("loginAccepted", "loginRefused", 1).as_bytes(),
    );
    fails_naming(
        &verify(),
        &key("gatehouse-proxy-7d9f", 1),
        "the previous batch was changed",
    );
    put(&first, text.as_bytes());
    assert_eq!(verify().code, Some(0));

    // Delete the middle batch.
    runtime
        .block_on(s3.delete(&key("gatehouse-proxy-7d9f", 1)))
        .unwrap();
    fails_naming(
        &verify(),
        &key("gatehouse-proxy-7d9f", 2),
        "batch sequence 1 is missing (found 2)",
    );
}
