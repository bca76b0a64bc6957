//! Gatehouse's aggregated API, `audit.gatehouse.dev/v1alpha1`: sessions, their recordings and
//! the audit events, read from the recording store (audit batches and casts written by the
//! operator and the proxy) and served through the Kubernetes aggregation layer, so the API
//! server authenticates every caller and RBAC (a SubjectAccessReview per call) decides.

pub mod player;
