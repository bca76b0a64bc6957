//! Gatehouse approval bridge: AccessRequests to Slack and to generic webhooks, and Slack clicks
//! back to approvals made as the person who clicked.
//!
//! Data comes from the Kubernetes API (watches of AccessRequests and AccessPolicies; the
//! identity mapping ConfigMap and webhook key Secrets in the bridge's namespace) and from
//! Slack (signed interaction payloads on the Request URL, or envelopes on a Socket Mode
//! WebSocket). It goes to Slack's Web API (messages, updates, DMs, modals), to webhook
//! receivers (signed JSON POSTs), to `status.notifications` of AccessRequests (what was
//! delivered), and — impersonating the mapped identity of whoever clicked — to the decision
//! annotations admission checks. Pure parts: [`signature`], [`mapping`], [`message`], [`plan`],
//! [`interact::intent`]; the rest does I/O.

pub mod context;
pub mod error;
pub mod http_client;
pub mod interact;
pub mod mapping;
pub mod message;
pub mod metrics;
pub mod notifier;
pub mod plan;
pub mod queue;
pub mod records;
pub mod signature;
pub mod slack_api;
pub mod socket_mode;
pub mod webhooks;

pub use error::{Error, Result};
