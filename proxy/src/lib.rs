//! Gatehouse SSH proxy library: the parts behind `gatehouse-proxy`.
//!
//! Data comes in from engineers' `ssh` clients (certificate logins and session channels) and
//! from the Kubernetes API (AccessRequests, HostGroups and AccessPolicies read through
//! reflectors; the upstream CA and the proxy host key from Secrets). It goes out to target
//! hosts (one SSH connection per engineer connection, authenticated with a one-minute
//! upstream certificate), to the recording store (asciinema v2 files spooled on disk, then
//! uploaded to S3 or a directory) and back into each AccessRequest's `status.sessions`.
//!
//! Decisions are plain functions ([`access`], [`target`], [`ratelimit`], [`hostkey`]); the russh
//! [`server::Handler`] only forwards events; one task per session channel ([`session`]) bridges
//! and records.

pub mod access;
pub mod error;
pub mod hostkey;
pub mod inventory;
pub mod ratelimit;
pub mod recording;
pub mod server;
pub mod session;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod upstream;

pub use error::{Error, Result};
