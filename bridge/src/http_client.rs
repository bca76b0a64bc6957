//! One outbound HTTP/1 client (Slack's Web API, webhook receivers): hyper with rustls on
//! aws-lc-rs and the system's root certificates, `http://` allowed for tests and in-cluster
//! receivers. Bodies are bounded; every call has a time limit.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::error::{Error, Result};

/// The largest response body read (Slack answers are small JSON objects).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Time limit of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A shared client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the system's root certificates.
    pub fn new() -> Result<Self> {
        let connector = HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| Error::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Send `request`; the whole response, its body read up to [`MAX_RESPONSE_BYTES`].
    pub async fn send(&self, what: &str, request: Request<Full<Bytes>>) -> Result<Response<Bytes>> {
        let failed = |message: String| Error::Http {
            what: what.to_owned(),
            message,
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| failed(format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(
            CALL_TIMEOUT,
            Limited::new(body, MAX_RESPONSE_BYTES).collect(),
        )
        .await
        .map_err(|_| failed("body not read in time".to_owned()))?
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}
