//! A real S3-compatible server for recording tests: MinIO, built from the Go module proxy by
//! `tests/scripts/build-tools.sh` and announced as `GATEHOUSE_MINIO`. Each test starts its own
//! (own data directory and port) so it can stop and restart it. Buckets are created and
//! objects read with `curl --aws-sigv4`, a client independent of the proxy's aws-sdk-s3.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    command::{Cmd, CmdOutput},
    gatehouse::{free_port, http_get},
};

/// Access key of test MinIO servers.
pub const ACCESS_KEY: &str = "gatehouse-test";
/// Secret key of test MinIO servers.
pub const SECRET_KEY: &str = "gatehouse-test-secret";
/// Region the tests configure.
pub const REGION: &str = "us-east-1";

/// A running MinIO server; killed on drop.
#[derive(Debug)]
pub struct Minio {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

fn binary() -> PathBuf {
    let path = PathBuf::from(
        std::env::var_os("GATEHOUSE_MINIO")
            .unwrap_or_else(|| panic!("GATEHOUSE_MINIO is not set: run under control-plane.sh")),
    );
    assert!(
        path.is_file(),
        "{} missing: run tests/scripts/build-tools.sh minio",
        path.display()
    );
    path
}

impl Minio {
    /// Start a server keeping its data in `data` and wait until it serves S3 requests.
    pub fn start(data: &Path) -> Minio {
        let mut minio = Minio {
            child: None,
            port: free_port(),
            data: data.join("minio-data"),
            log: data.join("minio.log"),
        };
        minio.restart();
        minio
    }

    /// Start (again) on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "MinIO already runs");
        std::fs::create_dir_all(&self.data).unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let console = free_port();
        let child = Command::new(binary())
            .args(["server", "--quiet", "--address"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--console-address")
            .arg(format!("127.0.0.1:{console}"))
            .arg(&self.data)
            .env("MINIO_ROOT_USER", ACCESS_KEY)
            .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting MinIO: {e}"));
        self.child = Some(child);
        // Not `/minio/health/live` or `/ready`: both answer 200 before the object layer, bucket
        // metadata and IAM are initialized, when a bucket PUT still gets 503
        // XMinioServerNotInitialized. `/minio/health/cluster` waits for all of them.
        let start = Instant::now();
        while http_get(self.port, "/minio/health/cluster").is_none_or(|(code, _)| code != 200) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "MinIO not ready after 60 s: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (the data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `curl --aws-sigv4` of `path` with the root credentials (on stdin, not the command line).
    fn curl(&self, method: &str, path: &str) -> CmdOutput {
        Cmd::new("curl")
            .args(["-sS", "--fail-with-body", "-X", method])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:s3"))
            .args(["--config", "-"])
            .arg(format!("{}/{path}", self.endpoint()))
            .stdin(format!("user = \"{ACCESS_KEY}:{SECRET_KEY}\"\n"))
            .run()
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

    /// Read an object, or None when it does not exist (or the server is down).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self.curl("GET", &format!("{bucket}/{key}"));
        out.success.then_some(out.stdout_bytes)
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        self.stop();
    }
}
