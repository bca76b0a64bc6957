//! Gatehouse operator library: the decisions behind `gatehouse-operator`.
//!
//! Data comes in as Gatehouse objects already read from the Kubernetes API (an AccessRequest,
//! the AccessPolicies and HostGroup of its namespace) and a CA key; it goes out as decisions:
//! which policy governs the request and what it grants ([`policy`]), and the signed OpenSSH
//! certificate ([`cert`]). Nothing here does I/O; the reconcilers that read and write the API
//! are not built yet.

pub mod cert;
pub mod error;
pub mod policy;

pub use error::{Error, Result};
