//! One task per engineer connection and one per session channel. Data comes from the
//! engineer's channel (forwarded by [`crate::server`]) and the target's channel (opened by
//! [`crate::upstream`]); it goes to the other side unchanged, and to the session's
//! recorder ([`channel`]). A connection task ends every session of a request whose access ends
//! (revoked, deleted, expired) within a second, with a message to the engineer.

mod channel;
mod forward;
pub mod record_rule;
pub mod replies;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gatehouse_crds::CertificateExtension;
use russh::{
    Channel, ChannelOpenFailure, Disconnect, client,
    keys::ssh_key::{
        getrandom::SysRng,
        rand_core::{Rng as _, UnwrapErr},
    },
    server::{self, ChannelOpenHandle},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::{
    access::{self, Grant, Refusal},
    context::Shared,
    upstream::{self, UpstreamHandler},
};

/// How often a connection re-checks that its request still grants access.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A random session or connection id: 16 lowercase hex digits.
pub fn new_id() -> String {
    format!("{:016x}", UnwrapErr(SysRng).next_u64())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the handler forwards to its connection's task.
pub enum ConnectionEvent {
    /// The engineer opened a session channel (shell, exec, subsystem).
    Session {
        /// The engineer's channel.
        channel: Channel<server::Msg>,
        /// Accept or reject the open.
        reply: ChannelOpenHandle,
    },
    /// The engineer asked for a local port forward (`ssh -L`).
    DirectTcpip {
        /// The engineer's channel.
        channel: Channel<server::Msg>,
        /// Accept or reject the open.
        reply: ChannelOpenHandle,
        /// Where to connect, as seen from the target.
        host: String,
        /// Port.
        port: u32,
        /// The engineer's side of the forward.
        originator: (String, u32),
    },
}

impl std::fmt::Debug for ConnectionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session { channel, .. } => write!(f, "Session({})", channel.id()),
            Self::DirectTcpip { host, port, .. } => write!(f, "DirectTcpip({host}:{port})"),
        }
    }
}

type Upstream = Arc<client::Handle<UpstreamHandler>>;

fn rejected(message: String) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 2, // SSH_OPEN_CONNECT_FAILED: the client prints our reason after it
        reason: message,
    }
}

async fn ensure_upstream(
    upstream: &mut Option<Upstream>,
    shared: &Shared,
    grant: &Arc<Grant>,
    connection: &str,
) -> Result<Upstream, String> {
    if let Some(existing) = upstream.as_ref().filter(|u| !u.is_closed()) {
        return Ok(existing.clone());
    }
    let handle = upstream::connect(
        grant.clone(),
        &shared.upstream_ca,
        &shared.allowed_targets,
        connection,
    )
    .await
    .map_err(|e| e.to_string())?;
    let handle = Arc::new(handle);
    *upstream = Some(handle.clone());
    Ok(handle)
}

