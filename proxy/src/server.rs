//! The engineer-facing SSH server. Data comes from `ssh` clients; authentication is decided
//! by [`crate::access`] under the [`crate::ratelimit`] limiter, and everything after it is
//! forwarded, unchanged, to the connection's task in [`crate::session`]. The handler keeps
//! no session state of its own.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use russh::{
    Channel, ChannelId, Sig,
    keys::{Certificate, HashAlg},
    server::{self, Auth, ChannelOpenHandle, Msg, Session},
};
use tokio::sync::{mpsc, oneshot};

use gatehouse_crds::CertificateExtension;

use crate::{
    access::{self, Grant},
    context::Shared,
    preauth::PreauthSlot,
    ratelimit::Verdict,
    session::{
        self, ConnectionEvent,
        replies::{self, ChannelState, Reply, Request, SessionSlots},
    },
    user_name,
};

/// Channels whose request state the handler keeps at most (sessions are capped lower, at
/// [`replies::MAX_SESSIONS`]; requests on channels beyond this are declined).
const MAX_TRACKED_CHANNELS: usize = 64;

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
            channels: HashMap::new(),
            slots: SessionSlots::default(),
            preauth: None,
            logged_in: None,
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
    /// What each open channel was granted so far, for [`replies::decide`].
    channels: HashMap<ChannelId, ChannelState>,
    /// Open session channels, capped like sshd's `MaxSessions`.
    slots: SessionSlots,
    /// This connection's place among unauthenticated ones, given back at login.
    preauth: Option<PreauthSlot>,
    /// Tells the accept loop the login succeeded (its grace timer stops).
    logged_in: Option<oneshot::Sender<()>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Connection {
    /// This connection holds `slot` until it logs in, then says so on `logged_in`.
    pub fn before_login(mut self, slot: PreauthSlot, logged_in: oneshot::Sender<()>) -> Self {
        self.preauth = Some(slot);
        self.logged_in = Some(logged_in);
        self
    }

    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// Refuse without looking at credentials when the address or the presented key is
    /// blocked (fails closed: a broken limiter blocks).
    fn blocked(&self, user: &str, key: Option<&str>) -> bool {
        let verdict = match self.shared.limiter.lock() {
            Ok(limiter) => limiter.check(self.ip(), key, Instant::now()),
            Err(_) => Verdict::AddressBlocked(Instant::now()),
        };
        match verdict {
            Verdict::Allowed => false,
            Verdict::AddressBlocked(until) | Verdict::KeyBlocked(until) => {
                self.shared
                    .metrics
                    .auth_failures_total
                    .with_label_values(&["blocked"])
                    .inc();
                tracing::warn!(
                    peer = %self.peer, user, key, connection = %self.id,
                    blocked_for_seconds = until.saturating_duration_since(Instant::now()).as_secs(),
                    address_blocked = matches!(verdict, Verdict::AddressBlocked(_)),
                    "login refused: too many failed logins"
                );
                self.shared.audit.login_refused(
                    self.peer,
                    &self.id,
                    user,
                    key,
                    "blocked",
                    "too many failed logins",
                );
                true
            }
        }
    }

    fn failed(&self, user: &str, key: Option<&str>, reason: &'static str, message: &str) {
        self.shared
            .metrics
            .auth_failures_total
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(peer = %self.peer, user, key, connection = %self.id, reason, "login refused: {message}");
        self.shared
            .audit
            .login_refused(self.peer, &self.id, user, key, reason, message);
        let blocks = match self.shared.limiter.lock() {
            Ok(mut limiter) => limiter.fail(self.ip(), key, Instant::now()),
            Err(_) => return,
        };
        if blocks.address || blocks.key {
            tracing::warn!(
                peer = %self.peer, user, key,
                address = blocks.address, key_blocked = blocks.key,
                "too many failed logins: blocked"
            );
        }
    }

    /// A user name too long to be a `LOGIN@HOST`: refused before anything is kept or logged
    /// of it (only its length).
    fn oversized(&self, user: &str) -> bool {
        if user.len() <= user_name::MAX_LEN {
            return false;
        }
        self.shared
            .metrics
            .auth_failures_total
            .with_label_values(&["user_name_too_long"])
            .inc();
        tracing::warn!(peer = %self.peer, connection = %self.id, bytes = user.len(), "login refused: user name longer than {} bytes", user_name::MAX_LEN);
        let message = format!("user name longer than {} bytes", user_name::MAX_LEN);
        self.shared.audit.login_refused(
            self.peer,
            &self.id,
            "",
            None,
            "user_name_too_long",
            &message,
        );
        true
    }

    /// Answer a channel request now, while russh still knows whether it wants a reply: a
    /// later reply from another task would answer whichever request came last.
    fn reply(
        &mut self,
        channel: ChannelId,
        request: Request,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let permit_pty = self
            .grant
            .as_ref()
            .is_some_and(|g| g.permits(CertificateExtension::PermitPty));
        let tracked = self.channels.len() < MAX_TRACKED_CHANNELS;
        let reply = match self.channels.get_mut(&channel) {
            Some(state) => replies::decide(request, state, permit_pty),
            None if tracked => {
                let state = self.channels.entry(channel).or_default();
                replies::decide(request, state, permit_pty)
            }
            None => Reply::Failure,
        };
        if request == Request::Pty && reply == Reply::Failure {
            tracing::info!(peer = %self.peer, connection = %self.id, "pty declined: the certificate has no permit-pty; the session runs without one");
        }
        match reply {
            Reply::Success => session.channel_success(channel),
            Reply::Failure => session.channel_failure(channel),
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
        if !self.oversized(user) {
            let _ = self.blocked(user, None);
        }
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
        if self.oversized(user) {
            return Ok(Auth::reject());
        }
        let key = certificate
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        if self.blocked(user, Some(&key)) {
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
                // Fail closed: a login the audit trail cannot hold is not accepted.
                let durable = self
                    .shared
                    .audit
                    .login_accepted(self.peer, &self.id, &key, &grant)
                    .await;
                if let Err(error) = durable {
                    self.shared
                        .metrics
                        .auth_failures_total
                        .with_label_values(&["audit_unavailable"])
                        .inc();
                    tracing::error!(
                        peer = %self.peer, user, connection = %self.id, %error,
                        "login refused: its audit event could not be made durable"
                    );
                    return Ok(Auth::reject());
                }
                self.grant = Some(Arc::new(grant));
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                self.failed(user, Some(&key), refusal.reason, &refusal.message);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.preauth = None;
        if let Some(logged_in) = self.logged_in.take() {
            let _ = logged_in.send(());
        }
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
            self.slots.clone(),
        ));
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.slots.try_open(channel.id()) {
            tracing::warn!(peer = %self.peer, connection = %self.id, "session channel refused: {} are open on this connection", replies::MAX_SESSIONS);
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        self.forward(ConnectionEvent::Session { channel, reply })
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.slots.close(channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::Pty, session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::X11, session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::Env, session)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::Program, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::Program, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::Program, session)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::WindowChange, session)
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        _signal: Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Request::Signal, session)
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
