//! Gatehouse operator library: the decisions behind `gatehouse-operator`.
//!
//! Data comes in as Gatehouse objects already read from the Kubernetes API (an AccessRequest,
//! the AccessPolicies and HostGroup of its namespace) and a CA key; it goes out as decisions:
//! which policy governs the request and what it grants ([`policy`]), and the signed OpenSSH
//! certificate ([`cert`]). Nothing here does I/O; the reconcilers that read and write the API
//! are not built yet.

pub mod admission;
pub mod cert;
pub mod controller;
pub mod error;
pub mod krl;
pub mod policy;
pub mod publish;
pub mod records;
pub mod secrets;
pub mod status;
pub mod telemetry;
pub mod webhook;

pub use error::{Error, Result};
