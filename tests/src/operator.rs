//! Gatehouse operators as processes of the test plane.
//!
//! In: the built `gatehouse-operator` (see [`crate::binaries`]), a kubeconfig (the chart's
//! ServiceAccount for the shared operator, admin for tests' extra ones) and an
//! [`OperatorConfig`]. Out: a running [`Operator`], ready once `/readyz` answers 200 (keys
//! loaded, webhook serving), logging to its own file; its metrics port for `/metrics`. The
//! shared operator the chart's webhooks call is started by [`crate::install`]; tests that need
//! their own (restarts, races, short TTLs, a shifted clock) start more here.

use std::{path::PathBuf, time::Duration};

use crate::{
    ControlPlane,
    binaries::{Logs, operator_binary},
    command::Cmd,
    net::{LOOPBACK, http_get},
    process::{Process, Ready, Spec},
    users::User,
};

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
    /// Log format.
    pub logs: Logs,
    /// `--webhook-client-ca-file`: answer only callers with a certificate from this CA.
    pub webhook_client_ca: Option<PathBuf>,
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
            logs: cp.logs(),
            webhook_client_ca: None,
        }
    }

    fn spec(&self, metrics_port: u16) -> Spec {
        let mut cmd = Cmd::new(operator_binary())
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg(format!("--namespace={}", self.namespace))
            .arg(format!("--metrics-addr={LOOPBACK}:{metrics_port}"))
            .arg("--lease-seconds=5");
        cmd = match self.webhook_port {
            Some(port) => cmd.arg(format!("--webhook-addr={LOOPBACK}:{port}")),
            None => cmd.arg("--no-webhook"),
        };
        let optional = [
            ("--watch-namespace", &self.watch_namespace),
            ("--pending-ttl", &self.pending_ttl),
            ("--lease-name", &self.lease_name),
            (
                "--webhook-client-ca-file",
                &self
                    .webhook_client_ca
                    .as_ref()
                    .map(|p| p.display().to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                cmd = cmd.arg(format!("{flag}={value}"));
            }
        }
        Spec::new("the operator", self.logs.apply(cmd), &self.log)
    }
}

/// A running operator process; killed on drop unless detached.
#[derive(Debug)]
pub struct Operator {
    process: Process,
    /// Its metrics/health port.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Start an operator and wait until `/readyz` answers 200 (keys loaded, webhook serving).
    pub fn start(config: &OperatorConfig) -> Operator {
        Self::start_spec(config, |spec| spec)
    }

    /// Start it as [`Self::start`] does, as a daemon that can be detached.
    pub fn start_daemon(config: &OperatorConfig) -> Operator {
        Self::start_spec(config, Spec::daemon)
    }

    fn start_spec(config: &OperatorConfig, adapt: impl Fn(Spec) -> Spec) -> Operator {
        let (process, [metrics_port]) = Process::start_on_free_ports(|[metrics_port]| {
            (
                adapt(config.spec(metrics_port)),
                Ready::http(metrics_port, "/readyz"),
            )
        });
        Operator {
            process,
            metrics_port,
            log: config.log.clone(),
        }
    }

    /// GET a path on the metrics port: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Send SIGTERM without waiting (a leader stepping down while the test watches).
    pub fn send_sigterm(&self) {
        self.process.send_sigterm();
    }

    /// Stop it with SIGTERM (graceful: releases the Lease) and wait; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }

    /// Leave it running after this handle is gone, its pid in `pid_file`; returns the pid.
    pub fn detach(self, pid_file: &std::path::Path) -> u32 {
        self.process.detach(pid_file)
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
