//! The store's two backends and whole-file uploads. Data comes from files (read in chunks and
//! hashed on the way) or bytes in memory; it goes to an S3 bucket (any S3-compatible server) or
//! a local directory, under the caller's keys. Every S3 write carries the store's Object Lock
//! retention, if any ([`crate::lock`]); final recordings are write-once ([`crate::once`]).

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::ObjectLockMode;
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::lock::{ObjectLock, is_precondition_failed};
use crate::payload::PayloadDigest;
pub use crate::payload::hex;

/// The MIME type asciinema players expect.
pub(crate) const CONTENT_TYPE: &str = "application/x-asciicast";
/// Files up to this size go up in one PutObject; larger ones in parts of this size.
pub(crate) const PART_BYTES: usize = 16 * 1024 * 1024;
/// Read size while hashing and copying: big enough to be cheap, small enough to stream.
pub(crate) const CHUNK_BYTES: usize = 1024 * 1024;

/// A recording safely in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecording {
    /// The key it was stored under (as passed to [`Store::put`], without any S3 prefix).
    pub key: String,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Where it is: `s3://bucket/prefixed-key`, or the file path.
    pub location: String,
}

/// The recording store.
#[derive(Debug, Clone)]
pub enum Store {
    /// An S3 bucket.
    S3(S3Store),
    /// A directory (development, tests, or a mounted volume).
    Local(LocalStore),
}

impl Store {
    /// Copy the file at `path` to `key`, returning its hash and size. Write-once on S3: an
    /// object already under `key` with the same SHA-256 counts as stored, one with other
    /// content is never replaced (an error).
    pub async fn put(&self, key: &str, path: &Path) -> Result<StoredRecording> {
        match self {
            Store::S3(s3) => s3.put(key, path).await,
            Store::Local(local) => local.put(key, path).await,
        }
    }

    /// The content stored under `key` (the same key given to [`put`](Self::put)).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Store::S3(s3) => s3.get(key).await,
            Store::Local(local) => local.get(key).await,
        }
    }
}

/// How to reach the S3 bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible servers (MinIO and the like); AWS when unset.
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Region (any value for most S3-compatible servers).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key; never printed.
    pub secret_access_key: String,
    /// Path-style URLs (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub path_style: bool,
    /// Prepended to every key; may be empty.
    pub prefix: String,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The S3 settings as a binary's flags give them, each maybe missing; [`S3Options::config`]
/// checks they are enough. Shared by the proxy and the operator so both read the same flags
/// the same way.
#[derive(Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct S3Options {
    /// S3 endpoint URL (empty: AWS's regional endpoint).
    #[cfg_attr(
        feature = "cli",
        arg(long = "s3-endpoint", env = "GATEHOUSE_S3_ENDPOINT")
    )]
    pub endpoint: Option<String>,
    /// S3 bucket.
    #[cfg_attr(feature = "cli", arg(long = "s3-bucket", env = "GATEHOUSE_S3_BUCKET"))]
    pub bucket: Option<String>,
    /// S3 region.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "s3-region",
            env = "GATEHOUSE_S3_REGION",
            default_value = "us-east-1"
        )
    )]
    pub region: String,
    /// S3 access key id (the chart reads it from a Secret).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "s3-access-key-id",
            env = "AWS_ACCESS_KEY_ID",
            hide_env_values = true
        )
    )]
    pub access_key_id: Option<String>,
    /// S3 secret access key (the chart reads it from a Secret); never printed.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "s3-secret-access-key",
            env = "AWS_SECRET_ACCESS_KEY",
            hide_env_values = true
        )
    )]
    pub secret_access_key: Option<String>,
    /// Path-style S3 URLs (MinIO and most self-hosted servers).
    #[cfg_attr(
        feature = "cli",
        arg(long = "s3-path-style", env = "GATEHOUSE_S3_PATH_STYLE")
    )]
    pub path_style: bool,
    /// Prefix for object keys.
    #[cfg_attr(
        feature = "cli",
        arg(long = "s3-prefix", env = "GATEHOUSE_S3_PREFIX", default_value = "")
    )]
    pub prefix: String,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Options {
    /// The configuration, or which required setting is missing.
    pub fn config(self) -> Result<S3Config> {
        let Some(bucket) = self.bucket.filter(|b| !b.is_empty()) else {
            return Err(Error::S3Options(
                "the S3 store needs a bucket (--s3-bucket, GATEHOUSE_S3_BUCKET)".to_owned(),
            ));
        };
        let (Some(access_key_id), Some(secret_access_key)) =
            (self.access_key_id, self.secret_access_key)
        else {
            return Err(Error::S3Options(
                "the S3 store needs credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .to_owned(),
            ));
        };
        Ok(S3Config {
            endpoint: self.endpoint.filter(|e| !e.is_empty()),
            bucket,
            region: self.region,
            access_key_id,
            secret_access_key,
            path_style: self.path_style,
            prefix: self.prefix,
        })
    }
}

