//! The running control plane, as `tests/scripts/control-plane.sh` announces it, and how the
//! harness acts on it as each user.
//!
//! In: the plane's variables (`GATEHOUSE_CP_DIR`, `GATEHOUSE_KUBE_SERVER`, `GATEHOUSE_KUBECTL`,
//! `GATEHOUSE_HELM`, `GATEHOUSE_MINIO`, `GATEHOUSE_KUBERNETES_VERSION`), from this process's
//! environment (`control-plane.sh run -- cargo test`) or from the plane's `env` file (`make up`),
//! and the kubeconfigs it wrote per user. Out: typed kube clients and real `kubectl`/`helm`
//! commands acting as a [`User`] or a ServiceAccount, fresh namespaces, RBAC bindings.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{binaries::Logs, command::Cmd, command::CmdOutput, unique_name, users::User};

/// The running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    kubectl: PathBuf,
    helm: PathBuf,
    minio: Option<PathBuf>,
    kubernetes_version: String,
    logs: Logs,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane this test process runs against, from its environment.
///
/// Panics with instructions when the tests were not started through the harness: these tests
/// need a real API server and never fall back to a fake.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| ControlPlane::from_vars(|name| std::env::var(name).ok()))
}

impl ControlPlane {
    /// The plane whose `env` file (written by `control-plane.sh up`) is in `dir`.
    pub fn from_env_file(dir: &Path) -> Self {
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self::from_vars(|name| vars.get(name).cloned())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let required = |name: &str| {
            var(name).unwrap_or_else(|| {
                panic!(
                    "{name} is not set: end-to-end tests run against a real control plane; \
                     run them with `make test` (or tests/scripts/control-plane.sh run -- cargo test)"
                )
            })
        };
        Self {
            dir: PathBuf::from(required("GATEHOUSE_CP_DIR")),
            server: required("GATEHOUSE_KUBE_SERVER"),
            kubectl: PathBuf::from(required("GATEHOUSE_KUBECTL")),
            helm: PathBuf::from(required("GATEHOUSE_HELM")),
            minio: var("GATEHOUSE_MINIO").map(PathBuf::from),
            kubernetes_version: required("GATEHOUSE_KUBERNETES_VERSION"),
            logs: Logs::default(),
        }
    }

    /// The same plane, with the Gatehouse processes it starts logging as `logs`.
    pub fn with_logs(mut self, logs: Logs) -> Self {
        self.logs = logs;
        self
    }

    /// How the Gatehouse processes started for this plane log.
    pub fn logs(&self) -> Logs {
        self.logs
    }

    /// Directory of the control plane (logs, kubeconfigs, pid files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The `kubectl` binary.
    pub fn kubectl_binary(&self) -> &Path {
        &self.kubectl
    }

    /// The MinIO binary `build-tools.sh` built, if the plane names one.
    pub fn minio_binary(&self) -> PathBuf {
        let path = self
            .minio
            .clone()
            .expect("GATEHOUSE_MINIO is not set: run under control-plane.sh");
        assert!(
            path.is_file(),
            "{} missing: run tests/scripts/build-tools.sh minio",
            path.display()
        );
        path
    }

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
            .expect("a usable kubeconfig");
        Client::try_from(config).expect("a kube client")
    }

    /// Write a kubeconfig that authenticates with a ServiceAccount token (from
    /// `kubectl create token`) and return its path. The file is replaced atomically: tests
    /// start proxies in parallel, and a process reading it must never see it half-written.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str, token: &str) -> PathBuf {
        let ca = self.dir.join("pki/ca.crt");
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "gatehouse-test", "cluster": {"server": self.server, "certificate-authority": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "gatehouse-test", "user": user, "namespace": namespace}}],
            "current-context": "sa",
        });
        let path = self
            .dir
            .join("kubeconfigs")
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        let partial = path.with_extension(unique_name(&std::process::id().to_string()));
        std::fs::write(&partial, config.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", partial.display()));
        std::fs::rename(&partial, &path).unwrap_or_else(|e| {
            panic!("renaming {} to {}: {e}", partial.display(), path.display())
        });
        path
    }

    /// A kubeconfig for ServiceAccount `namespace/name` with a fresh 48-hour token.
    pub fn service_account_login(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self
            .kubectl(User::Admin)
            .args(["create", "token", name, "-n", namespace, "--duration=48h"])
            .run();
        self.service_account_kubeconfig(namespace, name, token.ok().trim())
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

    /// `kubectl apply` `object` into `namespace` as `user`.
    pub fn apply_as(&self, user: User, namespace: &str, object: &serde_json::Value) -> CmdOutput {
        self.kubectl(user)
            .args(["apply", "-n", namespace, "-f", "-"])
            .stdin(object.to_string())
            .run()
    }

    /// Bind the chart's ClusterRole `cluster_role` to `subject` in `namespace` (as admin).
    pub fn bind(&self, namespace: &str, cluster_role: &str, subject: Subject<'_>) {
        let name = unique_name(cluster_role);
        let binding = role_binding(&name, "ClusterRole", cluster_role, subject);
        self.apply_as(User::Admin, namespace, &binding).ok();
    }

    /// Make `subject` an approver of AccessPolicy `policy` only (the `approve` verb limited by
    /// resourceNames, as examples/rbac.yaml does), plus the read access approvers need.
    pub fn allow_approve(&self, namespace: &str, policy: &str, subject: Subject<'_>) {
        self.bind(namespace, "gatehouse-requester", subject);
        let name = unique_name("approve");
        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["gatehouse.dev"], "resources": ["accesspolicies"], "verbs": ["approve"], "resourceNames": [policy]}],
        });
        self.apply_as(User::Admin, namespace, &role).ok();
        let binding = role_binding(&name, "Role", &name, subject);
        self.apply_as(User::Admin, namespace, &binding).ok();
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

/// A RoleBinding `name` of `(kind, role)` to `subject`.
fn role_binding(name: &str, kind: &str, role: &str, subject: Subject<'_>) -> serde_json::Value {
    let (subject_kind, subject_name) = match subject {
        Subject::User(name) => ("User", name),
        Subject::Group(name) => ("Group", name),
    };
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": subject_kind, "name": subject_name, "apiGroup": "rbac.authorization.k8s.io"}],
    })
}
