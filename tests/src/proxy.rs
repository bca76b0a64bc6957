//! The Gatehouse proxy as a process of the test plane, and the engineer's way through it.
//!
//! In: the built `gatehouse-proxy` (see [`crate::binaries`]), a kubeconfig for the chart's
//! `gatehouse-proxy` ServiceAccount (so the chart's RBAC is what is exercised), a [`ProxyConfig`]
//! (working directory, recording [`Storage`], extra flags). Out: a running [`Proxy`] on its own
//! SSH and metrics ports, ready once `/readyz` answers 200, with its spool and log in the
//! working directory; and the real `ssh`, `scp` and `sftp` reaching it with a Gatehouse
//! certificate, pinned to the proxy's published host key.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gatehouse_crds::contract::published;

use crate::{
    ControlPlane,
    binaries::{Logs, proxy_binary},
    command::Cmd,
    install::{PROXY_SERVICE_ACCOUNT, SYSTEM_NAMESPACE},
    net::{LOOPBACK, http_get},
    process::{Process, Ready, Spec},
    ssh_client::{Client, Server, SshCommand},
    wait_for,
};

/// An S3 bucket (and prefix) recordings go to, with the credentials to write there.
#[derive(Debug, Clone)]
pub struct S3Store {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Prefix of every object key.
    pub prefix: String,
    /// Path-style URLs (MinIO) instead of virtual-hosted ones.
    pub path_style: bool,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
}

/// Where a proxy keeps recordings.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket.
    S3(S3Store),
    /// Exactly these storage arguments and environment (e.g. as the chart renders them).
    Configured {
        /// Arguments.
        args: Vec<String>,
        /// Environment variables.
        env: Vec<(String, String)>,
    },
}

impl Storage {
    /// `cmd` (a proxy) with this store's flags and environment (credentials stay off the
    /// command line).
    fn apply(&self, cmd: Cmd) -> Cmd {
        match self {
            Self::Local(dir) => cmd
                .arg("--storage=local")
                .arg(format!("--storage-dir={}", dir.display())),
            Self::S3(store) => {
                let cmd = cmd
                    .arg("--storage=s3")
                    .arg(format!("--s3-endpoint={}", store.endpoint))
                    .arg(format!("--s3-bucket={}", store.bucket))
                    .arg(format!("--s3-region={}", store.region))
                    .arg(format!("--s3-prefix={}", store.prefix))
                    .env("AWS_ACCESS_KEY_ID", &store.access_key)
                    .env("AWS_SECRET_ACCESS_KEY", &store.secret_key);
                if store.path_style {
                    cmd.arg("--s3-path-style")
                } else {
                    cmd
                }
            }
            Self::Configured { args, env } => cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))),
        }
    }
}

/// How to start a proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Working directory: `spool/`, `proxy.log`.
    pub dir: PathBuf,
    /// Recording store.
    pub storage: Storage,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Log format.
    pub logs: Logs,
    /// `POD_NAME`: its identity in `status.sessions` and logs, and the writer of its audit
    /// batches (`audit/<writer>/…`): proxies sharing a store need different ones.
    pub pod_name: String,
}

impl ProxyConfig {
    /// A proxy working in `dir`, storing recordings in `storage`, logging for tests.
    pub fn new(dir: PathBuf, storage: Storage) -> Self {
        Self {
            dir,
            storage,
            args: Vec::new(),
            logs: Logs::Json,
            pod_name: "proxy-under-test".to_owned(),
        }
    }
}

/// A running proxy; killed on drop unless detached.
#[derive(Debug)]
pub struct Proxy {
    process: Process,
    /// SSH port.
    pub port: u16,
    /// Metrics/health port.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
    spool: PathBuf,
}

impl Proxy {
    /// Start a proxy as the chart's ServiceAccount and wait until it is ready.
    pub fn start(cp: &ControlPlane, config: ProxyConfig) -> Proxy {
        Self::start_spec(cp, config, |spec| spec)
    }

    /// Start it as [`Self::start`] does, as a daemon that can be detached.
    pub fn start_daemon(cp: &ControlPlane, config: ProxyConfig) -> Proxy {
        Self::start_spec(cp, config, Spec::daemon)
    }

    fn start_spec(cp: &ControlPlane, config: ProxyConfig, adapt: impl Fn(Spec) -> Spec) -> Proxy {
        cp.install_gatehouse();
        let kubeconfig = cp.service_account_login(SYSTEM_NAMESPACE, PROXY_SERVICE_ACCOUNT);
        std::fs::create_dir_all(&config.dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", config.dir.display()));
        let log = config.dir.join("proxy.log");
        let spool = config.dir.join("spool");
        let (process, [port, metrics_port]) = Process::start_on_free_ports(|[port, metrics]| {
            let cmd = Cmd::new(proxy_binary())
                .env("KUBECONFIG", &kubeconfig)
                .env("POD_NAME", &config.pod_name)
                .arg(format!("--namespace={SYSTEM_NAMESPACE}"))
                .arg(format!("--listen={LOOPBACK}:{port}"))
                .arg(format!("--metrics-addr={LOOPBACK}:{metrics}"))
                .arg(format!("--spool-dir={}", spool.display()));
            let cmd = config
                .logs
                .apply(config.storage.apply(cmd))
                .args(&config.args);
            let spec = Spec::new("the proxy", cmd, &log);
            (adapt(spec), Ready::http(metrics, "/readyz"))
        });
        Proxy {
            process,
            port,
            metrics_port,
            log,
            spool,
        }
    }

    /// Start the process again with the same ports, spool and store.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// Kill it with SIGKILL (no chance to clean up) and wait.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stop it with SIGTERM, as Kubernetes stops a pod, and wait up to `timeout` for it to exit;
    /// panics (with the log) when it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        assert!(self.process.pid().is_some(), "the proxy is not running");
        self.process.stop(timeout).unwrap_or_else(|| {
            panic!(
                "the proxy still ran {timeout:?} after SIGTERM:\n{}",
                self.log_tail()
            )
        })
    }

    /// Leave it running after this handle is gone, its pid in `pid_file`; returns the pid.
    pub fn detach(self, pid_file: &Path) -> u32 {
        self.process.detach(pid_file)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        self.process.rss_kib()
    }

    /// Wait until a live recording in the spool has an output event starting with `text`
    /// (the header names the command, so a plain substring would match too early).
    pub async fn await_spooled_output(&self, text: &str, timeout: Duration) {
        let event = format!(r#""o", {}"#, serde_json::Value::from(text))
            .trim_end_matches('"')
            .to_owned();
        wait_for(timeout, &format!("{event} in the spool"), || async {
            std::fs::read_dir(&self.spool)
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
        self.spool.clone()
    }

    /// The names of the files in the spool, sorted.
    pub fn spooled_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.spool)
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
        self.process.log_text()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
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
            address: LOOPBACK,
            port: self.port,
            known_hosts: known_hosts.to_path_buf(),
        };
        SshCommand::new(client, &server, user, identity, certificate)
            .option("HostKeyAlias", published::PROXY_HOST_KEY_ALIAS)
    }
}
