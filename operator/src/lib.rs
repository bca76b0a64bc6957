//! Gatehouse operator library: the decisions behind `gatehouse-operator`.
//!
//! Data comes in from the Kubernetes API (AccessRequests, AccessPolicies, HostGroups, the CA
//! Secrets) and from admission reviews; it goes out as AccessRequest status and Events
//! ([`controller`]), admission verdicts ([`webhook`]), published CA keys, principals and
//! revocations ([`publish`]) and metrics ([`telemetry`]). The decisions themselves are pure
//! functions: which policy governs a request ([`policy`]), the certificate ([`cert`]), the
//! admission rules ([`admission`]). The proxy reuses [`cert`], [`secrets`]' names and
//! [`telemetry::serve_health`].

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
