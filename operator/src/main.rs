//! Gatehouse operator.
//!
//! Reads HostGroups, AccessPolicies and AccessRequests from the Kubernetes API server and
//! writes back their status; signs OpenSSH certificates with a CA kept in a Secret.
//!
//! This build carries the workspace skeleton only: the reconcilers land with the operator
//! issue. Until then the binary refuses to start rather than pretend to reconcile.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("gatehouse-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "gatehouse-operator {}: not implemented yet; this build only serves {}/{} types",
                env!("CARGO_PKG_VERSION"),
                gatehouse_crds::GROUP,
                gatehouse_crds::VERSION
            );
            ExitCode::from(2)
        }
    }
}
