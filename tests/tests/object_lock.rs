//! S3 Object Lock on recordings (issue 15), against a real MinIO with a lock-enabled bucket.
//!
//! The attacker holds the store's own credentials (MinIO's root user, the keys the proxy uses)
//! and uses `curl --aws-sigv4`, a client independent of the proxy's SDK. With the proxy's lock
//! on (`--s3-object-lock-mode governance`), a real recorded ssh session's object cannot be
//! deleted by version id (MinIO: 400 "Object is WORM protected"; AWS: AccessDenied), an
//! `If-None-Match: *` overwrite is refused, and after a plain
//! overwrite or a delete marker the original version is still there byte for byte (its SHA-256
//! is the one in `status.sessions`). The live pieces, removed once the final object lands,
//! leave locked versions behind. Control: the same bucket with the proxy's lock off lets the
//! same delete through. And a proxy configured to lock refuses to start on a bucket that
//! cannot lock, or with a bad flag value. The store's own client writes audit batches and final
//! recordings write-once (`If-None-Match: *`): never replaced, a retry of the same bytes is fine.

use std::time::Duration;

use gatehouse_tests::{
    binaries::proxy_binary, command::Cmd, minio::Minio, proxied_world::ProxiedWorld, sha256_hex,
    wait_for,
};
use serde_json::json;

const BUCKET: &str = "locked-recordings";

/// A world whose proxy stores recordings in a fresh lock-enabled bucket, with `proxy_args`.
async fn world(prefix: &str, proxy_args: &[&str]) -> (ProxiedWorld, Minio) {
    let mut minio = None;
    let w = ProxiedWorld::start_with_args(
        prefix,
        |dir| {
            let server = Minio::start(dir);
            server.create_locked_bucket(BUCKET);
            let storage = server.storage(BUCKET);
            minio = Some(server);
            storage
        },
        json!({}),
        proxy_args,
    )
    .await;
    (w, minio.unwrap_or_else(|| panic!("no MinIO")))
}

/// A session that runs long enough for live pieces.
const SESSION: &str = "echo locked-session-start; sleep 3; echo locked-session-end";

/// A recorded session of `name` running `command`; (key, sha256).
async fn recorded_session(w: &ProxiedWorld, name: &str, command: &str) -> (String, String) {
    let cert = w.issue(w.request(name)).await;
    let out = w.ssh(&cert, &format!("{}@db1", w.login), &[command]).run();
    assert!(out.success, "{}\n{}", out.stderr, w.proxy.log_tail());
    let sessions = w.recorded(name, 1, Duration::from_secs(60)).await;
    let recording = sessions[0]
        .recording
        .clone()
        .unwrap_or_else(|| panic!("no recording in {sessions:?}"));
    (recording.key, recording.sha256)
}

/// The one version of `key` (the object the proxy stored).
fn only_version(minio: &Minio, key: &str) -> String {
    let versions: Vec<_> = minio
        .versions(BUCKET, key)
        .into_iter()
        .filter(|(k, _, _)| k == key)
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(!versions[0].2, "a delete marker: {versions:?}");
    versions[0].1.clone()
}

/// A delete the lock refused: AWS says AccessDenied, MinIO (400) InvalidRequest "Object is
/// WORM protected".
fn assert_refused_by_lock(what: &str, out: &gatehouse_tests::CmdOutput) {
    assert!(
        !out.success
            && (out.stdout.contains("<Code>AccessDenied</Code>")
                || out.stdout.contains("WORM protected")),
        "{what} went through: {}{}",
        out.stdout,
        out.stderr
    );
}

fn version_path(key: &str, version: &str) -> String {
    format!("{BUCKET}/{key}?versionId={version}")
}

