//! Gatehouse's aggregated API, `audit.gatehouse.dev/v1alpha1`: sessions, their recordings and
//! the audit events, read from the recording store (audit batches and casts written by the
//! operator and the proxy) and served through the Kubernetes aggregation layer, so the API
//! server authenticates every caller and RBAC (a SubjectAccessReview per call) decides.
//!
//! Data flows: store (`audit/` batches) → [`index`] (pure) → [`resources`] (JSON) → the
//! handlers in [`server`], which first check the front proxy ([`authn`]), then the route and
//! the caller's rights ([`authz`]); list filters are parsed by [`query`].

pub mod authn;
pub mod authz;
pub mod error;
pub mod handlers;
pub mod index;
pub mod player;
pub mod query;
pub mod resources;
pub mod server;
pub mod serving;

pub use error::{Error, Result};
