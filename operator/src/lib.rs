//! Gatehouse operator library: the decisions and the reconcilers behind `gatehouse-operator`.
//!
//! Data comes from the Kubernetes API (HostGroups, AccessPolicies, AccessRequests, the CA
//! Secrets) and goes back to it: AccessRequest status (certificate, validity, conditions),
//! Events, and the ConfigMap that publishes the CA public keys. Pure decisions live in
//! [`policy`] (who gets what) and [`cert`] (what a certificate says); they do no I/O.

pub mod cert;
pub mod error;
pub mod policy;

pub use error::{Error, Result};