#[tokio::test]
async fn with_object_lock_the_store_refuses_to_delete_or_overwrite_a_recording() {
    let (w, minio) = world(
        "lock-on",
        &[
            "--s3-object-lock-mode=governance",
            "--s3-object-lock-retention=1d",
            "--live-upload-interval=1s",
        ],
    )
    .await;
    let (key, sha256) = recorded_session(&w, "locked", SESSION).await;
    let version = only_version(&minio, &key);
    let original = minio.get(BUCKET, &key).expect("the recording is stored");
    assert_eq!(sha256_hex(&original), sha256);
    assert!(String::from_utf8_lossy(&original).contains("locked-session-end"));

    // Delete the version, as the store's own credentials: refused.
    let delete = minio.s3_request("DELETE", &version_path(&key, &version), &[], None);
    assert_refused_by_lock("deleting the recording's version", &delete);

    // It carries the proxy's retention.
    let retention = minio.s3_request("GET", &format!("{BUCKET}/{key}?retention="), &[], None);
    assert!(
        retention.success && retention.stdout.contains("<Mode>GOVERNANCE</Mode>"),
        "{}{}",
        retention.stdout,
        retention.stderr
    );

    // Overwrite it write-once: refused.
    let forged = w.dir.path().join("forged.cast");
    std::fs::write(
        &forged,
        b"{\"version\": 2}\n[0.1, \"o\", \"nothing happened\"]\n",
    )
    .unwrap();
    let put = minio.s3_request(
        "PUT",
        &format!("{BUCKET}/{key}"),
        &["If-None-Match: *"],
        Some(&forged),
    );
    assert!(
        !put.success && put.stdout.contains("PreconditionFailed"),
        "the overwrite went through: {}{}",
        put.stdout,
        put.stderr
    );

    // A plain overwrite and a delete marker only hide it: the locked version stays, byte for
    // byte, and still cannot be deleted.
    let put = minio.s3_request("PUT", &format!("{BUCKET}/{key}"), &[], Some(&forged));
    assert!(put.success, "{}{}", put.stdout, put.stderr);
    let marker = minio.s3_request("DELETE", &format!("{BUCKET}/{key}"), &[], None);
    assert!(marker.success, "{}{}", marker.stdout, marker.stderr);
    let kept = minio
        .s3_request("GET", &version_path(&key, &version), &[], None)
        .stdout_bytes;
    assert_eq!(sha256_hex(&kept), sha256);
    let delete = minio.s3_request("DELETE", &version_path(&key, &version), &[], None);
    assert_refused_by_lock("deleting the overwritten recording's version", &delete);

    // The live pieces were removed (delete markers) but their versions stay locked.
    let pieces = minio.versions(BUCKET, &format!("{key}.parts/"));
    let stored: Vec<_> = pieces.iter().filter(|(_, _, marker)| !marker).collect();
    assert!(!stored.is_empty(), "no live piece was stored: {pieces:?}");
    assert!(
        minio.list(BUCKET, &format!("{key}.parts/")).is_empty(),
        "pieces left after the final object landed"
    );
    for (piece, id, _) in stored {
        let delete = minio.s3_request("DELETE", &version_path(piece, id), &[], None);
        assert_refused_by_lock(&format!("deleting piece {piece}"), &delete);
    }

    // The proxy's audit batches (the session's login, start and end) are locked too: deleting
    // one, the edit `audit verify` would catch without a lock, is refused by the store.
    let batches = wait_for(
        Duration::from_secs(20),
        "the proxy's audit batches in the locked bucket",
        || async {
            let batches: Vec<_> = minio
                .versions(BUCKET, "audit/")
                .into_iter()
                .filter(|(_, _, marker)| !marker)
                .collect();
            (!batches.is_empty()).then_some(batches)
        },
    )
    .await;
    for (batch, id, _) in &batches {
        let delete = minio.s3_request("DELETE", &version_path(batch, id), &[], None);
        assert_refused_by_lock(&format!("deleting audit batch {batch}"), &delete);
    }
}

#[tokio::test]
async fn a_recording_too_large_for_one_put_is_locked_in_compliance_mode() {
    // Over 16 MiB: stored by a multipart upload, whose parts carry their SHA-256.
    let (w, minio) = world(
        "lock-big",
        &[
            "--s3-object-lock-mode=compliance",
            "--s3-object-lock-retention=1h",
        ],
    )
    .await;
    let (key, sha256) = recorded_session(
        &w,
        "big",
        "head -c 20000000 /dev/zero | tr '\\0' x | fold -w 200; echo big-session-end",
    )
    .await;
    let version = only_version(&minio, &key);
    let stored = minio.get(BUCKET, &key).expect("the recording is stored");
    assert!(stored.len() > 16 * 1024 * 1024, "{} bytes", stored.len());
    assert_eq!(sha256_hex(&stored), sha256);
    let retention = minio.s3_request("GET", &format!("{BUCKET}/{key}?retention="), &[], None);
    assert!(
        retention.stdout.contains("<Mode>COMPLIANCE</Mode>"),
        "{}{}",
        retention.stdout,
        retention.stderr
    );
    // Compliance: not even the governance bypass lets the store's root user delete it.
    for headers in [&[][..], &["x-amz-bypass-governance-retention: true"][..]] {
        let delete = minio.s3_request("DELETE", &version_path(&key, &version), headers, None);
        assert_refused_by_lock(&format!("deleting with {headers:?}"), &delete);
    }
}

#[tokio::test]
async fn without_object_lock_the_same_delete_goes_through() {
    // The same lock-enabled bucket, the proxy's lock off: nothing stops the delete, which is
    // what the test above relies on the proxy's flags to prevent.
    let (w, minio) = world("lock-off", &[]).await;
    let (key, sha256) = recorded_session(&w, "unlocked", SESSION).await;
    let version = only_version(&minio, &key);
    assert_eq!(sha256_hex(&minio.get(BUCKET, &key).unwrap()), sha256);
    let delete = minio.s3_request("DELETE", &version_path(&key, &version), &[], None);
    assert!(delete.success, "{}{}", delete.stdout, delete.stderr);
    assert!(minio.get(BUCKET, &key).is_none());
    assert!(minio.versions(BUCKET, &key).is_empty());
}

