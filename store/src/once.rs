//! Write-once objects and the Object Lock start-up check. Data comes from the audit writers
//! (batches, [`Store::put_new_object`]) and the binaries' start-up; it goes to the store. On
//! S3 a write-once put is sent with `If-None-Match: *`, so an existing object of that name is
//! never replaced (final recordings go the same way in [`Store::put`]); a refused write whose
//! existing object has the same SHA-256 (a retry of a write that landed) counts as done, any
//! other refusal is an error. The check asks the bucket (GetObjectLockConfiguration) whether
//! Object Lock is enabled, so a misconfigured bucket fails the binary instead of silently
//! storing deletable objects.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::fs::File;

use crate::error::{Error, Result};
use crate::lock::{MODE_FLAG, ObjectLock, check_lock_enabled};
use crate::objects::{LocalStore, S3Store, Store, hex, sdk_error, write_store};
use crate::payload::PayloadDigest;

/// The most of an existing object without `sha256` metadata that a write-once put reads to
/// compare (audit batches are far smaller).
const MAX_HASHED_EXISTING_BYTES: i64 = 64 * 1024 * 1024;

impl Store {
    /// Store `data` as the new object `key`, which must not exist yet (audit batches and other
    /// write-once objects). An existing object with the same content counts as stored (a
    /// retry); one with other content is an error and stays as it is.
    pub async fn put_new_object(&self, key: &str, data: Vec<u8>) -> Result<()> {
        match self {
            Store::S3(s3) => s3.put_new_object(key, data).await,
            Store::Local(local) => local.put_new_object(key, data).await,
        }
    }

    /// With Object Lock configured, fail unless the bucket has it enabled
    /// (GetObjectLockConfiguration); without it, or on a directory, nothing is checked.
    pub async fn check_object_lock(&self) -> Result<()> {
        match self {
            Store::S3(s3) => s3.check_object_lock().await,
            Store::Local(_) => Ok(()),
        }
    }
}

impl S3Store {
    /// The same store, putting `lock` (None: no lock) on every object it writes.
    pub fn with_object_lock(mut self, lock: Option<ObjectLock>) -> S3Store {
        self.lock = lock;
        self
    }

    /// The lock this store puts on its objects.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.lock
    }

    async fn check_object_lock(&self) -> Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        let config = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| Error::CheckObjectLock {
                bucket: self.bucket.clone(),
                message: format!(
                    "GetObjectLockConfiguration: {} (Object Lock is configured with {MODE_FLAG}; \
                     the bucket must be created with Object Lock enabled)",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            })?;
        check_lock_enabled(
            &self.bucket,
            config
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled()),
        )
    }

    async fn put_new_object(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let object_key = format!("{}{key}", self.prefix);
        let digest = PayloadDigest::of(&data);
        self.send_put(&object_key, "application/octet-stream", data, digest, true)
            .await
    }

    /// After a write-once put was refused: Ok if the existing object holds `sha256` (its
    /// `sha256` metadata, or, for an object stored without it, its bytes hashed); an object
    /// with other content is [`Error::Exists`].
    pub(crate) async fn same_as_existing(&self, object_key: &str, sha256: &str) -> Result<()> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(object_key)
            .send()
            .await
            .map_err(sdk_error(object_key, "HeadObject"))?;
        let existing = match head.metadata().and_then(|m| m.get("sha256")) {
            Some(recorded) => recorded.clone(),
            // Hashing reads the whole object: one this large is no retry of ours (bounded).
            None if head.content_length().unwrap_or(i64::MAX) > MAX_HASHED_EXISTING_BYTES => {
                return Err(Error::Exists {
                    key: object_key.to_owned(),
                    message: format!(
                        "an object of {} bytes without sha256 metadata is already stored",
                        head.content_length().unwrap_or_default()
                    ),
                });
            }
            None => {
                let object = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(object_key)
                    .send()
                    .await
                    .map_err(sdk_error(object_key, "GetObject"))?;
                let bytes = object
                    .body
                    .collect()
                    .await
                    .map_err(sdk_error(object_key, "GetObject body"))?;
                hex(&Sha256::digest(bytes.into_bytes()))
            }
        };
        if existing == sha256 {
            tracing::info!(
                key = object_key,
                "object already stored with the same SHA-256 (a retried write)"
            );
            return Ok(());
        }
        Err(Error::Exists {
            key: object_key.to_owned(),
            message: format!("an object with other content (sha256 {existing}) is already stored"),
        })
    }
}

impl LocalStore {
    async fn put_new_object(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let dest = self.path_for(key)?;
        if let Ok(existing) = tokio::fs::read(&dest).await {
            return if existing == data {
                Ok(())
            } else {
                Err(exists(key))
            };
        }
        let parent = dest.parent().map(Path::to_owned).unwrap_or_default();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(write_store(key, &parent))?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{name}.{}.new", std::process::id()));
        let written = async {
            tokio::fs::write(&tmp, &data).await?;
            File::open(&tmp).await?.sync_all().await?;
            // A hard link never replaces an existing file, unlike rename.
            tokio::fs::hard_link(&tmp, &dest).await
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let existing = tokio::fs::read(&dest)
                    .await
                    .map_err(write_store(key, &dest))?;
                if existing != data {
                    return Err(exists(key));
                }
            }
            Err(e) => return Err(write_store(key, &dest)(e)),
        }
        File::open(&parent)
            .await
            .map_err(write_store(key, &parent))?
            .sync_all()
            .await
            .map_err(write_store(key, &parent))
    }
}

/// The refusal of a write-once put onto an object with other content.
fn exists(key: &str) -> Error {
    Error::Exists {
        key: key.to_owned(),
        message: "an object with other content is already stored".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn local_new_objects_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(LocalStore::new(dir.path()));
        let key = "audit/w1/00000000000000000000.jsonl";
        store.put_new_object(key, b"one".to_vec()).await.unwrap();
        // A retry of the same content is fine; other content is refused and changes nothing.
        store.put_new_object(key, b"one".to_vec()).await.unwrap();
        let err = store
            .put_new_object(key, b"two".to_vec())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert!(matches!(err, Error::Exists { .. }), "{err}");
        assert_eq!(store.get(key).await.unwrap(), b"one");
        assert_eq!(store.list("audit/").await.unwrap(), [key]);
        assert!(store.put_new_object("../x", Vec::new()).await.is_err());
        store.check_object_lock().await.unwrap();
    }
}
