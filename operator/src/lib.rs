//! Gatehouse operator library: the decisions behind `gatehouse-operator`.
//!
//! Data comes in from the Kubernetes API (AccessRequests, AccessPolicies, HostGroups, the CA
//! Secrets) and from admission reviews; it goes out as AccessRequest status and Events
//! ([`controller`]), audit events in the logs ([`audit_log`]), admission verdicts ([`webhook`]), published CA keys, principals and
//! revocations ([`publish`], [`revocations`]) and metrics ([`metrics`]). The decisions themselves are pure
//! functions: the state machine ([`decision`]), which policy governs a request ([`gatehouse_crds::policy`]), its status ([`request_status`]), the
//! sealed decision records ([`decisions`]), the admission rules ([`admission`], [`ownership`]). Certificates
//! are signed by [`gatehouse_ssh_ca`]; process plumbing comes from [`gatehouse_runtime`].

pub mod admission;
pub mod approvers;
pub mod audit_log;
pub mod config_map;
pub mod controller;
pub mod decision;
pub mod decisions;
pub mod error;
pub mod metrics;
pub mod ownership;
pub mod publish;
pub mod request_status;
pub mod revocations;
pub mod seal_keys;
pub mod secrets;
pub mod webhook;

pub use error::{Error, Result};
