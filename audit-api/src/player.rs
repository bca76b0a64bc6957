//! The web player page served as `sessions/player`: it fetches the cast from the sibling
//! `recording` subresource and plays it. (Placeholder until the bundled player lands.)

/// A page and the Content-Security-Policy it is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The `Content-Security-Policy` header value.
    pub content_security_policy: String,
    /// The HTML.
    pub html: String,
}

/// The player page for `session` in `namespace`.
pub fn page(namespace: &str, session: &str) -> Page {
    let _ = (namespace, session);
    Page {
        content_security_policy: "default-src 'none'".to_owned(),
        html: "<!doctype html><title>Gatehouse session</title>".to_owned(),
    }
}
