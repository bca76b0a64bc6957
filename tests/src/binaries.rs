//! The Gatehouse binaries the harness runs, and how they log.
//!
//! In: `cargo build` output under `target/debug` (or the paths in `GATEHOUSE_OPERATOR_BIN`,
//! `GATEHOUSE_PROXY_BIN` and `GATEHOUSE_AUDIT_API_BIN`, like `make bench`'s release builds). Out:
//! the program of an operator, proxy or audit API process, and the log flags and environment
//! for tests (JSON lines they read back) or people (`make up`'s text logs).

use std::path::PathBuf;

use crate::{command::Cmd, repo_root};

/// The operator binary: `GATEHOUSE_OPERATOR_BIN`, else `target/debug/gatehouse-operator`.
pub fn operator_binary() -> PathBuf {
    binary("GATEHOUSE_OPERATOR_BIN", "gatehouse-operator")
}

/// The proxy binary: `GATEHOUSE_PROXY_BIN`, else `target/debug/gatehouse-proxy`.
pub fn proxy_binary() -> PathBuf {
    binary("GATEHOUSE_PROXY_BIN", "gatehouse-proxy")
}

/// The audit API binary: `GATEHOUSE_AUDIT_API_BIN`, else `target/debug/gatehouse-audit-api`.
pub fn audit_api_binary() -> PathBuf {
    binary("GATEHOUSE_AUDIT_API_BIN", "gatehouse-audit-api")
}

fn binary(variable: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(
        || repo_root().join("target/debug").join(package),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p {package}`; `make test` does)",
        path.display()
    );
    path
}

/// How a Gatehouse binary logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Logs {
    /// JSON lines at `info` for every crate (what tests search).
    #[default]
    Json,
    /// Text, with the binary's own default filter (for people: `make up`).
    Text,
}

impl Logs {
    /// `cmd` (an operator or proxy) with this log format.
    pub fn apply(self, cmd: Cmd) -> Cmd {
        match self {
            Self::Json => cmd.env("RUST_LOG", "info"),
            Self::Text => cmd.arg("--log-format=text"),
        }
    }
}
