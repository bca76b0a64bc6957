//! A real S3-compatible server for recordings: MinIO, built from the Go module proxy by
//! `tests/scripts/build-tools.sh` and named by the control plane (`GATEHOUSE_MINIO`).
//!
//! In: a data directory, a log file and root credentials (fixed ones for tests; `make up`
//! makes its own). Out: a running [`Minio`] on its own loopback port, ready once
//! `/minio/health/cluster` answers 200 (the only probe that waits until a bucket PUT cannot get
//! 503 `XMinioServerNotInitialized`); an [`S3Store`] for the proxy; buckets created and objects
//! read with `curl --aws-sigv4`, a client independent of the proxy's aws-sdk-s3. Each test
//! starts its own so it can stop and restart it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use crate::{
    ControlPlane,
    command::{Cmd, CmdOutput},
    net::LOOPBACK,
    process::{Process, Ready, Spec},
    proxy::{S3Store, Storage},
};

/// Access key of test MinIO servers.
pub const ACCESS_KEY: &str = "gatehouse-test";
/// Secret key of test MinIO servers.
pub const SECRET_KEY: &str = "gatehouse-test-secret";
/// Region the harness configures.
pub const REGION: &str = "us-east-1";

/// MinIO's root user: the only credentials a fresh server knows.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `MINIO_ROOT_USER`, the S3 access key.
    pub access_key: String,
    /// `MINIO_ROOT_PASSWORD`, the S3 secret key.
    pub secret_key: String,
}

impl Credentials {
    /// The fixed credentials of test servers.
    pub fn for_tests() -> Self {
        Self {
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
        }
    }
}

/// A running MinIO server; killed on drop unless detached.
#[derive(Debug)]
pub struct Minio {
    process: Process,
    address: Ipv4Addr,
    port: u16,
    credentials: Credentials,
}

impl Minio {
    /// A test server keeping its data in `dir/minio-data` and its log in `dir/minio.log`.
    pub fn start(dir: &Path) -> Minio {
        let cp = crate::control_plane();
        Self::start_with(
            cp,
            &dir.join("minio-data"),
            &dir.join("minio.log"),
            Credentials::for_tests(),
            |spec| spec,
        )
    }

    /// A server with `data`, `log` and `credentials`, adapted by `adapt` (e.g. to a daemon).
    pub fn start_with(
        cp: &ControlPlane,
        data: &Path,
        log: &Path,
        credentials: Credentials,
        adapt: impl Fn(Spec) -> Spec,
    ) -> Minio {
        Self::start_at(cp, LOOPBACK, data, log, credentials, adapt)
    }

    /// [`Self::start_with`] listening on `address` (loopback, or the real node's address, which
    /// pods reach) instead of loopback; the console stays on loopback.
    pub fn start_at(
        cp: &ControlPlane,
        address: Ipv4Addr,
        data: &Path,
        log: &Path,
        credentials: Credentials,
        adapt: impl Fn(Spec) -> Spec,
    ) -> Minio {
        std::fs::create_dir_all(data)
            .unwrap_or_else(|e| panic!("creating {}: {e}", data.display()));
        // The root credentials go in the environment, not the command line `ps` shows.
        let (process, [port, _]) = Process::start_on_free_ports(|[port, console]| {
            let cmd = Cmd::new(cp.minio_binary())
                .args(["server", "--quiet", "--address"])
                .arg(format!("{address}:{port}"))
                .arg("--console-address")
                .arg(format!("{LOOPBACK}:{console}"))
                .arg(data)
                .env("MINIO_ROOT_USER", &credentials.access_key)
                .env("MINIO_ROOT_PASSWORD", &credentials.secret_key)
                .env("MINIO_BROWSER", "off")
                .env("MINIO_UPDATE", "off");
            let spec = Spec::new("MinIO", cmd, log);
            let ready = Ready::http_at(SocketAddr::from((address, port)), "/minio/health/cluster");
            (adapt(spec), ready)
        });
        Minio {
            process,
            address,
            port,
            credentials,
        }
    }

    /// Start it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// Stop the server (the data stays).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Leave it running after this handle is gone, its pid in `pid_file`; returns the pid.
    pub fn detach(self, pid_file: &Path) -> u32 {
        self.process.detach(pid_file)
    }

