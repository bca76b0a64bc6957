//! One port forward (`ssh -L`, `-D`, `-W`: a direct-tcpip channel). Data comes from the
//! engineer's channel and the target's; it goes to the other side unchanged, counted each way.
//! Not recorded (it is not a terminal), but listed in the request's `status.sessions` with its
//! destination and bytes, when it opens and when it closes, and logged (with the
//! `forwardOpened` and `forwardClosed` audit events); ended with access.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use gatehouse_crds::{ForwardRecord, SessionRecord};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use russh::{Channel, client, server};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

use super::new_id;
use crate::{
    access::{Grant, Refusal},
    context::Shared,
};

/// A stream that counts what is read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn entry(
    id: &str,
    grant: &Grant,
    start: jiff::Timestamp,
    end: Option<jiff::Timestamp>,
    destination: &str,
    bytes: (u64, u64),
) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        host: grant.host.name.clone(),
        login: grant.login.clone(),
        start_time: Time(start),
        number: None,
        end_time: end.map(Time),
        exit_status: None,
        recording: None,
        forward: Some(ForwardRecord {
            destination: destination.to_owned(),
            bytes_to_target: i64::try_from(bytes.0).unwrap_or(i64::MAX),
            bytes_to_client: i64::try_from(bytes.1).unwrap_or(i64::MAX),
        }),
    }
}

/// Where a forward goes, as the client named it, and its connection's audit scope.
#[derive(Debug)]
pub(super) struct Destination {
    pub(super) host: String,
    pub(super) port: u32,
    pub(super) audit: crate::audit_log::Scope,
}

/// Bridge the forward to `destination` until either side closes or access ends.
pub(super) async fn forward_tcp(
    shared: Arc<Shared>,
    grant: Arc<Grant>,
    connection: String,
    engineer: Channel<server::Msg>,
    target: Channel<client::Msg>,
    mut ended: watch::Receiver<Option<Refusal>>,
    to: Destination,
) {
    let id = new_id();
    let destination = format!("{}:{}", to.host, to.port);
    let audit = to.audit.in_session(&id);
    crate::audit_log::emit_forward_opened(&audit, &to.host, to.port);
    let start = jiff::Timestamp::now();
    let status = shared.status.clone();
    let opened = entry(&id, &grant, start, None, &destination, (0, 0));
    let request = grant.request.clone();
    let started = tokio::spawn(async move {
        if let Err(error) = status.record(&request, opened).await {
            tracing::warn!(%error, "recording the port forward in status failed");
        }
    });
    let to_target = Arc::new(AtomicU64::new(0));
    let to_client = Arc::new(AtomicU64::new(0));
    let mut a = Counted {
        inner: engineer.into_stream(),
        read: to_target.clone(),
    };
    let mut b = Counted {
        inner: target.into_stream(),
        read: to_client.clone(),
    };
    let ended_by = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => "peer",
        _ = ended.wait_for(Option::is_some) => "access",
    };
    let bytes = (
        to_target.load(Ordering::Relaxed),
        to_client.load(Ordering::Relaxed),
    );
    tracing::info!(
        session = %id, %connection, request = %grant.request, requester = %grant.requester,
        host = %grant.host.name, %destination, bytes_to_target = bytes.0,
        bytes_to_client = bytes.1, ended_by, "port forward closed"
    );
    crate::audit_log::emit_forward_closed(&audit, &to.host, to.port, bytes, ended_by);
    // The open must be written first, or it could overwrite the close.
    let _ = started.await;
    let closed = entry(
        &id,
        &grant,
        start,
        Some(jiff::Timestamp::now()),
        &destination,
        bytes,
    );
    if let Err(error) = shared.status.record(&grant.request, closed).await {
        tracing::warn!(%error, session = %id, "recording the closed port forward in status failed");
    }
}
