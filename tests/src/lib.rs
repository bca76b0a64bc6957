//! Test harness for Gatehouse's end-to-end tests.
//!
//! Data comes from a real control plane that `tests/scripts/control-plane.sh run -- …` starts
//! (etcd + kube-apiserver on loopback, a kubeconfig per user) and announces through
//! `GATEHOUSE_CP_DIR`, `GATEHOUSE_KUBECTL` and `GATEHOUSE_HELM`. Tests get from here: typed kube
//! clients and real `kubectl`/`helm` commands acting as each user, a fresh namespace each, and
//! a once-per-control-plane `helm install` of the chart. Nothing here fakes the API server.
//!
//! There is no controller-manager: namespaces never finish deleting and nothing is garbage
//! collected, so tests never wait for deletion; the whole plane is thrown away after the run.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

pub mod command;
pub mod engineer;
pub mod gatehouse;
pub mod minio;
pub mod net;
pub mod proxy;
pub mod scenario;
pub mod ssh_client;
pub mod sshd;
pub mod users;

pub use command::{Cmd, CmdOutput};
pub use users::User;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// The running control plane, as announced by `control-plane.sh`.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    kubernetes_version: String,
}

/// Name of the Helm release the harness installs, and its namespace.
pub const RELEASE: &str = "gatehouse";
/// Namespace of the harness's Helm release.
pub const RELEASE_NAMESPACE: &str = "gatehouse-system";

/// The CRDs the chart installs.
pub const GATEHOUSE_CRDS: [&str; 3] = [
    "hostgroups.gatehouse.dev",
    "accesspolicies.gatehouse.dev",
    "accessrequests.gatehouse.dev",
];

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
static INSTALL: OnceLock<CmdOutput> = OnceLock::new();

/// The control plane this test process runs against.
///
/// Panics with instructions when the tests were not started through the harness: these tests
/// need a real API server and never fall back to a fake.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: end-to-end tests run against a real control plane; \
                     run them with `make test` (or tests/scripts/control-plane.sh run -- cargo test)"
                )
            })
        };
        ControlPlane {
            dir: PathBuf::from(var("GATEHOUSE_CP_DIR")),
            kubectl: PathBuf::from(var("GATEHOUSE_KUBECTL")),
            helm: PathBuf::from(var("GATEHOUSE_HELM")),
            kubernetes_version: var("GATEHOUSE_KUBERNETES_VERSION"),
        }
    })
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A name no other test in this run will pick: `<prefix>-<6 hex>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = nanos
        ^ std::process::id().rotate_left(16)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9);
    format!("{prefix}-{:06x}", mix & 0xff_ffff)
}

impl ControlPlane {
    /// Kubernetes version of the running apiserver (and kubectl), like `v1.36.3`.
    pub fn kubernetes_version(&self) -> &str {
        &self.kubernetes_version
    }

    /// Path of `user`'s kubeconfig.
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        self.dir
            .join("kubeconfigs")
            .join(format!("{}.kubeconfig", user.kubeconfig_name()))
    }

    /// A typed client authenticated as `user`.
    pub async fn client(&self, user: User) -> Client {
        self.client_from(&self.kubeconfig(user)).await
    }

    /// A typed client from any kubeconfig file (for example a ServiceAccount's).
    pub async fn client_from(&self, kubeconfig: &Path) -> Client {
        let kubeconfig = Kubeconfig::read_from(kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
        Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    /// Write a kubeconfig that authenticates with a ServiceAccount token (from
    /// `kubectl create token`) and return its path.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str, token: &str) -> PathBuf {
        let server = std::env::var("GATEHOUSE_KUBE_SERVER")
            .unwrap_or_else(|_| panic!("GATEHOUSE_KUBE_SERVER is not set"));
        let ca = self.dir.join("pki/ca.crt");
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "gatehouse-test", "cluster": {"server": server, "certificate-authority": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "gatehouse-test", "user": user, "namespace": namespace}}],
            "current-context": "sa",
        });
        let path = self
            .dir
            .join("kubeconfigs")
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, config.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// `kubectl` acting as `user`.
    pub fn kubectl(&self, user: User) -> Cmd {
        self.kubectl_with(&self.kubeconfig(user))
    }

    /// `kubectl` with any kubeconfig file.
    pub fn kubectl_with(&self, kubeconfig: &Path) -> Cmd {
        // A discovery cache per control plane: ~/.kube/cache could hold another run's view.
        Cmd::new(&self.kubectl)
            .args([Path::new("--kubeconfig"), kubeconfig])
            .args([Path::new("--cache-dir"), &self.dir.join("kubectl-cache")])
    }

    /// `helm` acting as the cluster admin.
    pub fn helm(&self) -> Cmd {
        Cmd::new(&self.helm).args([Path::new("--kubeconfig"), &self.kubeconfig(User::Admin)])
    }

    /// Create a fresh namespace for one test and return its name. Never deleted: there is no
    /// namespace controller, and the control plane is discarded after the run.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(self.client(User::Admin).await);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("gatehouse.dev/test".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// `helm install` the chart once per control plane (across test processes, under a file
    /// lock) with its admission webhooks pointing at the shared operator, start that operator
    /// (see [`gatehouse`]), and return what helm printed when this process installed it, or
    /// `helm status`.
    pub fn install_gatehouse(&self) -> &'static CmdOutput {
        INSTALL.get_or_init(|| {
            let lock_path = self.dir.join("helm-install.lock");
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
                .args(["status", RELEASE, "-n", RELEASE_NAMESPACE])
                .run();
            // The webhook port is chosen once per plane: the chart's webhook URL points at it.
            let port_file = self.dir.join("operator.webhook-port");
            let webhook_port: u16 = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| {
                    let port = gatehouse::free_port();
                    std::fs::write(&port_file, port.to_string()).unwrap_or_else(|e| panic!("{e}"));
                    port
                });
            let outcome = if status.success {
                status
            } else {
                let chart = repo_root().join("charts/gatehouse");
                let install = self
                    .helm()
                    .args(["install", RELEASE])
                    .args([&chart])
                    .args(["-n", RELEASE_NAMESPACE, "--create-namespace"])
                    .args([
                        "--set",
                        &format!("admission.url=https://127.0.0.1:{webhook_port}"),
                    ])
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
}
