//! The chart on a real node: what `tests/tests/real_node.rs` installs, looks at and breaks.
//!
//! In: the node `tests/scripts/node.sh run DIR -- …` started (kubelet, containerd, CNI,
//! kube-proxy, controllers) and announced in the environment (`GATEHOUSE_NODE_NAME`,
//! `GATEHOUSE_NODE_IP`, `GATEHOUSE_NODE_VALUES`: chart values naming the images built here,
//! `GATEHOUSE_CRICTL`), on the plane of [`crate::control_plane`]. Out: `helm
//! install/upgrade/uninstall` of the chart with those values, the chart's pods as the API
//! server sees them, the Lease holder, the CA Secrets' fingerprints, and what the containers'
//! processes really run as (`/proc/PID/status` and mount table, found through CRI).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use gatehouse_crds::contract::secrets;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::Value;

use crate::{
    ControlPlane, RELEASE, SYSTEM_NAMESPACE, User,
    command::{Cmd, CmdOutput},
    repo_root, sha256_hex, wait_for,
};

/// The Lease the operator replicas elect a leader with.
pub const OPERATOR_LEASE: &str = "gatehouse-operator";

/// The real node, as `node.sh` announces it.
#[derive(Debug, Clone)]
pub struct Node {
    /// The Node object's name.
    pub name: String,
    /// The node's address (on this machine's loopback device): NodePorts, and what pods reach
    /// this machine at.
    pub ip: Ipv4Addr,
    /// Chart values for the images built on this machine.
    pub values: PathBuf,
    crictl: Vec<String>,
}

/// One of the chart's pods, as the API server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Name.
    pub name: String,
    /// Pod address, once it has one.
    pub ip: Option<Ipv4Addr>,
    /// `status.phase`.
    pub phase: String,
    /// Condition `Ready` is True.
    pub ready: bool,
    /// The node it runs on.
    pub node: String,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
}

/// One container of the chart, as its process runs on this machine.
#[derive(Debug, Clone)]
pub struct ContainerProcess {
    /// The container's name (`operator`, `proxy`).
    pub name: String,
    /// Its main process on this machine.
    pub pid: u32,
    /// `/proc/PID/status`.
    pub status: String,
    /// Mount options of its root file system (from `/proc/PID/mountinfo`).
    pub root_options: String,
}

/// Why a container's process is not locked down the way the chart's securityContext says
/// (uid/gid 65532, no capabilities, no-new-privileges, a seccomp filter, read-only root).
/// Empty: it is. Pure: `status` is `/proc/PID/status`, `root_options` the root mount's options.
pub fn lockdown_faults(status: &str, root_options: &str) -> Vec<String> {
    let field = |name: &str| -> Vec<&str> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|rest| rest.split_whitespace().collect())
            .unwrap_or_default()
    };
    let mut faults = Vec::new();
    for (name, want) in [("Uid", "65532"), ("Gid", "65532")] {
        let ids = field(name);
        if ids.len() != 4 || ids.iter().any(|id| *id != want) {
            faults.push(format!("{name} is {ids:?}, want {want} four times"));
        }
    }
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        let value = field(cap);
        if value.len() != 1 || value[0].chars().any(|c| c != '0') {
            faults.push(format!("{cap} is {value:?}, want none"));
        }
    }
    if field("NoNewPrivs") != ["1"] {
        faults.push(format!("NoNewPrivs is {:?}, want 1", field("NoNewPrivs")));
    }
    if field("Seccomp") != ["2"] {
        faults.push(format!(
            "Seccomp is {:?}, want 2 (a filter)",
            field("Seccomp")
        ));
    }
    if !root_options.split(',').any(|o| o == "ro") {
        faults.push(format!("the root file system is mounted {root_options}"));
    }
    faults
}

