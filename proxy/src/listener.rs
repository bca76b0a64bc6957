//! The proxy's own accept loop (instead of russh's `run_on_socket`): each TCP connection takes
//! a [`PreauthSlot`] before a byte of SSH is read, or is closed at once; a connection that has
//! not logged in within the grace time is disconnected. Data comes from the listening socket;
//! connections go to russh's `run_stream` with a [`Connection`] handler, which gives the slot
//! back when its login succeeds.

use std::{sync::Arc, time::Duration};

use russh::{
    Disconnect,
    server::{self, Server as _},
};
use tokio::{net::TcpListener, sync::oneshot};

use crate::{
    preauth::{Full, PreauthSlots},
    server::Proxy,
};

/// Accept connections until the future is dropped. Sessions run in tasks of their own, so
/// dropping this stops new logins only.
pub async fn serve(
    mut proxy: Proxy,
    config: Arc<server::Config>,
    listener: TcpListener,
    slots: PreauthSlots,
) {
    let grace = slots.limits().grace;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.try_take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                proxy
                    .shared
                    .metrics
                    .auth_failures_total
                    .with_label_values(&[match full {
                        Full::Address => "preauth_per_address",
                        Full::Total => "preauth_total",
                    }])
                    .inc();
                tracing::debug!(%peer, ?full, "connection closed before login: too many unauthenticated connections");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (logged_in, on_login) = oneshot::channel();
        let handler = proxy.new_client(Some(peer)).before_login(slot, logged_in);
        let config = config.clone();
        tokio::spawn(async move {
            let session = match tokio::time::timeout(
                grace,
                server::run_stream(config, stream, handler),
            )
            .await
            {
                Ok(Ok(session)) => session,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "connection setup failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "connection closed: no SSH handshake within the login grace time");
                    return;
                }
            };
            let handle = session.handle();
            tokio::pin!(session);
            tokio::select! {
                _ = &mut session => return,
                // A dropped sender (the handler is gone) ends the wait too.
                _ = on_login => {}
                _ = tokio::time::sleep(grace) => {
                    tracing::info!(%peer, grace_seconds = grace.as_secs(), "connection closed: no login within the login grace time");
                    let _ = handle
                        .disconnect(
                            Disconnect::ByApplication,
                            "gatehouse: no login within the login grace time".to_owned(),
                            String::new(),
                        )
                        .await;
                    return;
                }
            }
            if let Err(error) = session.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
