//! Gatehouse itself, running against the harness's control plane.
//!
//! Data comes from the built `gatehouse-operator` binary (`target/debug`, or
//! `GATEHOUSE_OPERATOR_BIN`) and the chart; it goes out as a running operator process that
//! authenticates as the chart's own `gatehouse-operator` ServiceAccount (so the chart's RBAC is
//! what the tests exercise), with the chart's admission webhooks pointing at it. One shared
//! operator runs per control plane (a file lock guards its start across test binaries; it is
//! stopped by `control-plane.sh down`). Tests that need their own operator (restarts, races,
//! short TTLs) start extra ones with [`Operator::start`].

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{ControlPlane, User, repo_root};

/// The operator's namespace in the shared install.
pub const SYSTEM_NAMESPACE: &str = crate::RELEASE_NAMESPACE;

pub use crate::net::{free_port, http_get};

/// The operator binary the tests run.
pub fn operator_binary() -> PathBuf {
    let path = std::env::var_os("GATEHOUSE_OPERATOR_BIN").map_or_else(
        || repo_root().join("target/debug/gatehouse-operator"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p gatehouse-operator`; `make test` does)",
        path.display()
    );
    path
}

/// Poll `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How to start an operator.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Kubeconfig it authenticates with.
    pub kubeconfig: PathBuf,
    /// Its own namespace (`--namespace`).
    pub namespace: String,
    /// `--watch-namespace`, if restricted.
    pub watch_namespace: Option<String>,
    /// Serve the webhook on this port (None: `--no-webhook`).
    pub webhook_port: Option<u16>,
    /// `--pending-ttl`.
    pub pending_ttl: Option<String>,
    /// `--lease-name`.
    pub lease_name: Option<String>,
    /// Extra environment (like `FAKETIME`, `LD_PRELOAD`).
    pub env: Vec<(String, String)>,
    /// Log file.
    pub log: PathBuf,
}

/// A running operator process; killed on drop unless detached.
#[derive(Debug)]
pub struct Operator {
    child: Option<Child>,
    /// Its metrics/health port.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Start an operator and wait until `/readyz` answers 200 (keys loaded, webhook serving).
    pub fn start(config: &OperatorConfig) -> Operator {
        let metrics_port = free_port();
        let mut command = Command::new(operator_binary());
        command
            .env("KUBECONFIG", &config.kubeconfig)
            .env("RUST_LOG", "info")
            .arg(format!("--namespace={}", config.namespace))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg("--lease-seconds=5");
        match config.webhook_port {
            Some(port) => command.arg(format!("--webhook-addr=127.0.0.1:{port}")),
            None => command.arg("--no-webhook"),
        };
        if let Some(ns) = &config.watch_namespace {
            command.arg(format!("--watch-namespace={ns}"));
        }
        if let Some(ttl) = &config.pending_ttl {
            command.arg(format!("--pending-ttl={ttl}"));
        }
        if let Some(lease) = &config.lease_name {
            command.arg(format!("--lease-name={lease}"));
        }
        command.envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log)
            .unwrap_or_else(|e| panic!("{}: {e}", config.log.display()));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting the operator: {e}"));
        let mut operator = Operator {
            child: Some(child),
            metrics_port,
            log: config.log.clone(),
        };
        operator.wait_ready();
        operator
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "operator exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "operator not ready after 60 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET a path on the metrics port: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop it with SIGTERM (graceful: releases the Lease) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leave the process running after this handle is dropped (the shared operator).
    fn detach(mut self) -> u32 {
        self.child.take().map(|c| c.id()).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `install_gatehouse` leaves running: where the shared operator listens.
#[derive(Debug, Clone)]
pub struct SharedOperator {
    /// Webhook port.
    pub webhook_port: u16,
    /// Metrics/health port.
    pub metrics_port: u16,
    /// Log file.
    pub log: PathBuf,
}

impl SharedOperator {
    /// GET a path on its metrics port.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }
}

fn read_state(dir: &Path) -> Option<SharedOperator> {
    let text = std::fs::read_to_string(dir.join("operator.state")).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let webhook_port = parts.next()?.parse().ok()?;
    let metrics_port = parts.next()?.parse().ok()?;
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    alive.then(|| SharedOperator {
        webhook_port,
        metrics_port,
        log: dir.join("operator.log"),
    })
}

impl ControlPlane {
    /// The shared operator's state, if it runs (started by [`ControlPlane::install_gatehouse`]).
    pub fn shared_operator(&self) -> SharedOperator {
        self.install_gatehouse();
        read_state(&self.dir).unwrap_or_else(|| {
            panic!(
                "the shared operator is not running; see {}",
                self.dir.join("operator.log").display()
            )
        })
    }

    /// Start the shared operator as the chart's ServiceAccount. Called under the install lock,
    /// after `helm install` with `admission.url` pointing at `webhook_port`.
    pub(crate) fn start_shared_operator(&self, webhook_port: u16) {
        if read_state(&self.dir).is_some() {
            return;
        }
        let token = self
            .kubectl(User::Admin)
            .args([
                "create",
                "token",
                "gatehouse-operator",
                "-n",
                SYSTEM_NAMESPACE,
                "--duration=48h",
            ])
            .run();
        let kubeconfig = self.service_account_kubeconfig(
            SYSTEM_NAMESPACE,
            "gatehouse-operator",
            token.ok().trim(),
        );
        let config = OperatorConfig {
            kubeconfig,
            namespace: SYSTEM_NAMESPACE.to_owned(),
            watch_namespace: None,
            webhook_port: Some(webhook_port),
            pending_ttl: None,
            lease_name: None,
            env: Vec::new(),
            log: self.dir.join("operator.log"),
        };
        let operator = Operator::start(&config);
        let metrics_port = operator.metrics_port;
        let pid = operator.detach();
        // control-plane.sh down stops every DIR/*.pid daemon.
        std::fs::write(self.dir.join("operator.pid"), pid.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            self.dir.join("operator.state"),
            format!("{pid} {webhook_port} {metrics_port}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Directory of the control plane (logs, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Who a RoleBinding names.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A user name.
    User(&'a str),
    /// A group name.
    Group(&'a str),
}

impl Subject<'_> {
    fn json(self) -> serde_json::Value {
        match self {
            Self::User(name) => {
                serde_json::json!({"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"})
            }
            Self::Group(name) => {
                serde_json::json!({"kind": "Group", "name": name, "apiGroup": "rbac.authorization.k8s.io"})
            }
        }
    }
}

impl ControlPlane {
    /// `kubectl apply` `object` into `namespace` as `user`.
    pub fn apply_as(
        &self,
        user: User,
        namespace: &str,
        object: &serde_json::Value,
    ) -> crate::CmdOutput {
        self.kubectl(user)
            .args(["apply", "-n", namespace, "-f", "-"])
            .stdin(object.to_string())
            .run()
    }

    /// Bind the chart's ClusterRole `cluster_role` to `subject` in `namespace` (as admin).
    pub fn bind(&self, namespace: &str, cluster_role: &str, subject: Subject<'_>) {
        let name = crate::unique_name(cluster_role);
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [subject.json()],
        });
        self.apply_as(User::Admin, namespace, &binding).ok();
    }

    /// Make `subject` an approver of AccessPolicy `policy` only (the `approve` verb limited by
    /// resourceNames, as examples/rbac.yaml does), plus the read access approvers need.
    pub fn allow_approve(&self, namespace: &str, policy: &str, subject: Subject<'_>) {
        self.bind(namespace, "gatehouse-requester", subject);
        let name = crate::unique_name("approve");
        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["gatehouse.dev"], "resources": ["accesspolicies"], "verbs": ["approve"], "resourceNames": [policy]}],
        });
        self.apply_as(User::Admin, namespace, &role).ok();
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject.json()],
        });
        self.apply_as(User::Admin, namespace, &binding).ok();
    }
}

impl OperatorConfig {
    /// An extra operator authenticated as admin, with its own namespace `system` (CA Secrets,
    /// Lease, ConfigMaps), reconciling only `watch`, without a webhook.
    pub fn extra(cp: &ControlPlane, system: &str, watch: &str) -> Self {
        Self {
            kubeconfig: cp.kubeconfig(User::Admin),
            namespace: system.to_owned(),
            watch_namespace: Some(watch.to_owned()),
            webhook_port: None,
            pending_ttl: None,
            lease_name: None,
            env: Vec::new(),
            log: cp.dir().join(format!("operator-{system}.log")),
        }
    }
}

/// Path of Debian's libfaketime (`multithreaded` for programs with threads, like the operator),
/// to run a process with its clock shifted (`LD_PRELOAD` + `FAKETIME=+31m`).
pub fn libfaketime(multithreaded: bool) -> String {
    let name = if multithreaded {
        "libfaketimeMT.so.1"
    } else {
        "libfaketime.so.1"
    };
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|arch| arch.path().join("faketime").join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("libfaketime is not installed (apt-get install faketime; make deps does)")
        })
        .display()
        .to_string()
}