/// An S3 bucket holding recordings.
#[derive(Clone)]
pub struct S3Store {
    pub(crate) client: Client,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    /// Put on every object written (see [`crate::lock`]).
    pub(crate) lock: Option<ObjectLock>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's own Debug is long and says nothing useful here.
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A client for `config`. Nothing is contacted until the first upload.
    pub fn new(config: S3Config) -> S3Store {
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region))
            .credentials_provider(Credentials::new(
                config.access_key_id,
                config.secret_access_key,
                None,
                None,
                "gatehouse",
            ))
            .force_path_style(config.path_style)
            // Newer SDKs add CRC trailers by default, which many S3-compatible servers reject.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // The uploader retries with its own backoff; one SDK retry only smooths over a
            // transient error in the middle of a large multipart upload.
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            // An unreachable server fails in seconds instead of hanging the upload queue; a
            // 16 MiB part still has two minutes on a slow link.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
            prefix: config.prefix,
            lock: None,
        }
    }

    async fn put(&self, key: &str, path: &Path) -> Result<StoredRecording> {
        let object_key = format!("{}{key}", self.prefix);
        let size = tokio::fs::metadata(path)
            .await
            .map_err(read_spool(path))?
            .len();
        let (sha256, bytes) = if size <= PART_BYTES as u64 {
            let data = tokio::fs::read(path).await.map_err(read_spool(path))?;
            let digest = PayloadDigest::of(&data);
            let bytes = data.len() as u64;
            // Write-once: a recording already stored under this key is never replaced.
            self.send_put(&object_key, CONTENT_TYPE, data, digest, true)
                .await?;
            (digest.hex(), bytes)
        } else {
            self.put_multipart(&object_key, path).await?
        };
        Ok(StoredRecording {
            key: key.to_owned(),
            sha256,
            bytes,
            location: format!("s3://{}/{object_key}", self.bucket),
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let object_key = format!("{}{key}", self.prefix);
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(sdk_error(&object_key, "GetObject"))?;
        let data = object
            .body
            .collect()
            .await
            .map_err(sdk_error(&object_key, "GetObject body"))?;
        Ok(data.into_bytes().to_vec())
    }
}

/// Locked and write-once puts (see [`crate::lock`] and [`crate::once`]).
impl S3Store {
    /// The retention to send now: (mode, retain-until), or None without a lock.
    pub(crate) fn retention_now(&self) -> Result<Option<(ObjectLockMode, DateTime)>> {
        self.lock
            .map(|lock| Ok((lock.mode.sdk(), lock.retain_until(SystemTime::now())?)))
            .transpose()
    }

    /// PutObject of `data` (whose SHA-256 is `digest`) with the lock, if any, and the
    /// content's checksum; `if_none_match` makes it write-once.
    pub(crate) async fn send_put(
        &self,
        object_key: &str,
        content_type: &str,
        data: Vec<u8>,
        digest: PayloadDigest,
        if_none_match: bool,
    ) -> Result<()> {
        let retention = self.retention_now()?;
        let sha256 = digest.hex();
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key)
            .content_type(content_type)
            // Stored with the object so it can be verified without the AccessRequest.
            .metadata("sha256", &sha256);
        if let Some((mode, until)) = retention {
            // S3 wants a checksum of locked writes; SHA-256 is the one already computed.
            put = put
                .checksum_sha256(digest.base64())
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        if if_none_match {
            put = put.if_none_match("*");
        }
        let sent = put
            .body(ByteStream::from(data))
            .customize()
            .interceptor(digest.signer())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if if_none_match && is_precondition_failed(&e) => {
                self.same_as_existing(object_key, &sha256).await
            }
            Err(e) => Err(sdk_error(object_key, "PutObject")(e)),
        }
    }
}

/// A directory holding recordings at `<dir>/<key>`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pub(crate) dir: PathBuf,
}

impl LocalStore {
    /// A store rooted at `dir` (created on the first upload if missing).
    pub fn new(dir: impl Into<PathBuf>) -> LocalStore {
        LocalStore { dir: dir.into() }
    }

    /// `<dir>/<key>`, refusing keys that would leave the directory.
    pub(crate) fn path_for(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if key.is_empty() || !plain {
            return Err(store_error(key, "key is not a plain relative path"));
        }
        Ok(self.dir.join(relative))
    }