/// Own one engineer connection after login: open upstream channels for its channels, watch
/// its request, and end everything when access ends. `audit` is what every audit event of the
/// connection's sessions and forwards carries. A session channel it rejects gives its
/// slot in `slots` back.
pub async fn run_connection(
    shared: Arc<Shared>,
    grant: Arc<Grant>,
    audit: crate::audit_log::Scope,
    connection: String,
    handle: server::Handle,
    mut events: mpsc::Receiver<ConnectionEvent>,
    slots: replies::SessionSlots,
) {
    let (end_tx, end_rx) = watch::channel(None::<Refusal>);
    let mut upstream: Option<Upstream> = None;
    let mut sessions = JoinSet::new();
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    let mut shutdown = shared.shutdown.clone();
    let ended = loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break None };
                match event {
                    ConnectionEvent::Session { channel, reply } => {
                        let id = channel.id();
                        let place = match shared.request_sessions.try_take(&grant.request.uid, &grant.request.to_string(), grant.max_sessions) {
                            Ok(place) => place,
                            Err(message) => {
                                tracing::warn!(%connection, request = %grant.request, "session refused: {message}");
                                slots.close(id);
                                reply.reject(ChannelOpenFailure::Other { code: 1, reason: message }).await;
                                continue;
                            }
                        };
                        let up = match ensure_upstream(&mut upstream, &shared, &grant, &connection).await {
                            Ok(up) => up,
                            Err(message) => {
                                tracing::warn!(%connection, request = %grant.request, "upstream: {message}");
                                slots.close(id);
                                reply.reject(rejected(message)).await;
                                continue;
                            }
                        };
                        match up.channel_open_session().await {
                            Ok(target) => {
                                reply.accept().await;
                                let ctx = channel::SessionContext {
                                    shared: shared.clone(),
                                    grant: grant.clone(),
                                    connection: connection.clone(),
                                    handle: handle.clone(),
                                    activity: crate::session_limits::Activity::new(std::time::Instant::now()),
                                    audit_bytes: Default::default(),
                                    audit: audit.clone(),
                                };
                                let session = channel::run_session(ctx, channel, target, end_rx.clone());
                                // russh drops the client's answer to a close the proxy sent
                                // first, so the slot goes back when the session's task ends.
                                let slots = slots.clone();
                                sessions.spawn(async move {
                                    session.await;
                                    slots.close(id);
                                    drop(place);
                                });
                            }
                            Err(error) => {
                                slots.close(id);
                                reply.reject(rejected(format!("target refused a session channel: {error}"))).await;
                            }
                        }
                    }
                    ConnectionEvent::DirectTcpip { channel, reply, host, port, originator } => {
                        let refusal = record_rule::forward_refusal(
                            grant.permits(CertificateExtension::PermitPortForwarding),
                            grant.recording_required,
                            grant.allow_forwards,
                        );
                        if let Some(message) = refusal {
                            tracing::warn!(%connection, request = %grant.request, %host, port, "{message}");
                            // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED; ssh prints the reason after it.
                            reply.reject(ChannelOpenFailure::Other { code: 1, reason: message.to_owned() }).await;
                            continue;
                        }
                        let up = match ensure_upstream(&mut upstream, &shared, &grant, &connection).await {
                            Ok(up) => up,
                            Err(message) => {
                                reply.reject(rejected(message)).await;
                                continue;
                            }
                        };
                        match up.channel_open_direct_tcpip(host.clone(), port, originator.0, originator.1).await {
                            Ok(target) => {
                                reply.accept().await;
                                shared.metrics.sessions_total.with_label_values(&["direct-tcpip"]).inc();
                                tracing::info!(%connection, request = %grant.request, %host, port, "port forward opened");
                                sessions.spawn(forward::forward_tcp(
                                    shared.clone(), grant.clone(), connection.clone(),
                                    channel, target, end_rx.clone(),
                                    forward::Destination { host, port, audit: audit.clone() },
                                ));
                            }
                            Err(error) => reply.reject(rejected(format!("target refused the forward to {host}:{port}: {error}"))).await,
                        }
                    }
                }
            }
            true = async { shutdown.wait_for(|down| *down).await.is_ok() } => break Some(Refusal {
                reason: "shutdown",
                message: "the proxy is shutting down; connect again to reach another replica".to_owned(),
            }),
            _ = check.tick() => {
                while sessions.try_join_next().is_some() {}
                if let Err(refusal) = access::still_valid(&grant, &shared.inventory, unix_now()) {
                    break Some(refusal);
                }
            }
        }
    };
    if let Some(refusal) = ended {
        tracing::info!(%connection, request = %grant.request, reason = refusal.reason, "access ended: {}", refusal.message);
        let _ = end_tx.send(Some(refusal.clone()));
        // Sessions write the message and close themselves; then the connection goes.
        let drain = async { while sessions.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        let _ = handle
            .disconnect(
                Disconnect::ByApplication,
                format!("gatehouse: {}", refusal.message),
                String::new(),
            )
            .await;
    }
    while sessions.join_next().await.is_some() {}
    if let Some(up) = upstream {
        let _ = up
            .disconnect(Disconnect::ByApplication, "session over", "")
            .await;
    }
}
