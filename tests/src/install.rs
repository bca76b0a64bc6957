//! Gatehouse installed on the control plane: the chart, once per plane, and the shared operator
//! its admission webhooks call.
//!
//! In: `charts/gatehouse` (installed with the plane's `helm` as admin, `admission.url` pointing
//! at a loopback port chosen once per plane) and the built operator. Out: a release
//! [`RELEASE`] in [`SYSTEM_NAMESPACE`], an operator process authenticated as the chart's own
//! ServiceAccount (so the chart's RBAC is what runs), detached with `operator.pid` and
//! `operator.state` in the plane directory (`control-plane.sh down` stops it), and what that
//! operator publishes there: the `gatehouse-ssh` ConfigMap and the CA Secrets. A file lock makes
//! every test binary (and `make up`) share one install and one operator.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use gatehouse_crds::contract::{published, secrets};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use crate::{
    ControlPlane,
    command::{Cmd, CmdOutput},
    net::{LOOPBACK, free_port, http_get},
    operator::{Operator, OperatorConfig},
    repo_root,
    users::User,
    wait_for,
};

/// Name of the Helm release the harness installs.
pub const RELEASE: &str = "gatehouse";
/// Namespace of the release: the operator's and the proxy's own namespace.
pub const SYSTEM_NAMESPACE: &str = "gatehouse-system";
/// The chart's ServiceAccount for the operator.
pub const OPERATOR_SERVICE_ACCOUNT: &str = "gatehouse-operator";
/// The chart's ServiceAccount for the proxy.
pub const PROXY_SERVICE_ACCOUNT: &str = "gatehouse-proxy";

/// The CRDs the chart installs.
pub const GATEHOUSE_CRDS: [&str; 3] = [
    "hostgroups.gatehouse.dev",
    "accesspolicies.gatehouse.dev",
    "accessrequests.gatehouse.dev",
];

static INSTALL: OnceLock<CmdOutput> = OnceLock::new();

/// Where the shared operator listens (started by [`ControlPlane::install_gatehouse`]).
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

