//! The store's uploads on a real MinIO, with the store's own client: each body is hashed once
//! and that hash is what SigV4 signs (and, on a locked bucket, the part's checksum), so
//! MinIO's own check of the body against it is what catches bytes that changed after hashing.
//!
//! - One PutObject (≤ 16 MiB) and a multipart upload (3 parts), on a plain and on a locked
//!   bucket: MinIO accepts the precomputed hashes, the bytes come back as written, and the
//!   `sha256` metadata is their SHA-256.
//! - A spool file rewritten while it is uploaded (same length, other bytes): the upload fails
//!   naming UploadPart, nothing is stored under the key, and no multipart upload is left open.

#![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

use std::{
    io::{Seek, SeekFrom, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use gatehouse_proxy::recording::store::{LockMode, ObjectLock, S3Config, S3Store, Store};
use gatehouse_tests::{minio::Minio, sha256_hex};

/// The store's part size: files above it go up in parts.
const PART: usize = 16 * 1024 * 1024;

/// The store's own client on `bucket`, with a governance lock if `locked`.
fn store(minio: &Minio, bucket: &str, locked: bool) -> Store {
    let info = minio.store(bucket);
    let lock = locked.then_some(ObjectLock {
        mode: LockMode::Governance,
        retention: Duration::from_secs(3600),
    });
    Store::S3(
        S3Store::new(S3Config {
            endpoint: Some(info.endpoint.clone()),
            bucket: bucket.to_owned(),
            region: info.region.clone(),
            access_key_id: info.access_key.clone(),
            secret_access_key: info.secret_key.clone(),
            path_style: true,
            prefix: String::new(),
        })
        .with_object_lock(lock),
    )
}

/// `len` bytes that differ from part to part (so a part sent in the wrong place shows).
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 4096 + i) % 251) as u8).collect()
}

#[test]
fn single_and_multipart_uploads_are_signed_with_their_one_hash() {
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(dir.path());
    minio.create_bucket("plain");
    minio.create_locked_bucket("locked");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (bucket, locked) in [("plain", false), ("locked", true)] {
        let s3 = store(&minio, bucket, locked);
        for (name, len) in [("small.cast", 1_000_003), ("large.cast", 2 * PART + 77_777)] {
            let path = dir.path().join(name);
            let bytes = content(len);
            std::fs::write(&path, &bytes).unwrap();
            let key = format!("recordings/{name}");
            let stored = runtime.block_on(s3.put(&key, &path)).unwrap_or_else(|e| {
                panic!("storing {len} bytes in the {bucket} bucket: {e}");
            });
            assert_eq!(stored.bytes, len as u64);
            assert_eq!(stored.sha256, sha256_hex(&bytes), "{bucket} {name}");
            let back = minio.get(bucket, &key).unwrap();
            assert!(back == bytes, "{bucket} {name}: other bytes came back");
            assert_eq!(
                minio.metadata(bucket, &key, "sha256").as_deref(),
                Some(stored.sha256.as_str()),
                "{bucket} {name}"
            );
        }
    }
}

#[test]
fn a_spool_file_rewritten_while_uploaded_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (bucket, locked) in [("plain", false), ("locked", true)] {
        if locked {
            minio.create_locked_bucket(bucket);
        } else {
            minio.create_bucket(bucket);
        }
        let s3 = store(&minio, bucket, locked);
        let path = dir.path().join(format!("{bucket}.cast"));
        let len = 2 * PART + 1_000_000;
        std::fs::write(&path, content(len)).unwrap();
        // Rewrites the last part's bytes, same length, from before the first read until the
        // upload is over: the second read (to send) cannot see what the first (to hash) saw.
        let done = Arc::new(AtomicBool::new(false));
        let rewriter = {
            let (done, path) = (Arc::clone(&done), path.clone());
            std::thread::spawn(move || rewrite_until(&path, (2 * PART) as u64, &done))
        };
        let key = "recordings/rewritten.cast";
        let result = runtime.block_on(s3.put(key, &path));
        done.store(true, Ordering::Relaxed);
        let rewrites = rewriter.join().unwrap();
        let error = match result {
            Ok(stored) => {
                panic!("{bucket}: stored although rewritten {rewrites} times: {stored:?}")
            }
            Err(e) => e.to_string(),
        };
        // MinIO says XAmzContentSHA256Mismatch; AWS may say BadDigest for the checksum.
        assert!(
            error.contains("UploadPart")
                && (error.contains("XAmzContentSHA256Mismatch") || error.contains("BadDigest")),
            "{bucket}: {error}"
        );
        assert_eq!(
            minio.get(bucket, key),
            None,
            "{bucket}: something is stored"
        );
        let uploads = minio.s3_request("GET", &format!("{bucket}?uploads="), &[], None);
        assert!(uploads.success, "{}{}", uploads.stdout, uploads.stderr);
        assert!(
            !uploads.stdout.contains("<Upload>"),
            "{bucket}: a multipart upload is left open: {}",
            uploads.stdout
        );
    }
}

/// Overwrite 4 KiB at a time somewhere after `from` in the file at `path` with a changing
/// pattern until `done`; how many writes that took.
fn rewrite_until(path: &Path, from: u64, done: &AtomicBool) -> u64 {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        n += 1;
        file.seek(SeekFrom::Start(from + (n * 4096) % 900_000))
            .unwrap();
        file.write_all(&[(n % 256) as u8; 4096]).unwrap();
    }
    n
}
