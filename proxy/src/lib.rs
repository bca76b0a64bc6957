//! Gatehouse SSH proxy library: the parts behind `gatehouse-proxy`.
//!
//! Data comes in from engineers' `ssh` clients (certificate logins and session channels) and
//! from the Kubernetes API (AccessRequests, HostGroups and AccessPolicies read through
//! reflectors; the upstream CA and the proxy host key from Secrets). It goes out to target
//! hosts (one SSH connection per engineer connection, authenticated with a one-minute
//! upstream certificate), to the recording store (asciinema v2 files spooled on disk, then
//! uploaded to S3 or a directory) and back into each AccessRequest's `status.sessions`.
//!
//! Decisions are plain functions ([`access`], [`user_name`], [`ratelimit`], [`preauth`], [`hostkey`]); the russh
//! [`server::Connection`] handler (fed by the accept loop in [`listener`]) only forwards events; one task per connection and per session
//! channel ([`session`]) bridges and records; what they all share is in [`context`].

pub mod access;
pub mod audit_log;
pub mod context;
pub mod error;
pub mod hostkey;
pub mod inventory;
pub mod listener;
pub mod metrics;
pub mod network;
pub mod preauth;
pub mod ratelimit;
pub mod recording;
pub mod server;
pub mod session;
pub mod session_history;
pub mod session_limits;
pub mod transport;
pub mod turns;
pub mod upstream;
pub mod user_name;

pub use error::{Error, Result};