    /// The server's process id, while it runs (the benchmark reads its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `http://ADDRESS:PORT` (`http://127.0.0.1:PORT` unless started with [`Self::start_at`]).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.address, self.port)
    }

    /// Bucket `bucket` on this server, as the proxy writes it.
    pub fn store(&self, bucket: &str) -> S3Store {
        S3Store {
            endpoint: self.endpoint(),
            bucket: bucket.to_owned(),
            region: REGION.to_owned(),
            prefix: String::new(),
            path_style: true,
            access_key: self.credentials.access_key.clone(),
            secret_key: self.credentials.secret_key.clone(),
        }
    }

    /// Recordings in bucket `bucket` on this server.
    pub fn storage(&self, bucket: &str) -> Storage {
        Storage::S3(self.store(bucket))
    }

    /// `curl --aws-sigv4` of `path` with the root credentials (on stdin, not the command line).
    fn curl(&self, method: &str, path: &str) -> CmdOutput {
        self.s3_request(method, path, &[], None)
    }

    /// An S3 request as the store's own (root) credentials: `method` on `path` (bucket, key
    /// and query, escaped), with `headers` (`Name: value`, signed) and the file `body`, if
    /// any. Fails (`success` false, the S3 error XML in stdout) on any HTTP error.
    pub fn s3_request(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&Path>,
    ) -> CmdOutput {
        let Credentials {
            access_key,
            secret_key,
        } = &self.credentials;
        let mut cmd = Cmd::new("curl")
            .args(["-sS", "--fail-with-body", "-X", method])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:s3"))
            .args(["--config", "-"]);
        for header in headers {
            cmd = cmd.args(["-H", header]);
        }
        if let Some(body) = body {
            // curl 7.88 signs a body with the wrong payload hash (SignatureDoesNotMatch).
            cmd = cmd
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
        }
        cmd.arg(format!("{}/{path}", self.endpoint()))
            .stdin(format!("user = \"{access_key}:{secret_key}\"\n"))
            .run()
    }

    /// Create a bucket with Object Lock enabled (and so versioning), as S3 allows only at
    /// creation.
    pub fn create_locked_bucket(&self, bucket: &str) {
        let out = self.s3_request(
            "PUT",
            bucket,
            &["x-amz-bucket-object-lock-enabled: true"],
            None,
        );
        assert!(
            out.success,
            "creating locked bucket {bucket}: {}{}",
            out.stdout, out.stderr
        );
    }

    /// The object versions under `prefix` in `bucket` (ListObjectVersions, first page), in
    /// the server's order (by key, newest first): (key, version id, whether it is a delete
    /// marker).
    pub fn versions(&self, bucket: &str, prefix: &str) -> Vec<(String, String, bool)> {
        let out = self.curl(
            "GET",
            &format!("{bucket}?prefix={}&versions=", url_escape(prefix)),
        );
        assert!(
            out.success,
            "listing versions under {bucket}/{prefix}: {}{}",
            out.stdout, out.stderr
        );
        let tag = |entry: &str, name: &str| {
            let open = format!("<{name}>");
            let rest = entry.split(open.as_str()).nth(1)?;
            Some(
                rest.split(&format!("</{name}>"))
                    .next()?
                    .replace("&amp;", "&"),
            )
        };
        let mut found = Vec::new();
        for (i, chunk) in out.stdout.split("<DeleteMarker>").enumerate() {
            for (j, entry) in chunk.split("<Version>").enumerate() {
                // A chunk's text before its first <Version> is a delete marker (or, in the
                // first chunk, the list's header).
                if i == 0 && j == 0 {
                    continue;
                }
                if let (Some(key), Some(id)) = (tag(entry, "Key"), tag(entry, "VersionId")) {
                    found.push((key, id, j == 0));
                }
            }
        }
        found
    }

    /// Create a bucket (one that exists already is fine).
    pub fn create_bucket(&self, bucket: &str) {
        let out = self.curl("PUT", bucket);
        assert!(
            out.success || out.stdout.contains("BucketAlreadyOwnedByYou"),
            "creating bucket {bucket}: {}{}",
            out.stdout,
            out.stderr
        );
    }

    /// The keys in `bucket` starting with `prefix`, sorted (up to 1000: ListObjectsV2's first
    /// page, plenty for a test).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.curl(
            "GET",
            &format!("{bucket}?list-type=2&prefix={}", url_escape(prefix)),
        );
        assert!(
            out.success,
            "listing {bucket}/{prefix}: {}{}",
            out.stdout, out.stderr
        );
        let mut keys: Vec<String> = out
            .stdout
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(|k| k.replace("&amp;", "&"))
            .collect();
        keys.sort();
        keys
    }

    /// An object's user metadata value `name` (`x-amz-meta-<name>`, by HeadObject), or None
    /// when the object or the value does not exist.
    pub fn metadata(&self, bucket: &str, key: &str, name: &str) -> Option<String> {
        let Credentials {
            access_key,
            secret_key,
        } = &self.credentials;
        let out = Cmd::new("curl")
            .args(["-sS", "--fail", "-I", "--aws-sigv4"])
            .arg(format!("aws:amz:{REGION}:s3"))
            .args(["--config", "-"])
            .arg(format!("{}/{bucket}/{key}", self.endpoint()))
            .stdin(format!("user = \"{access_key}:{secret_key}\"\n"))
            .run();
        let header = format!("x-amz-meta-{name}:");
        out.stdout.lines().find_map(|line| {
            let lower = line.to_ascii_lowercase();
            lower
                .starts_with(&header)
                .then(|| line[header.len()..].trim().to_owned())
        })
    }

    /// Read an object, or None when it does not exist (or the server is down).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self.curl("GET", &format!("{bucket}/{key}"));
        out.success.then_some(out.stdout_bytes)
    }
}

/// Percent-encode everything but unreserved characters (a query value, as SigV4 signs it).
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
