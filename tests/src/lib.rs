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
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

pub mod engineer;
pub mod gatehouse;
pub mod minio;
pub mod proxy;
pub mod scenario;
pub mod sshd;
pub mod users;

pub use users::User;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// Output of a finished command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// What was run, for messages.
    pub command: String,
    /// Whether it exited 0.
    pub success: bool,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CmdOutput {
    /// Panic with everything the command printed unless it succeeded; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.success,
            "`{}` failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Panic unless the command failed and its stderr contains every one of `needles`.
    #[track_caller]
    pub fn fails_with(&self, needles: &[&str]) {
        assert!(
            !self.success,
            "`{}` succeeded but should have failed\nstdout:\n{}",
            self.command, self.stdout
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "`{}` failed, but its error lacks {needle:?}\nstderr:\n{}",
                self.command,
                self.stderr
            );
        }
    }
}

/// A command builder for `kubectl`/`helm` that captures output and can feed stdin.
#[derive(Debug)]
pub struct Cmd {
    command: Command,
    stdin: Option<String>,
}

impl Cmd {
    /// A command running `program`.
    pub fn new(program: &Path) -> Self {
        Self {
            command: Command::new(program),
            stdin: None,
        }
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Feed `input` on standard input.
    pub fn stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Run to completion.
    pub fn run(mut self) -> CmdOutput {
        let program = self.command.get_program().to_string_lossy().into_owned();
        let shown_args: Vec<String> = self
            .command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| !a.ends_with(".kubeconfig"))
            .collect();
        let command = format!(
            "{} {}",
            Path::new(&program)
                .file_name()
                .map_or(program.clone(), |f| f.to_string_lossy().into_owned()),
            shown_args.join(" ")
        );
        self.command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        if let (Some(input), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .unwrap_or_else(|e| panic!("writing stdin of `{command}`: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for `{command}`: {e}"));
        CmdOutput {
            command,
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

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