/// Whether process `pid` runs (a zombie its parent has yet to reap does not).
pub(crate) fn process_runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Wait (up to 10 s) until process `pid` is gone.
fn wait_until_gone(pid: &str) {
    let start = std::time::Instant::now();
    while process_runs(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "process {pid} still runs 10 s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shared operator of the plane in `dir`, if it runs.
fn read_state(dir: &Path) -> Option<SharedOperator> {
    let text = std::fs::read_to_string(dir.join("operator.state")).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let webhook_port = parts.next()?.parse().ok()?;
    let metrics_port = parts.next()?.parse().ok()?;
    let alive = process_runs(&pid.to_string());
    alive.then(|| SharedOperator {
        webhook_port,
        metrics_port,
        log: dir.join("operator.log"),
    })
}

impl ControlPlane {
    /// `helm install` the chart once per control plane (across test processes, under a file
    /// lock) with its admission webhooks pointing at the shared operator, start that operator,
    /// and return what helm printed when this process installed it, or `helm status`.
    pub fn install_gatehouse(&self) -> &'static CmdOutput {
        INSTALL.get_or_init(|| {
            let lock_path = self.dir().join("helm-install.lock");
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
            lock.lock()
                .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
            let status = self
                .helm()
                .args(["status", RELEASE, "-n", SYSTEM_NAMESPACE])
                .run();
            // The webhook port is chosen once per plane: the chart's webhook URL points at it.
            let port_file = self.dir().join("operator.webhook-port");
            let webhook_port: u16 = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| {
                    let port = free_port();
                    std::fs::write(&port_file, port.to_string())
                        .unwrap_or_else(|e| panic!("writing {}: {e}", port_file.display()));
                    port
                });
            let outcome = if status.success {
                status
            } else {
                let install = self
                    .helm()
                    .args(["install", RELEASE])
                    .arg(repo_root().join("charts/gatehouse"))
                    .args(["-n", SYSTEM_NAMESPACE, "--create-namespace"])
                    .arg("--set")
                    .arg(format!("admission.url=https://{LOOPBACK}:{webhook_port}"))
                    .run();
                install.ok();
                self.kubectl(User::Admin)
                    .args(["wait", "--for=condition=Established", "--timeout=30s"])
                    .args(GATEHOUSE_CRDS.iter().map(|crd| format!("crd/{crd}")))
                    .run()
                    .ok();
                install
            };
            // With the webhooks installed (failurePolicy Fail), AccessRequests need the operator.
            self.start_shared_operator(webhook_port);
            // The lock is released when `lock` is dropped here.
            drop(lock);
            outcome
        })
    }

    /// Start the shared operator as the chart's ServiceAccount, detached. Called under the
    /// install lock, after `helm install` with `admission.url` pointing at `webhook_port`.
    fn start_shared_operator(&self, webhook_port: u16) {
        if read_state(self.dir()).is_some() {
            return;
        }
        let config = OperatorConfig {
            kubeconfig: self.service_account_login(SYSTEM_NAMESPACE, OPERATOR_SERVICE_ACCOUNT),
            namespace: SYSTEM_NAMESPACE.to_owned(),
            watch_namespace: None,
            webhook_port: Some(webhook_port),
            pending_ttl: None,
            lease_name: None,
            // Its audit events go durably where the audit API reads (tests/src/audit_api.rs):
            // a request's story there holds the operator's half too.
            env: vec![
                ("GATEHOUSE_AUDIT_STORE".to_owned(), "local".to_owned()),
                (
                    "GATEHOUSE_STORAGE_DIR".to_owned(),
                    self.audit_store().display().to_string(),
                ),
                (
                    "GATEHOUSE_AUDIT_SPOOL_DIR".to_owned(),
                    self.dir()
                        .join("operator-audit-spool")
                        .display()
                        .to_string(),
                ),
                (
                    "POD_NAME".to_owned(),
                    "gatehouse-operator-shared".to_owned(),
                ),
            ],
            log: self.dir().join("operator.log"),
            logs: self.logs(),
            webhook_client_ca: Some(self.webhook_client_ca()),
        };
        let operator = Operator::start_daemon(&config);
        let metrics_port = operator.metrics_port;
        // control-plane.sh down stops every DIR/*.pid daemon.
        let pid = operator.detach(&self.dir().join("operator.pid"));
        let state = self.dir().join("operator.state");
        std::fs::write(&state, format!("{pid} {webhook_port} {metrics_port}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", state.display()));
    }

    /// The CA of the client certificate the API server presents to admission webhooks
    /// (`control-plane.sh` writes its AdmissionConfiguration).
    pub fn webhook_client_ca(&self) -> PathBuf {
        self.dir().join("pki/webhook-client-ca.crt")
    }

    /// Stop the shared operator with SIGKILL, as a crashed or scaled-to-zero operator: its
    /// webhook and its reconcilers are gone until [`Self::restart_shared_operator`].
    pub fn kill_shared_operator(&self) {
        self.install_gatehouse();
        let pid = std::fs::read_to_string(self.dir().join("operator.pid")).unwrap_or_default();
        let pid = pid.trim();
        Cmd::new("kill").args(["-KILL", pid]).run().ok();
        wait_until_gone(pid);
    }

    /// Start the shared operator again (same webhook port) and wait until it is ready.
    pub fn restart_shared_operator(&self) {
        let port = std::fs::read_to_string(self.dir().join("operator.webhook-port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no operator.webhook-port in {}", self.dir().display()));
        self.start_shared_operator(port);
    }

    /// The shared operator (installing Gatehouse first if this process has not).
    pub fn shared_operator(&self) -> SharedOperator {
        self.install_gatehouse();
        read_state(self.dir()).unwrap_or_else(|| {
            panic!(
                "the shared operator is not running; see {}",
                self.dir().join("operator.log").display()
            )
        })
    }

    /// Wait (up to 15 s) until the shared operator publishes `key` in the `gatehouse-ssh`
    /// ConfigMap, and return its value.
    pub async fn published(&self, key: &str) -> String {
        let config_maps: Api<ConfigMap> =
            Api::namespaced(self.client(User::Admin).await, SYSTEM_NAMESPACE);
        let what = format!("{} to publish {key}", published::SSH_CONFIGMAP);
        wait_for(Duration::from_secs(15), &what, || async {
            config_maps
                .get(published::SSH_CONFIGMAP)
                .await
                .ok()?
                .data?
                .get(key)
                .cloned()
        })
        .await
    }

    /// Read CA Secret `secret` (like [`secrets::USER_CA`]) as admin and write its OpenSSH private
    /// key to `dir/<secret>` (mode 0600, as ssh-keygen wants); returns the file.
    pub async fn ca_private_key(&self, secret: &str, dir: &Path) -> PathBuf {
        let api: Api<Secret> = Api::namespaced(self.client(User::Admin).await, SYSTEM_NAMESPACE);
        let key = api
            .get(secret)
            .await
            .unwrap_or_else(|e| panic!("reading Secret {SYSTEM_NAMESPACE}/{secret}: {e}"))
            .data
            .unwrap_or_default()
            .remove(secrets::CA_PRIVATE_KEY)
            .unwrap_or_else(|| panic!("Secret {secret} has no {}", secrets::CA_PRIVATE_KEY));
        let file = dir.join(secret);
        std::fs::write(&file, key.0).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", file.display()));
        file
    }
}
