//! A small HTTP/1 server: one task per connection, a handler per request, and a transport hook
//! (plain TCP for health endpoints, TLS for the admission webhook and other HTTPS servers).

use std::{convert::Infallible, future::Future, net::SocketAddr};

use http::{Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// A complete response body.
pub type Full = http_body_util::Full<hyper::body::Bytes>;

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full> {
    let mut response = Response::new(Full::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Bind `address`, reporting which address failed.
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address, source })
}

/// Serve HTTP/1 connections from `listener` with `handler`; each connection in its own task.
/// `accept` turns a TCP stream into the transport (identity for plain HTTP, TLS for HTTPS).
/// The handler sees the peer address, so it can log or rate-limit by it.
pub async fn serve<H, F, A, AF, S>(listener: TcpListener, handler: H, accept: A)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full>> + Send + 'static,
    A: Fn(tokio::net::TcpStream) -> AF + Clone + Send + Sync + 'static,
    AF: Future<Output = std::io::Result<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        let accept = accept.clone();
        tokio::spawn(async move {
            let stream = match accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, %peer, "connection setup failed");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
}
