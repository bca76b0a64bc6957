//! The harness that runs Gatehouse for real: the end-to-end tests, the proxy benchmark and
//! `make up` start the chart, the operator, the proxy, MinIO and sshd targets the same way,
//! through this crate.
//!
//! Data comes from a real control plane that `tests/scripts/control-plane.sh` starts (etcd +
//! kube-apiserver on loopback, a kubeconfig per user of `tests/users.tsv`) and announces in its
//! environment or `env` file ([`control_plane`]), from the built `gatehouse-operator` and
//! `gatehouse-proxy`, and from Debian's `sshd`, OpenSSH clients and the cached MinIO. It goes
//! out as processes under one supervisor ([`process`]), commands through one runner
//! ([`command`]), and typed clients and `kubectl`/`helm` acting as each user. Nothing here fakes
//! the API server. The harness reports failure by panicking, with the evidence (logs, output).
//!
//! There is no controller-manager: namespaces never finish deleting and nothing is garbage
//! collected, so tests never wait for deletion; the whole plane is thrown away after the run.
//!
//! Modules, from the bottom: [`users`], [`command`], [`net`], [`process`] (plumbing);
//! [`control_plane`], [`binaries`], [`operator`], [`install`], [`audit_api`] (the plane and
//! Gatehouse on it, the audit API behind the aggregation layer);
//! [`ssh_client`], [`sshd`], [`minio`], [`proxy`] (the SSH side and the recording store);
//! [`scenario`], [`proxied_world`] (what tests set up); [`slack`], [`bridge`] (a local Slack
//! and the approval bridge); [`make_up`] (`make up`); [`node`], [`node_world`] (the chart's pods
//! on a real node, for `make e2e-node`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the harness reports failure by panicking, like the tests it serves"
)]

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};

pub mod audit_api;
pub mod binaries;
pub mod bridge;
pub mod command;
pub mod control_plane;
pub mod install;
pub mod make_up;
pub mod minio;
pub mod net;
pub mod node;
pub mod node_world;
pub mod operator;
pub mod process;
pub mod proxied_world;
pub mod proxy;
pub mod scenario;
pub mod slack;
pub mod ssh_client;
pub mod sshd;
pub mod users;

pub use command::{Cmd, CmdOutput};
pub use control_plane::{ControlPlane, Subject, control_plane};
pub use install::{GATEHOUSE_CRDS, RELEASE, SYSTEM_NAMESPACE};
pub use users::User;

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

/// Poll `check` every 50 ms until it returns `Some` or `timeout` passes (then panic naming `what`).
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

/// Lowercase hex SHA-256 (what `status.sessions[].recording.sha256` holds).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
