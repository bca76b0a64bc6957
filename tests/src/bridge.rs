//! The approval bridge as a process of the test plane.
//!
//! In: the built `gatehouse-bridge`, the chart's bridge RBAC and identity mapping rendered with
//! `helm template` from the values a test gives (so the chart's least-privilege RBAC — the
//! impersonation resourceNames included — is what runs), a kubeconfig for the chart's
//! `gatehouse-bridge` ServiceAccount, and a [`crate::slack::FakeSlack`]. Out: a running
//! [`Bridge`], ready once `/readyz` answers 200, with its Request URL port.

use std::path::PathBuf;

use serde_json::Value;

use crate::{
    ControlPlane,
    binaries::Logs,
    command::Cmd,
    install::SYSTEM_NAMESPACE,
    net::LOOPBACK,
    process::{Process, Ready, Spec},
    repo_root,
    slack::{APP_TOKEN, BOT_TOKEN, SIGNING_SECRET},
    users::User,
};

/// The chart's ServiceAccount for the bridge.
pub const BRIDGE_SERVICE_ACCOUNT: &str = "gatehouse-bridge";

/// The bridge binary: `GATEHOUSE_BRIDGE_BIN`, else `target/debug/gatehouse-bridge`.
pub fn bridge_binary() -> PathBuf {
    let path = std::env::var_os("GATEHOUSE_BRIDGE_BIN").map_or_else(
        || repo_root().join("target/debug/gatehouse-bridge"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p gatehouse-bridge`)",
        path.display()
    );
    path
}

/// Render the chart's bridge RBAC and identity ConfigMap for `identities` (the
/// `bridge.identities` value) and `webhook_secrets`, and apply them as admin. Returns the
/// rendered YAML.
pub fn install_bridge_rbac(
    cp: &ControlPlane,
    identities: &Value,
    webhook_secrets: &[&str],
) -> String {
    cp.install_gatehouse();
    let rendered = cp
        .helm()
        .args(["template", crate::RELEASE])
        .arg(repo_root().join("charts/gatehouse"))
        .args(["-n", SYSTEM_NAMESPACE])
        .args([
            "--set",
            "bridge.enabled=true",
            "--set",
            "bridge.slack.secretName=unused",
        ])
        .arg("--set-json")
        .arg(format!("bridge.identities={identities}"))
        .arg("--set-json")
        .arg(format!(
            "bridge.webhookSecrets={}",
            serde_json::to_string(webhook_secrets).unwrap()
        ))
        .args(["--show-only", "templates/bridge-rbac.yaml"])
        .run();
    let yaml = rendered.ok().to_owned();
    cp.kubectl(User::Admin)
        .args(["apply", "-f", "-"])
        .stdin(yaml.clone())
        .run()
        .ok();
    yaml
}

/// How to start a bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The fake Slack's Web API URL.
    pub slack_api_url: String,
    /// Serve the Request URL.
    pub request_url: bool,
    /// Use Socket Mode.
    pub socket_mode: bool,
    /// Watch only this namespace.
    pub watch_namespace: String,
    /// Log file.
    pub log: PathBuf,
}

/// A running bridge; killed on drop.
#[derive(Debug)]
pub struct Bridge {
    process: Process,
    /// Health port.
    pub metrics_port: u16,
    /// Request URL port.
    pub listen_port: u16,
}

impl Bridge {
    /// Start it as the chart's ServiceAccount and wait until `/readyz` answers 200.
    pub fn start(cp: &ControlPlane, config: &BridgeConfig) -> Bridge {
        let kubeconfig = cp.service_account_login(SYSTEM_NAMESPACE, BRIDGE_SERVICE_ACCOUNT);
        let (process, [metrics_port, listen_port]) =
            Process::start_on_free_ports(|[metrics_port, listen_port]| {
                let mut cmd = Cmd::new(bridge_binary())
                    .env("KUBECONFIG", &kubeconfig)
                    .env("SLACK_BOT_TOKEN", BOT_TOKEN)
                    .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
                    .env("SLACK_APP_TOKEN", APP_TOKEN)
                    .arg(format!("--namespace={SYSTEM_NAMESPACE}"))
                    .arg(format!("--watch-namespace={}", config.watch_namespace))
                    .arg(format!("--metrics-addr={LOOPBACK}:{metrics_port}"))
                    .arg(format!("--slack-api-url={}", config.slack_api_url));
                if config.request_url {
                    cmd = cmd.arg(format!("--listen={LOOPBACK}:{listen_port}"));
                }
                if config.socket_mode {
                    cmd = cmd.arg("--socket-mode");
                }
                (
                    Spec::new("the bridge", Logs::Json.apply(cmd), &config.log),
                    Ready::http(metrics_port, "/readyz"),
                )
            });
        Bridge {
            process,
            metrics_port,
            listen_port,
        }
    }

    /// Stop it (SIGTERM, then SIGKILL) and start it again on the same ports.
    pub fn restart(&mut self) {
        self.process.stop(std::time::Duration::from_secs(5));
        self.process.restart();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
