//! The audit API (`gatehouse-audit-api`, `audit.gatehouse.dev/v1alpha1`) on the test plane,
//! reached through the real aggregation layer of the plane's kube-apiserver.
//!
//! In: the shared install ([`crate::install`]), upgraded once per plane with
//! `auditApi.enabled=true` so the chart's own objects are what runs: its ServiceAccount and RBAC,
//! its serving certificate (Secret `gatehouse-audit-api-tls`), its Service and its APIService
//! (caBundle); and the built `gatehouse-audit-api`. Out: one audit API process per plane, run as
//! the chart's ServiceAccount with the chart's certificate, listening on this machine's
//! non-loopback IPv4 address (EndpointSlice validation refuses 127/8), an EndpointSlice for the
//! chart's Service naming that address (there is no endpoint controller: the harness is it; the
//! API server routes to endpoints, `--enable-aggregator-routing`), detached with
//! `audit-api.pid`/`audit-api.state` in the plane directory (`control-plane.sh down` stops it),
//! ready once the APIService is Available and discovery answers. It reads the local store
//! [`ControlPlane::audit_store`]: proxies that should be audited store recordings there.

use std::{
    fs::OpenOptions,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{
    ControlPlane, RELEASE, SYSTEM_NAMESPACE,
    binaries::audit_api_binary,
    command::{Cmd, CmdOutput},
    install::process_runs,
    net::{LOOPBACK, http_get},
    process::{Process, Ready, Spec},
    repo_root,
    users::User,
};

/// The chart's ServiceAccount for the audit API.
pub const AUDIT_API_SERVICE_ACCOUNT: &str = "gatehouse-audit-api";
/// The chart's Service the APIService points at.
pub const AUDIT_API_SERVICE: &str = "gatehouse-audit-api";
/// The chart's Secret with the serving certificate (`ca.crt`, `tls.crt`, `tls.key`).
pub const AUDIT_API_TLS_SECRET: &str = "gatehouse-audit-api-tls";
/// The chart's APIService.
pub const API_SERVICE: &str = "v1alpha1.audit.gatehouse.dev";
/// The group/version's discovery path.
pub const GROUP_VERSION_PATH: &str = "/apis/audit.gatehouse.dev/v1alpha1";
/// The EndpointSlice the harness writes for the chart's Service.
const ENDPOINT_SLICE: &str = "gatehouse-audit-api-harness";
/// How long the aggregator may take to find the server available.
const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The plane's audit API, or why it did not start (so later tests fail at once, the same way).
static AUDIT_API: OnceLock<Result<SharedAuditApi, String>> = OnceLock::new();

/// The plane's audit API.
#[derive(Debug, Clone)]
pub struct SharedAuditApi {
    /// Where it serves HTTPS (this machine's non-loopback address).
    pub address: SocketAddr,
    /// Its metrics/health port (loopback).
    pub metrics_port: u16,
    /// Its log.
    pub log: PathBuf,
    /// The CA of its serving certificate (the APIService's caBundle), as a file.
    pub serving_ca: PathBuf,
}

impl SharedAuditApi {
    /// The DNS name its certificate is for (what the API server checks).
    pub fn server_name() -> String {
        format!("{AUDIT_API_SERVICE}.{SYSTEM_NAMESPACE}.svc")
    }

    /// `curl` of `path` straight at the server, bypassing the API server: the serving CA
    /// trusted, the Service name resolved to its address, status code on the last line.
    pub fn curl(&self, path: &str) -> Cmd {
        let name = Self::server_name();
        Cmd::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(&self.serving_ca)
            .arg("--resolve")
            .arg(format!(
                "{name}:{}:{}",
                self.address.port(),
                self.address.ip()
            ))
            .arg(format!("https://{name}:{}{path}", self.address.port()))
    }

    /// GET a path on its metrics port.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }
}

/// This machine's IPv4 address towards the outside (the kernel's route lookup for a public
/// address: a UDP `connect` sends nothing). EndpointSlices may not name loopback addresses.
pub fn host_address() -> Ipv4Addr {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a UDP socket");
    let address = socket
        .connect((Ipv4Addr::new(1, 0, 0, 0), 9))
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .unwrap_or_else(|e| panic!("no route to the outside to find this machine's address: {e}"));
    match address {
        IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local() => v4,
        other => panic!("this machine's address {other} cannot be an EndpointSlice address"),
    }
}

/// The running audit API of the plane in `dir`, from its state file, if it runs.
fn read_state(dir: &Path) -> Option<SharedAuditApi> {
    let text = std::fs::read_to_string(dir.join("audit-api.state")).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?;
    let address = parts.next()?.parse().ok()?;
    let metrics_port = parts.next()?.parse().ok()?;
    process_runs(pid).then(|| SharedAuditApi {
        address,
        metrics_port,
        log: dir.join("audit-api.log"),
        serving_ca: dir.join("audit-api/ca.crt"),
    })
}

impl ControlPlane {
    /// The local store the plane's audit API reads (recordings and `audit/` batches).
    pub fn audit_store(&self) -> PathBuf {
        self.dir().join("audit-store")
    }

    /// The plane's audit API, started once (across test processes, under a file lock): the
    /// shared release upgraded with the audit API on, the server started as its ServiceAccount
    /// with its certificate, its EndpointSlice, and the APIService Available. When it does not
    /// become available, the upgrade is undone (no broken APIService is left to every later
    /// test's discovery) and this panics with the server's log and the APIService's condition.
    pub fn audit_api(&self) -> SharedAuditApi {
        let started = AUDIT_API.get_or_init(|| {
            self.install_gatehouse();
            let lock_path = self.dir().join("audit-api.lock");
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
            lock.lock()
                .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
            let api = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_state(self.dir()).unwrap_or_else(|| self.start_audit_api())
            }))
            .map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the audit API did not start".to_owned())
            });
            drop(lock);
            api
        });
        match started {
            Ok(api) => api.clone(),
            Err(why) => panic!("{why}"),
        }
    }

    /// `helm upgrade` of the shared release, keeping its values, with `sets` on top.
    pub fn upgrade_gatehouse(&self, sets: &[&str]) -> CmdOutput {
        let mut helm = self
            .helm()
            .args(["upgrade", RELEASE])
            .arg(repo_root().join("charts/gatehouse"))
            .args(["-n", SYSTEM_NAMESPACE, "--reuse-values"]);
        for set in sets {
            helm = helm.args(["--set", set]);
        }
        helm.run()
    }

    fn start_audit_api(&self) -> SharedAuditApi {
        // The chart refuses the audit API on an emptyDir (the proxy's alone): name a claim. No
        // pod runs here; the processes use the plane's directory as that volume.
        self.upgrade_gatehouse(&[
            "auditApi.enabled=true",
            "recording.storage.volume.existingClaim=gatehouse-recordings",
        ])
        .ok();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.start_audit_api_process()
        }));
        match result {
            Ok(api) => api,
            Err(panic) => {
                // Fail closed for the rest of the run too: an APIService nobody serves would
                // make every later kubectl's discovery complain.
                let undo = self.upgrade_gatehouse(&[
                    "auditApi.enabled=false",
                    "recording.storage.volume.existingClaim=",
                ]);
                self.kubectl(User::Admin)
                    .args([
                        "delete",
                        "endpointslice",
                        ENDPOINT_SLICE,
                        "-n",
                        SYSTEM_NAMESPACE,
                    ])
                    .args(["--ignore-not-found"])
                    .run();
                if !undo.success {
                    eprintln!("undoing the audit API upgrade failed: {}", undo.stderr);
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// The chart's serving certificate file `key` of Secret [`AUDIT_API_TLS_SECRET`], decoded.
    pub fn audit_api_tls(&self, key: &str) -> String {
        self.kubectl(User::Admin)
            .args([
                "get",
                "secret",
                AUDIT_API_TLS_SECRET,
                "-n",
                SYSTEM_NAMESPACE,
            ])
            .arg(format!(
                "-o=go-template={{{{index .data \"{key}\" | base64decode}}}}"
            ))
            .run()
            .ok()
            .to_owned()
    }

    fn start_audit_api_process(&self) -> SharedAuditApi {
        let tls = self.dir().join("audit-api");
        std::fs::create_dir_all(&tls).unwrap_or_else(|e| panic!("{}: {e}", tls.display()));
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            let file = tls.join(key);
            std::fs::write(&file, self.audit_api_tls(key))
                .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        }
        std::fs::set_permissions(
            tls.join("tls.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap_or_else(|e| panic!("chmod tls.key: {e}"));
        let store = self.audit_store();
        std::fs::create_dir_all(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
        let kubeconfig = self.service_account_login(SYSTEM_NAMESPACE, AUDIT_API_SERVICE_ACCOUNT);
        let host = host_address();
        let log = self.dir().join("audit-api.log");
        let (process, [port, metrics_port]) = Process::start_on_free_ports(|[port, metrics]| {
            let cmd = Cmd::new(audit_api_binary())
                .env("KUBECONFIG", &kubeconfig)
                .env("POD_NAME", "audit-api-under-test")
                .env("RUST_LOG", "info")
                .arg(format!("--listen={host}:{port}"))
                .arg(format!("--tls-cert-file={}", tls.join("tls.crt").display()))
                .arg(format!(
                    "--tls-private-key-file={}",
                    tls.join("tls.key").display()
                ))
                .arg("--storage=local")
                .arg(format!("--storage-dir={}", store.display()))
                .arg(format!("--metrics-addr={LOOPBACK}:{metrics}"))
                .arg("--refresh=1s");
            let spec = Spec::new("the audit API", cmd, &log).daemon();
            (
                spec,
                Ready::http(metrics, "/readyz").and(Ready::tcp(SocketAddr::from((host, port)))),
            )
        });
        let address = SocketAddr::from((host, port));
        self.apply_as(User::Admin, SYSTEM_NAMESPACE, &endpoint_slice(address))
            .ok();
        if let Err(why) = self.await_api_service_available() {
            panic!(
                "the audit API did not become available through the API server: {why}\n\
                 audit API log:\n{}",
                process.log_tail()
            );
        }
        let pid = process.detach(&self.dir().join("audit-api.pid"));
        let state = self.dir().join("audit-api.state");
        std::fs::write(&state, format!("{pid} {address} {metrics_port}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", state.display()));
        SharedAuditApi {
            address,
            metrics_port,
            log,
            serving_ca: tls.join("ca.crt"),
        }
    }

    /// The APIService's `Available` condition: (status, reason, message).
    pub fn api_service_available(&self) -> (String, String, String) {
        let out = self
            .kubectl(User::Admin)
            .args(["get", "apiservice", API_SERVICE, "-o"])
            .arg(
                r#"jsonpath={range .status.conditions[?(@.type=="Available")]}{.status}{"\n"}{.reason}{"\n"}{.message}{end}"#,
            )
            .run();
        let mut lines = out.stdout.lines().map(str::to_owned);
        (
            lines.next().unwrap_or_default(),
            lines.next().unwrap_or_default(),
            lines.next().unwrap_or_else(|| out.stderr.clone()),
        )
    }

    /// Wait until the APIService is Available and its discovery document answers through the
    /// API server; Err with the last condition when it does not within the time limit.
    fn await_api_service_available(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let condition = self.api_service_available();
            if condition.0 == "True" {
                let discovery = self
                    .kubectl(User::Admin)
                    .args(["get", "--raw", GROUP_VERSION_PATH])
                    .run();
                if discovery.success {
                    return Ok(());
                }
            }
            if start.elapsed() > AVAILABLE_TIMEOUT {
                return Err(format!(
                    "APIService {API_SERVICE} Available={} ({}: {}) after {AVAILABLE_TIMEOUT:?}",
                    condition.0, condition.1, condition.2
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The EndpointSlice of the chart's Service: the one endpoint, at `address`. The aggregator
/// reads slices labelled with the Service's name, on the port named like the Service's port.
fn endpoint_slice(address: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": ENDPOINT_SLICE,
            "labels": {
                "kubernetes.io/service-name": AUDIT_API_SERVICE,
                "endpointslice.kubernetes.io/managed-by": "gatehouse-tests",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": address.port(), "protocol": "TCP"}],
    })
}
