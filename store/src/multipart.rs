//! Recordings too large for one PutObject. Data comes from a closed spool file, read twice:
//! first to hash it (the whole file, for the `sha256` metadata that CreateMultipartUpload
//! fixes, and each part, for its request), then part by part to send. It goes to S3 as a
//! multipart upload completed write-once. Each part is signed with the hash of the first read
//! (and, on a locked bucket, carries it as its checksum), so the server refuses a part whose
//! bytes changed between the reads: nothing is stored that its metadata does not describe.

use std::io::Read;
use std::path::Path;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::lock::is_precondition_failed;
use crate::objects::{
    CHUNK_BYTES, CONTENT_TYPE, PART_BYTES, S3Store, read_spool, sdk_error, store_error,
};
use crate::payload::PayloadDigest;

/// One part as the first read saw it.
#[derive(Debug, Clone, Copy)]
struct PartHash {
    digest: PayloadDigest,
    bytes: usize,
}

/// What the first read found: the whole file's hash and size, and each part's.
#[derive(Debug)]
struct FileHash {
    whole: PayloadDigest,
    bytes: u64,
    parts: Vec<PartHash>,
}

impl S3Store {
    /// Store the file at `path` as `object_key` by a multipart upload; its SHA-256 (hex) and
    /// size.
    pub(crate) async fn put_multipart(
        &self,
        object_key: &str,
        path: &Path,
    ) -> Result<(String, u64)> {
        let owned = path.to_owned();
        let hashed = blocking(path, move || hash_parts(&owned)).await?;
        let sha256 = hashed.whole.hex();
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .content_type(CONTENT_TYPE)
            .metadata("sha256", &sha256);
        if let Some((mode, until)) = self.retention_now()? {
            // Locked writes need checksums: each part then carries its SHA-256.
            create = create
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        let created = create
            .send()
            .await
            .map_err(sdk_error(object_key, "CreateMultipartUpload"))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(store_error(
                object_key,
                "CreateMultipartUpload returned no upload id",
            ));
        };
        let result = self
            .upload_parts(object_key, upload_id, path, &hashed, &sha256)
            .await;
        if result.is_err() {
            // Otherwise the parts stay in the bucket (and are billed) until a lifecycle rule
            // removes them; the upload error is the one to report either way.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(object_key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    key = object_key,
                    error = %DisplayErrorContext(&e),
                    "aborting a failed multipart upload failed",
                );
            }
        }
        result.map(|()| (sha256, hashed.bytes))
    }

    async fn upload_parts(
        &self,
        object_key: &str,
        upload_id: &str,
        path: &Path,
        hashed: &FileHash,
        sha256: &str,
    ) -> Result<()> {
        let changed = || {
            store_error(
                object_key,
                &format!("{} changed while it was being uploaded", path.display()),
            )
        };
        let mut file = std::fs::File::open(path).map_err(read_spool(path))?;
        let mut completed = Vec::with_capacity(hashed.parts.len());
        for (part_number, part) in (1..).zip(&hashed.parts) {
            let (rest, data) = read_part(file, path, part.bytes).await?;
            file = rest;
            if data.len() != part.bytes {
                return Err(changed());
            }
            let checksum = self.lock.is_some().then(|| part.digest.base64());
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(object_key)
                .upload_id(upload_id)
                .part_number(part_number)
                .set_checksum_sha256(checksum.clone())
                .body(ByteStream::from(data))
                .customize()
                .interceptor(part.digest.signer())
                .send()
                .await
                .map_err(sdk_error(object_key, "UploadPart"))?;
            let Some(e_tag) = uploaded.e_tag() else {
                return Err(store_error(object_key, "UploadPart returned no ETag"));
            };
            completed.push(
                CompletedPart::builder()
                    .e_tag(e_tag)
                    .part_number(part_number)
                    .set_checksum_sha256(checksum)
                    .build(),
            );
        }
        // A file that grew since it was hashed: its end would be missing from the object.
        let (_, tail) = read_part(file, path, 1).await?;
        if !tail.is_empty() {
            return Err(changed());
        }
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .upload_id(upload_id)
            // Write-once, as single-part recordings.
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if is_precondition_failed(&e) => self.same_as_existing(object_key, sha256).await,
            Err(e) => Err(sdk_error(object_key, "CompleteMultipartUpload")(e)),
        }
    }
}

/// Run `read` (of the file at `path`) on a blocking thread: hashing and file reads stay off the
/// async workers.
async fn blocking<T: Send + 'static>(
    path: &Path,
    read: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(read_spool(path)),
        Err(join) => Err(read_spool(path)(std::io::Error::other(join))),
    }
}

/// The first read: the whole file's SHA-256 and each [`PART_BYTES`] part's.
fn hash_parts(path: &Path) -> std::io::Result<FileHash> {
    let mut file = std::fs::File::open(path)?;
    let mut whole = Sha256::new();
    let mut bytes = 0u64;
    let mut parts = Vec::new();
    let mut part = Sha256::new();
    let mut part_bytes = 0usize;
    let mut buf = vec![0; CHUNK_BYTES];
    loop {
        // No read crosses a part boundary, so each part hasher sees exactly its part.
        let n = file.read(&mut buf[..CHUNK_BYTES.min(PART_BYTES - part_bytes)])?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        part.update(&buf[..n]);
        bytes += n as u64;
        part_bytes += n;
        if part_bytes == PART_BYTES {
            parts.push(PartHash {
                digest: PayloadDigest::finish(std::mem::take(&mut part)),
                bytes: part_bytes,
            });
            part_bytes = 0;
        }
    }
    if part_bytes > 0 {
        parts.push(PartHash {
            digest: PayloadDigest::finish(part),
            bytes: part_bytes,
        });
    }
    Ok(FileHash {
        whole: PayloadDigest::finish(whole),
        bytes,
        parts,
    })
}

/// Up to `len` bytes from where `file` is (fewer at its end), read on a blocking thread; the
/// file comes back for the next part.
async fn read_part(
    mut file: std::fs::File,
    path: &Path,
    len: usize,
) -> Result<(std::fs::File, Vec<u8>)> {
    blocking(path, move || {
        let mut data = Vec::with_capacity(len);
        (&mut file).take(len as u64).read_to_end(&mut data)?;
        Ok((file, data))
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parts_are_hashed_at_part_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cast");
        let content: Vec<u8> = (0..PART_BYTES * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let hashed = hash_parts(&path).unwrap();
        assert_eq!(hashed.bytes, content.len() as u64);
        assert_eq!(hashed.whole, PayloadDigest::of(&content));
        let sizes: Vec<usize> = hashed.parts.iter().map(|p| p.bytes).collect();
        assert_eq!(sizes, [PART_BYTES, PART_BYTES, 12_345]);
        for (part, chunk) in hashed.parts.iter().zip(content.chunks(PART_BYTES)) {
            assert_eq!(part.digest, PayloadDigest::of(chunk));
        }
    }
}
