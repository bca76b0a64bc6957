//! Small whole objects: put bytes, list keys under a prefix, delete. The proxy's live upload
//! stores pieces of running recordings this way; audit batches go the same way (a local
//! put is fsynced, file and directory, before it returns).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::error::Result;
use crate::objects::{LocalStore, S3Store, Store, sdk_error, store_error, write_store};
use crate::payload::PayloadDigest;

impl Store {
    /// Store `data` as the whole object `key` (replacing one of that name).
    pub async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<()> {
        match self {
            Store::S3(s3) => s3.put_object(key, data).await,
            Store::Local(local) => local.put_object(key, data).await,
        }
    }

    /// Every key under `prefix` (a folder ending in `/`, or any key prefix on S3), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self {
            Store::S3(s3) => s3.list(prefix).await,
            Store::Local(local) => local.list(prefix).await,
        }
    }

    /// Delete the object `key`; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Store::S3(s3) => s3.delete(key).await,
            Store::Local(local) => local.delete(key).await,
        }
    }
}

impl S3Store {
    async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let object_key = format!("{}{key}", self.prefix);
        let digest = PayloadDigest::of(&data);
        // Locked like everything else, but replaceable: a piece may be re-sent after a failure.
        self.send_put(&object_key, "application/octet-stream", data, digest, false)
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = format!("{}{prefix}", self.prefix);
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(sdk_error(&prefix, "ListObjectsV2"))?;
            for object in page.contents() {
                if let Some(k) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    found.push(k.to_owned());
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        found.sort();
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let object_key = format!("{}{key}", self.prefix);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(sdk_error(&object_key, "DeleteObject"))?;
        Ok(())
    }
}

impl LocalStore {
    async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let dest = self.path_for(key)?;
        let parent = dest.parent().map(Path::to_owned).unwrap_or_default();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(write_store(key, &parent))?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{name}.tmp"));
        // Durable before it returns: callers (the audit writer) delete their copy after.
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(write_store(key, &tmp))?;
        file.write_all(&data)
            .await
            .map_err(write_store(key, &tmp))?;
        file.sync_all().await.map_err(write_store(key, &tmp))?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(write_store(key, &dest))?;
        tokio::fs::File::open(&parent)
            .await
            .map_err(write_store(key, &parent))?
            .sync_all()
            .await
            .map_err(write_store(key, &parent))
    }

    /// Keys under the folder `prefix` (its part up to the last `/`), recursively, without
    /// dot-files (temporary files of unfinished writes).
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let folder = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let root = if folder.is_empty() {
            self.dir.clone()
        } else {
            self.path_for(folder)?
        };
        let mut found = Vec::new();
        let mut pending: Vec<(PathBuf, String)> = vec![(root, folder.to_owned())];
        while let Some((dir, key_dir)) = pending.pop() {
            let listing_error =
                |e: std::io::Error| store_error(prefix, &format!("listing {}: {e}", dir.display()));
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(listing_error(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(listing_error)? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let key = if key_dir.is_empty() {
                    name
                } else {
                    format!("{key_dir}/{name}")
                };
                let kind = entry.file_type().await.map_err(listing_error)?;
                if kind.is_dir() {
                    pending.push((entry.path(), key));
                } else if key.starts_with(prefix) {
                    found.push(key);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_for(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_store(key, &path)(e)),
        }
        // The directory goes with its last object; one still holding others stays.
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn local_objects_put_list_and_delete_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(LocalStore::new(dir.path()));
        for key in [
            "audit/w1/0002.jsonl",
            "audit/w1/0001.jsonl",
            "audit/w2/0001.jsonl",
            "rec/a.cast",
        ] {
            store
                .put_object(key, key.as_bytes().to_vec())
                .await
                .unwrap();
        }
        assert_eq!(
            store.list("audit/w1/").await.unwrap(),
            ["audit/w1/0001.jsonl", "audit/w1/0002.jsonl"]
        );
        assert_eq!(store.list("audit/").await.unwrap().len(), 3);
        assert_eq!(
            store.list("audit/w1/0002").await.unwrap(),
            ["audit/w1/0002.jsonl"]
        );
        assert!(store.list("missing/").await.unwrap().is_empty());
        assert_eq!(store.get("rec/a.cast").await.unwrap(), b"rec/a.cast");
        store.delete("audit/w1/0001.jsonl").await.unwrap();
        store.delete("audit/w1/0001.jsonl").await.unwrap();
        assert_eq!(
            store.list("audit/w1/").await.unwrap(),
            ["audit/w1/0002.jsonl"]
        );
        assert!(store.put_object("../x", Vec::new()).await.is_err());
    }
}
