//! The Gatehouse proxy as a process of the test plane: started as the chart's `gatehouse-proxy`
//! ServiceAccount (so the chart's RBAC is what is exercised), with its own listen port, spool
//! directory and recording store per test, and the engineer's side of it: the real `ssh`,
//! `scp` and `sftp` with a Gatehouse certificate, pinned to the proxy's published host key.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gatehouse_crds::contract::published;

use crate::{
    ControlPlane, User,
    gatehouse::{SYSTEM_NAMESPACE, free_port, http_get},
    minio::{ACCESS_KEY, Minio, REGION, SECRET_KEY},
    repo_root,
    ssh_client::{Client, Server, SshCommand},
};

/// The proxy binary the tests run.
pub fn proxy_binary() -> PathBuf {
    let path = std::env::var_os("GATEHOUSE_PROXY_BIN").map_or_else(
        || repo_root().join("target/debug/gatehouse-proxy"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p gatehouse-proxy`; `make test` does)",
        path.display()
    );
    path
}

/// Where a proxy keeps recordings.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local directory.
    Local(PathBuf),
    /// A bucket on a test MinIO.
    S3 {
        /// Endpoint URL.
        endpoint: String,
        /// Bucket.
        bucket: String,
    },
    /// Exactly these storage arguments and environment (e.g. as the chart renders them).
    Configured {
        /// Arguments.
        args: Vec<String>,
        /// Environment variables.
        env: Vec<(String, String)>,
    },
}

impl Storage {
    /// A bucket on `minio`.
    pub fn s3(minio: &Minio, bucket: &str) -> Self {
        Self::S3 {
            endpoint: minio.endpoint(),
            bucket: bucket.to_owned(),
        }
    }
}

/// How to start a proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Working directory: spool, log.
    pub dir: PathBuf,
    /// Recording store.
    pub storage: Storage,
    /// Extra arguments.
    pub args: Vec<String>,
}

/// A running proxy; killed on drop.
#[derive(Debug)]
pub struct Proxy {
    child: Option<Child>,
    /// SSH port.
    pub port: u16,
    /// Metrics/health port.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
    kubeconfig: PathBuf,
    config: ProxyConfig,
}

impl Proxy {
    /// Start a proxy as the chart's ServiceAccount and wait until it is ready.
    pub fn start(cp: &ControlPlane, config: ProxyConfig) -> Proxy {
        cp.install_gatehouse();
        let token = cp
            .kubectl(User::Admin)
            .args([
                "create",
                "token",
                "gatehouse-proxy",
                "-n",
                SYSTEM_NAMESPACE,
                "--duration=24h",
            ])
            .run();
        let kubeconfig =
            cp.service_account_kubeconfig(SYSTEM_NAMESPACE, "gatehouse-proxy", token.ok().trim());
        std::fs::create_dir_all(&config.dir).unwrap_or_else(|e| panic!("{e}"));
        let mut proxy = Proxy {
            child: None,
            port: free_port(),
            metrics_port: free_port(),
            log: config.dir.join("proxy.log"),
            kubeconfig,
            config,
        };
        proxy.restart();
        proxy
    }

    /// Start the process (again) with the same ports, spool and store.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "proxy already runs");
        let mut command = Command::new(proxy_binary());
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .env("POD_NAME", "proxy-under-test")
            .arg(format!("--namespace={SYSTEM_NAMESPACE}"))
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--metrics-addr=127.0.0.1:{}", self.metrics_port))
            .arg(format!("--spool-dir={}", self.spool_dir().display()));
        match &self.config.storage {
            Storage::Local(dir) => {
                command
                    .arg("--storage=local")
                    .arg(format!("--storage-dir={}", dir.display()));
            }
            Storage::S3 { endpoint, bucket } => {
                command
                    .arg("--storage=s3")
                    .arg(format!("--s3-endpoint={endpoint}"))
                    .arg(format!("--s3-bucket={bucket}"))
                    .arg(format!("--s3-region={REGION}"))
                    .arg("--s3-path-style")
                    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            }
            Storage::Configured { args, env } => {
                command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
            }
        }
        command.args(&self.config.args);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
        );
        let start = Instant::now();
        loop {
            if http_get(self.metrics_port, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "proxy exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "proxy not ready after 60 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill it with SIGKILL (no chance to clean up) and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop it with SIGTERM, as Kubernetes stops a pod, and wait up to `timeout` for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("the proxy is not running"));
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(sent.success(), "kill -TERM failed: {sent}");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the proxy still ran {timeout:?} after SIGTERM:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Wait until a live recording in the spool has an output event starting with `text`
    /// (the header names the command, so a plain substring would match too early).
    pub async fn await_spooled_output(&self, text: &str, timeout: Duration) {
        let spool = self.spool_dir();
        let event = format!(r#""o", {}"#, serde_json::Value::from(text))
            .trim_end_matches('"')
            .to_owned();
        crate::gatehouse::wait_for(timeout, &format!("{event} in the spool"), || async {
            std::fs::read_dir(&spool)
                .ok()?
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "cast"))
                .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&event)))
                .then_some(())
        })
        .await;
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.config.dir.join("spool")
    }

    /// The names of the files in the spool, sorted.
    pub fn spooled_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.spool_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Wait until the spool is empty; on timeout, fail naming what is left, with the log.
    pub async fn await_empty_spool(&self, timeout: Duration) {
        let start = Instant::now();
        while !self.spooled_files().is_empty() && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.spooled_files();
        assert!(
            left.is_empty(),
            "spool not emptied within {timeout:?}: {left:?}\n{}",
            self.log_tail()
        );
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `/metrics`.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// `client` (ssh, scp or sftp) through this proxy as SSH user `user` (`LOGIN@HOST`), with
    /// `identity` and its Gatehouse `certificate`, pinning the proxy's host key from
    /// `known_hosts` (the operator publishes it under the `HostKeyAlias`).
    pub fn client(
        &self,
        client: Client,
        user: &str,
        identity: &Path,
        certificate: &Path,
        known_hosts: &Path,
    ) -> SshCommand {
        let server = Server {
            port: self.port,
            known_hosts: known_hosts.to_path_buf(),
        };
        SshCommand::new(client, &server, user, identity, certificate)
            .option("HostKeyAlias", published::PROXY_HOST_KEY_ALIAS)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}