    async fn put(&self, key: &str, path: &Path) -> Result<StoredRecording> {
        let dest = self.path_for(key)?;
        let parent = dest.parent().unwrap_or(&self.dir).to_owned();
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        // Unique per call, so concurrent puts of one key never share a temporary file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = parent.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(write_store(key, &parent))?;
        let copied = copy_and_hash(path, key, &tmp).await;
        let (sha256, bytes) = match copied {
            Ok(done) => done,
            Err(e) => {
                // Best effort: the copy error is what matters, a stray temp file is harmless.
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(write_store(key, &dest))?;
        // The rename is only durable once the directory is.
        File::open(&parent)
            .await
            .map_err(write_store(key, &parent))?
            .sync_all()
            .await
            .map_err(write_store(key, &parent))?;
        Ok(StoredRecording {
            key: key.to_owned(),
            sha256,
            bytes,
            location: dest.display().to_string(),
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path_for(key)?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| store_error(key, &format!("reading {}: {e}", path.display())))
    }
}

/// Copy the file at `src` to a new, fsynced file `dest` (stored under `key`, for errors), in
/// chunks; its SHA-256 and size.
async fn copy_and_hash(src: &Path, key: &str, dest: &Path) -> Result<(String, u64)> {
    let mut input = File::open(src).await.map_err(read_spool(src))?;
    let mut output = File::create(dest).await.map_err(write_store(key, dest))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0; CHUNK_BYTES];
    loop {
        let n = input.read(&mut buf).await.map_err(read_spool(src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
        let written = output.write_all(&buf[..n]).await;
        written.map_err(write_store(key, dest))?;
    }
    output.sync_all().await.map_err(write_store(key, dest))?;
    Ok((hex(&hasher.finalize()), bytes))
}

pub(crate) fn read_spool(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::ReadSource { path, source }
}

pub(crate) fn write_store(key: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let key = key.to_owned();
    let path = path.to_owned();
    move |e| Error::Request {
        key,
        message: format!("writing {}: {e}", path.display()),
    }
}

pub(crate) fn store_error(key: &str, message: &str) -> Error {
    Error::Request {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

/// An SDK error with its whole source chain: the SDK's own Display is just "service error".
pub(crate) fn sdk_error<E: std::error::Error + 'static>(
    key: &str,
    operation: &'static str,
) -> impl FnOnce(E) -> Error {
    let key = key.to_owned();
    move |e| Error::Request {
        key,
        message: format!("{operation}: {}", DisplayErrorContext(&e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sha256_hex(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    #[tokio::test]
    async fn local_put_copies_and_hashes_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.cast");
        // Larger than one read chunk and not a multiple of it.
        let content: Vec<u8> = (0..CHUNK_BYTES * 2 + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&src, &content).unwrap();
        let store = Store::Local(LocalStore::new(dir.path().join("store")));

        let key = "recordings/2024-03-09/alice_host_00.cast";
        let stored = store.put(key, &src).await.unwrap();
        let dest = dir.path().join("store").join(key);
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        assert_eq!(stored.key, key);
        assert_eq!(stored.bytes, content.len() as u64);
        assert_eq!(stored.sha256, sha256_hex(&content));
        assert_eq!(stored.location, dest.display().to_string());
        assert_eq!(store.get(key).await.unwrap(), content);
        // No temporary files are left next to the object.
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [dest.file_name().unwrap()]);
    }

    #[tokio::test]
    async fn local_put_refuses_escaping_keys_and_reports_missing_spool() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.cast");
        std::fs::write(&src, b"x").unwrap();
        let store = Store::Local(LocalStore::new(dir.path().join("store")));
        for key in ["", "../escape.cast", "/etc/escape.cast", "a/../../b.cast"] {
            let err = store.put(key, &src).await.unwrap_err();
            assert!(matches!(err, Error::Request { .. }), "{key}: {err}");
        }
        let err = store
            .put("ok.cast", &dir.path().join("missing.cast"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ReadSource { .. }), "{err}");
    }

    #[test]
    fn s3_config_debug_redacts_the_secret() {
        let config = S3Config {
            endpoint: Some("http://minio:9000".to_owned()),
            bucket: "recordings".to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: "AKIAEXAMPLE".to_owned(),
            secret_access_key: "very-secret-key".to_owned(),
            path_style: true,
            prefix: "gatehouse/".to_owned(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret-key"), "{printed}");
        assert!(printed.contains("AKIAEXAMPLE"));
        let store = S3Store::new(config);
        let printed = format!("{store:?}");
        assert!(!printed.contains("very-secret-key"), "{printed}");
        assert!(printed.contains("recordings"));
    }
}