impl Node {
    /// The node this test process runs against, from its environment; panics with how to start
    /// one (`make e2e-node`) when it is not there.
    pub fn from_env() -> Node {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: this test runs on a real node; run it with `make e2e-node` \
                     (tests/scripts/node.sh run DIR -- cargo test -p gatehouse-tests --test real_node)"
                )
            })
        };
        let ip = var("GATEHOUSE_NODE_IP");
        Node {
            name: var("GATEHOUSE_NODE_NAME"),
            ip: ip
                .parse()
                .unwrap_or_else(|e| panic!("GATEHOUSE_NODE_IP={ip}: {e}")),
            values: PathBuf::from(var("GATEHOUSE_NODE_VALUES")),
            crictl: var("GATEHOUSE_CRICTL")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// `helm ACTION gatehouse charts/gatehouse` (`install` or `upgrade`) in
    /// [`SYSTEM_NAMESPACE`] with the node's image values and `sets` (`--set` arguments), waiting
    /// up to 3 minutes for every replica to be ready; panics with the pods and their Events
    /// when it fails.
    pub fn helm(&self, cp: &ControlPlane, action: &str, sets: &[String]) -> CmdOutput {
        let mut cmd = cp
            .helm()
            .args([action, RELEASE])
            .arg(repo_root().join("charts/gatehouse"))
            .args(["-n", SYSTEM_NAMESPACE, "-f"])
            .arg(&self.values)
            .args(["--wait", "--timeout", "3m"]);
        for set in sets {
            cmd = cmd.arg("--set").arg(set);
        }
        let out = cmd.timeout(Duration::from_secs(240)).run();
        if !out.success {
            // What kept the pods from being ready (scheduling, eviction, probes, crashes).
            let pods = cp
                .kubectl(User::Admin)
                .args(["-n", SYSTEM_NAMESPACE, "get", "pods", "-o", "wide"])
                .run();
            let events = cp
                .kubectl(User::Admin)
                .args([
                    "-n",
                    SYSTEM_NAMESPACE,
                    "get",
                    "events",
                    "--sort-by=.lastTimestamp",
                ])
                .run();
            let events: Vec<&str> = events.stdout.lines().collect();
            panic!(
                "helm {action} failed: {}\npods:\n{}\nevents (last 30):\n{}",
                out.stderr,
                pods.stdout,
                events[events.len().saturating_sub(30)..].join("\n")
            );
        }
        out
    }

    /// The chart's pods of `component` (`operator`, `proxy`).
    pub async fn pods(&self, cp: &ControlPlane, component: &str) -> Vec<PodView> {
        let api: Api<Pod> = Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
        let selector = format!("app.kubernetes.io/component={component}");
        let pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap_or_else(|e| panic!("listing {component} pods: {e}"));
        let mut views: Vec<PodView> = pods
            .items
            .into_iter()
            .map(|pod| {
                let status = pod.status.clone().unwrap_or_default();
                PodView {
                    name: pod.name_any(),
                    ip: status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
                    phase: status.phase.clone().unwrap_or_default(),
                    ready: status
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True"),
                    node: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    deleting: pod.metadata.deletion_timestamp.is_some(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// Wait until exactly `count` pods of `component` exist, all Running and Ready on this node
    /// and none being deleted; returns them.
    pub async fn wait_ready(
        &self,
        cp: &ControlPlane,
        component: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<PodView> {
        let what = format!(
            "{count} {component} pods Running and Ready on {}",
            self.name
        );
        wait_for(timeout, &what, || async {
            let pods = self.pods(cp, component).await;
            let all_ready = pods
                .iter()
                .all(|p| p.phase == "Running" && p.ready && p.node == self.name && !p.deleting);
            (pods.len() == count && all_ready).then_some(pods)
        })
        .await
    }

    /// The operator Lease's holder, if any.
    pub async fn lease_holder(&self, cp: &ControlPlane) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
        api.get_opt(OPERATOR_LEASE)
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    }

    /// `kubectl logs POD` in [`SYSTEM_NAMESPACE`] (API server → kubelet), with timestamps.
    pub fn logs(&self, cp: &ControlPlane, pod: &str) -> String {
        cp.kubectl(User::Admin)
            .args(["-n", SYSTEM_NAMESPACE, "logs", "--timestamps", pod])
            .run()
            .ok()
            .to_owned()
    }

    /// Each CA Secret's uid and the SHA-256 of its data (keys sorted): equal before and after
    /// means the CA was neither replaced nor rewritten.
    pub async fn ca_fingerprints(&self, cp: &ControlPlane) -> BTreeMap<String, String> {
        let api: Api<Secret> = Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
        let mut out = BTreeMap::new();
        for name in [secrets::USER_CA, secrets::UPSTREAM_CA] {
            let secret = api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("reading Secret {SYSTEM_NAMESPACE}/{name}: {e}"));
            let data = secret.data.clone().unwrap_or_default();
            assert!(
                data.contains_key(secrets::CA_PRIVATE_KEY),
                "Secret {name} holds no CA key"
            );
            let mut bytes = Vec::new();
            for (key, value) in &data {
                bytes.extend_from_slice(key.as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(&value.0);
                bytes.push(0);
            }
            let uid = secret.metadata.uid.clone().unwrap_or_default();
            out.insert(
                name.to_owned(),
                format!("uid {uid} sha256 {}", sha256_hex(&bytes)),
            );
        }
        out
    }

    fn crictl(&self) -> Cmd {
        let (program, args) = self
            .crictl
            .split_first()
            .expect("GATEHOUSE_CRICTL is empty");
        Cmd::new(program).args(args)
    }

    /// The running containers of `namespace`'s pods, as their processes run on this machine
    /// (found through CRI: `crictl ps`, `crictl inspect`).
    pub fn container_processes(&self, namespace: &str) -> Vec<ContainerProcess> {
        let ids = self
            .crictl()
            .args(["ps", "-q", "--state", "running", "--label"])
            .arg(format!("io.kubernetes.pod.namespace={namespace}"))
            .run();
        ids.ok()
            .lines()
            .filter(|id| !id.trim().is_empty())
            .map(|id| {
                let info = self.crictl().args(["inspect", id.trim()]).run();
                let info: Value = serde_json::from_str(info.ok())
                    .unwrap_or_else(|e| panic!("crictl inspect {id}: {e}"));
                let name = info["status"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let pid = info["info"]["pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or_else(|| panic!("no pid for container {id}: {info}"));
                let proc_dir = Path::new("/proc").join(pid.to_string());
                let read = |file: &str| {
                    std::fs::read_to_string(proc_dir.join(file))
                        .unwrap_or_else(|e| panic!("{}/{file}: {e}", proc_dir.display()))
                };
                let mountinfo = read("mountinfo");
                // Fields: id parent major:minor root mount-point options ...
                let root_options = mountinfo
                    .lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .find(|f| f.get(4) == Some(&"/"))
                    .and_then(|f| f.get(5).map(|o| (*o).to_owned()))
                    .unwrap_or_default();
                ContainerProcess {
                    name,
                    pid,
                    status: read("status"),
                    root_options,
                }
            })
            .collect()
    }

    /// Whether this machine's connection tracking saw a connection to `ip:port` (a Service
    /// address: kube-proxy rewrote it to a pod's); the pod addresses that answered.
    pub fn conntrack_backends(ip: Ipv4Addr, port: u16) -> Option<Vec<String>> {
        let table = std::fs::read_to_string("/proc/net/nf_conntrack").ok()?;
        let dst = format!("dst={ip} ");
        let dport = format!(" dport={port} ");
        let mut backends: Vec<String> = table
            .lines()
            .filter(|l| l.contains(&dst) && l.contains(&dport))
            // The reply direction's source is the pod that answered: the last src= field.
            .filter_map(|l| {
                l.split_whitespace()
                    .filter_map(|f| f.strip_prefix("src="))
                    .next_back()
                    .map(str::to_owned)
            })
            .collect();
        backends.sort();
        backends.dedup();
        Some(backends)
    }
}

#[cfg(test)]
mod tests {
    use super::lockdown_faults;

    const LOCKED: &str = "Name:\tgatehouse-proxy\nUid:\t65532\t65532\t65532\t65532\n\
        Gid:\t65532\t65532\t65532\t65532\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";

    #[test]
    fn lockdown_faults_name_each_broken_property() {
        assert!(lockdown_faults(LOCKED, "ro,relatime").is_empty());
        let cases = [
            (
                "Uid:\t65532\t65532\t65532\t65532",
                "Uid:\t0\t0\t0\t0",
                "Uid",
            ),
            (
                "Gid:\t65532\t65532\t65532\t65532",
                "Gid:\t65532\t0\t65532\t65532",
                "Gid",
            ),
            (
                "CapEff:\t0000000000000000",
                "CapEff:\t00000000a80425fb",
                "CapEff",
            ),
            (
                "CapBnd:\t0000000000000000",
                "CapBnd:\t00000000a80425fb",
                "CapBnd",
            ),
            ("NoNewPrivs:\t1", "NoNewPrivs:\t0", "NoNewPrivs"),
            ("Seccomp:\t2", "Seccomp:\t0", "Seccomp"),
        ];
        for (from, to, named) in cases {
            let faults = lockdown_faults(&LOCKED.replace(from, to), "ro,relatime");
            assert_eq!(faults.len(), 1, "{to}: {faults:?}");
            assert!(faults[0].starts_with(named), "{to}: {faults:?}");
        }
        let faults = lockdown_faults(LOCKED, "rw,relatime");
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert!(faults[0].contains("root file system"), "{faults:?}");
        // A field that is missing counts as wrong, never as fine.
        assert_eq!(lockdown_faults("", "ro").len(), 8);
    }
}
