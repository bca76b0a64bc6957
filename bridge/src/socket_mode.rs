//! Socket Mode: clicks without a public ingress. The bridge asks `apps.connections.open` (with
//! the app-level `xapp-` token) for a WebSocket URL, connects out to it, acknowledges every
//! envelope by its `envelope_id` at once and hands `interactive` payloads to the same handler
//! the Request URL uses. Authenticity comes from the app token and TLS (Slack signs nothing on
//! the socket). On `disconnect`, a closed socket or an error it reconnects, with backoff.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_tungstenite::{WebSocketStream, client_async, tungstenite::Message};

use crate::{
    context::Context,
    error::{Error, Result},
    interact::Interactions,
};

/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Stay connected forever.
pub async fn run(ctx: Arc<Context>, interactions: Interactions) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(&ctx, &interactions).await {
            Ok(()) => {
                tracing::info!("Socket Mode connection ended; reconnecting");
                backoff = Duration::from_secs(1);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "Socket Mode connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for cert in loaded.certs {
        roots.add(cert).ok();
    }
    if roots.is_empty() {
        return Err(Error::Tls("no system root certificates".to_owned()));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn session(ctx: &Context, interactions: &Interactions) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| Error::SocketMode(e.to_string());
    let slack = ctx
        .slack
        .as_ref()
        .ok_or_else(|| Error::SocketMode("no Slack bot token".to_owned()))?;
    let address = slack.open_connection().await?;
    let url = url::Url::parse(&address).map_err(|e| failed(&e))?;
    let host = url
        .host_str()
        .ok_or_else(|| Error::SocketMode(format!("no host in {address}")))?
        .to_owned();
    let secure = match url.scheme() {
        "wss" => true,
        "ws" => false,
        other => return Err(Error::SocketMode(format!("unsupported scheme {other}"))),
    };
    let port = url.port().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| failed(&e))?;
    if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| failed(&e))?;
        let tls = tls_connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| failed(&e))?;
        let (ws, _) = client_async(address.as_str(), tls)
            .await
            .map_err(|e| failed(&e))?;
        serve(ws, interactions).await
    } else {
        let (ws, _) = client_async(address.as_str(), tcp)
            .await
            .map_err(|e| failed(&e))?;
        serve(ws, interactions).await
    }
}

async fn serve<S>(mut ws: WebSocketStream<S>, interactions: &Interactions) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        let message = message.map_err(|e| Error::SocketMode(e.to_string()))?;
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        let Ok(envelope) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(id) = envelope["envelope_id"].as_str() {
            let ack = json!({"envelope_id": id}).to_string();
            ws.send(Message::Text(ack.into()))
                .await
                .map_err(|e| Error::SocketMode(e.to_string()))?;
        }
        match envelope["type"].as_str() {
            Some("hello") => tracing::info!("Socket Mode connected"),
            Some("disconnect") => return Ok(()),
            Some("interactive") => interactions.accept(envelope["payload"].clone()),
            _ => {}
        }
    }
    Ok(())
}