#[test]
fn a_proxy_configured_to_lock_refuses_to_start_without_a_lockable_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(dir.path());
    minio.create_bucket("plain-recordings");
    let store = minio.store("plain-recordings");
    let proxy = |lock: &[&str]| {
        Cmd::new(proxy_binary())
            .arg("--storage=s3")
            .arg(format!("--s3-endpoint={}", store.endpoint))
            .arg(format!("--s3-bucket={}", store.bucket))
            .arg("--s3-path-style")
            .arg(format!(
                "--spool-dir={}",
                dir.path().join("spool").display()
            ))
            .args(lock)
            .env("AWS_ACCESS_KEY_ID", &store.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &store.secret_key)
            // It must never get as far as the API server.
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .kill_after(Duration::from_secs(60))
            .run()
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                "--s3-object-lock-mode=compliance",
                "--s3-object-lock-retention=30d",
            ],
            &["Object Lock", "plain-recordings", "--s3-object-lock-mode"],
        ),
        (
            &["--s3-object-lock-mode=governance"],
            &["--s3-object-lock-retention", "needed when"],
        ),
        (
            &[
                "--s3-object-lock-mode=legal-hold",
                "--s3-object-lock-retention=30d",
            ],
            &[
                "--s3-object-lock-mode",
                "not one of none, governance, compliance",
            ],
        ),
        (
            &[
                "--s3-object-lock-mode=governance",
                "--s3-object-lock-retention=30 days",
            ],
            &["--s3-object-lock-retention", "is not a retention"],
        ),
    ];
    for (lock, needles) in cases {
        let out = proxy(lock);
        assert!(
            !out.success && !out.timed_out,
            "{lock:?} started: {}",
            out.stderr
        );
        for needle in *needles {
            assert!(
                out.stderr.contains(needle),
                "{lock:?}: {needle:?} not in {}",
                out.stderr
            );
        }
    }
    // The directory store cannot lock either.
    let out = Cmd::new(proxy_binary())
        .args([
            "--storage=local",
            "--s3-object-lock-mode=governance",
            "--s3-object-lock-retention=1d",
        ])
        .arg(format!(
            "--storage-dir={}",
            dir.path().join("store").display()
        ))
        .kill_after(Duration::from_secs(60))
        .run();
    assert!(
        !out.success && out.stderr.contains("needs --storage s3"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn write_once_objects_are_never_replaced_and_a_retry_is_fine() {
    // The store's own client (the one the proxy and the audit writers use) against MinIO:
    // If-None-Match: * is honoured, so an audit batch or a final recording already stored is
    // never replaced, while a retry of the same bytes (a write that landed but whose answer
    // was lost) counts as stored.
    use gatehouse_proxy::recording::store::{LockMode, ObjectLock, S3Config, S3Store, Store};
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(dir.path());
    minio.create_locked_bucket(BUCKET);
    let info = minio.store(BUCKET);
    let lock = ObjectLock {
        mode: LockMode::Governance,
        retention: Duration::from_secs(3600),
    };
    let store = Store::S3(
        S3Store::new(S3Config {
            endpoint: Some(info.endpoint.clone()),
            bucket: BUCKET.to_owned(),
            region: info.region.clone(),
            access_key_id: info.access_key.clone(),
            secret_access_key: info.secret_key.clone(),
            path_style: true,
            prefix: String::new(),
        })
        .with_object_lock(Some(lock)),
    );
    store.check_object_lock().await.unwrap();
    let key = "audit/gatehouse-proxy-0/00000000000000000000.jsonl";
    store
        .put_new_object(key, b"batch 0\n".to_vec())
        .await
        .unwrap();
    store
        .put_new_object(key, b"batch 0\n".to_vec())
        .await
        .unwrap();
    let err = store
        .put_new_object(key, b"forged\n".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(minio.get(BUCKET, key).unwrap(), b"batch 0\n");
    assert_eq!(minio.versions(BUCKET, key).len(), 1);
    let retention = minio.s3_request("GET", &format!("{BUCKET}/{key}?retention="), &[], None);
    assert!(
        retention.stdout.contains("<Mode>GOVERNANCE</Mode>"),
        "{}",
        retention.stdout
    );

    // A final recording: the same.
    let cast = dir.path().join("a.cast");
    std::fs::write(&cast, b"{\"version\": 2}\n").unwrap();
    let key = "recordings/2026-01-01/alice_db1_0.cast";
    let stored = store.put(key, &cast).await.unwrap();
    assert_eq!(store.put(key, &cast).await.unwrap().sha256, stored.sha256);
    std::fs::write(&cast, b"{\"version\": 2}\n[0.1, \"o\", \"x\"]\n").unwrap();
    let err = store.put(key, &cast).await.unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(sha256_hex(&minio.get(BUCKET, key).unwrap()), stored.sha256);
}
