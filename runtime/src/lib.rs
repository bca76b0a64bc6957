//! Process plumbing every Gatehouse binary shares; no Gatehouse decisions live here.
//!
//! Data comes from the process's environment (`RUST_LOG`, signals), from the Kubernetes API
//! (watch streams kept in reflector stores, [`watch`]) and from the binary's own metrics and
//! readiness; it goes out as JSON log lines on stderr ([`logging`]), a plain-HTTP listener with
//! `/metrics`, `/healthz` and `/readyz` ([`health`], on the generic HTTP/1 server in [`http`])
//! and a shutdown notice ([`signals`]).

pub mod error;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod watch;

pub use error::{Error, Result};
