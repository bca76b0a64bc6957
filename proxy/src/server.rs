//! The engineer-facing SSH server. Data comes from `ssh` clients; authentication is decided
//! by [`crate::access`] under the [`crate::ratelimit`] limiter, and everything after it is
//! forwarded, unchanged, to the connection's task in [`crate::session`]. The handler keeps
//! no session state of its own.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use russh::{
    Channel,
    keys::Certificate,
    server::{self, Auth, ChannelOpenHandle, Msg, Session},
};
use tokio::sync::mpsc;

use crate::{
    access::{self, Grant},
    context::Shared,
    ratelimit::Verdict,
    session::{self, ConnectionEvent},
};

/// Accepts connections; one [`Connection`] handler each.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Shared state.
    pub shared: Arc<Shared>,
}

impl server::Server for Proxy {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            shared: self.shared.clone(),
            peer: peer.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            id: session::new_id(),
            grant: None,
            events: None,
        }
    }

    fn handle_session_error(&mut self, error: <Connection as server::Handler>::Error) {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// One engineer connection's handler.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    id: String,
    grant: Option<Arc<Grant>>,
    events: Option<mpsc::Sender<ConnectionEvent>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Connection {
    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// Refuse without looking at credentials when the address or user is blocked.
    fn blocked(&self, user: &str) -> bool {
        let verdict = match self.shared.limiter.lock() {
            Ok(limiter) => limiter.check(self.ip(), user, Instant::now()),
            Err(_) => Verdict::Allowed,
        };
        match verdict {
            Verdict::Allowed => false,
            Verdict::AddressBlocked(until) | Verdict::UserBlocked(until) => {
                self.shared
                    .metrics
                    .auth_failures_total
                    .with_label_values(&["blocked"])
                    .inc();
                tracing::warn!(
                    peer = %self.peer, user, connection = %self.id,
                    blocked_for_seconds = until.saturating_duration_since(Instant::now()).as_secs(),
                    address_blocked = matches!(verdict, Verdict::AddressBlocked(_)),
                    "login refused: too many failed logins"
                );
                true
            }
        }
    }

    fn failed(&self, user: &str, reason: &'static str, message: &str) {
        self.shared
            .metrics
            .auth_failures_total
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(peer = %self.peer, user, connection = %self.id, reason, "login refused: {message}");
        let blocks = match self.shared.limiter.lock() {
            Ok(mut limiter) => limiter.fail(self.ip(), user, Instant::now()),
            Err(_) => return,
        };
        if blocks.address || blocks.user {
            tracing::warn!(
                peer = %self.peer, user,
                address = blocks.address, user_name = blocks.user,
                "too many failed logins: blocked"
            );
        }
    }

    async fn forward(&self, event: ConnectionEvent) {
        if let Some(events) = &self.events {
            // A closed queue means the connection task ended; the channel open is then
            // rejected by dropping its reply handle.
            let _ = events.send(event).await;
        }
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // Clients start with "none"; it is not a failed guess.
        let _ = self.blocked(user);
        Ok(Auth::reject())
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // A plain key can never succeed, and agents offer several: refusing them is not
        // counted, or engineers with many keys would block themselves.
        tracing::debug!(peer = %self.peer, user, "plain public key refused: certificates only");
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        if self.blocked(user) {
            return Ok(Auth::reject());
        }
        let decide = |lookup: &dyn access::Lookup| {
            access::authorize(
                certificate,
                user,
                self.ip(),
                unix_now(),
                &self.shared.user_ca,
                lookup,
            )
        };
        let mut decision = decide(&self.shared.inventory);
        // A certificate used the moment it was issued may be ahead of the watch caches: ask the
        // API server before refusing it for what only a lagging cache would say.
        if let Err(refusal) = &decision
            && access::may_be_cache_lag(refusal)
            && let Some((namespace, name)) = access::request_named(certificate)
        {
            let fresh = self.shared.inventory.fresh(namespace, name).await;
            decision = decide(&fresh);
        }
        match decision {
            Ok(grant) => {
                self.shared.metrics.logins_total.inc();
                tracing::info!(
                    peer = %self.peer, user, connection = %self.id,
                    request = %grant.request, requester = %grant.requester,
                    host = %grant.host.name, login = %grant.login, serial = grant.serial,
                    "login accepted"
                );
                self.grant = Some(Arc::new(grant));
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                self.failed(user, refusal.reason, &refusal.message);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(grant) = self.grant.clone() else {
            return Ok(());
        };
        let (events, queue) = mpsc::channel(16);
        self.events = Some(events);
        tokio::spawn(session::run_connection(
            self.shared.clone(),
            grant,
            self.id.clone(),
            session.handle(),
            queue,
        ));
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forward(ConnectionEvent::Session { channel, reply })
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forward(ConnectionEvent::DirectTcpip {
            channel,
            reply,
            host: host_to_connect.to_owned(),
            port: port_to_connect,
            originator: (originator_address.to_owned(), originator_port),
        })
        .await;
        Ok(())
    }
}
