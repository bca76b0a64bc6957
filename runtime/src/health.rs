//! Health and metrics endpoints: `/metrics` (Prometheus text), `/healthz` (the process runs)
//! and `/readyz` (start-up finished and the binary takes work), on a plain-HTTP listener.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::http::{serve, text};

/// Readiness, flipped on once start-up finished.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Mark ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Mark not ready (shutting down): load balancers stop sending new work.
    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serve `/metrics` (whatever `render` produces), `/healthz` and `/readyz` on `listener`.
pub async fn serve_health<R, E>(listener: TcpListener, render: R, readiness: Readiness)
where
    R: Fn() -> Result<String, E> + Clone + Send + Sync + 'static,
    E: std::fmt::Display,
{
    let handler = move |request: Request<Incoming>| {
        let render = render.clone();
        let readiness = readiness.clone();
        async move {
            match request.uri().path() {
                "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
                "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
                "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                "/metrics" => match render() {
                    Ok(body) => text(StatusCode::OK, body),
                    Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                },
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    };
    serve(listener, handler, |stream| async move { Ok(stream) }).await;
}
