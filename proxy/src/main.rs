//! Gatehouse SSH proxy.
//!
//! Accepts engineers' SSH connections authenticated by Gatehouse certificates, checks them
//! against live AccessRequests, bridges them to target hosts and records the sessions.
//!
//! This build carries the workspace skeleton only: the SSH server lands with the proxy issue.
//! Until then the binary refuses to start rather than accept connections it cannot check.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("gatehouse-proxy {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "gatehouse-proxy {}: not implemented yet; this build only serves {}/{} types",
                env!("CARGO_PKG_VERSION"),
                gatehouse_crds::GROUP,
                gatehouse_crds::VERSION
            );
            ExitCode::from(2)
        }
    }
}
