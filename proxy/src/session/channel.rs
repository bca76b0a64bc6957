//! One session channel (shell, exec or subsystem): two pumps copy the engineer's and the
//! target's messages to the other side and into the session's [`Recorder`], which spools to
//! disk and is handed to the uploader when the session ends. A recording failure ends the
//! session when the policy requires recording.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_crds::CertificateExtension;
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, client, server};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{
    new_id, record_rule,
    replies::{self, ChannelState, Reply, Request},
};
use crate::{
    access::{Grant, Refusal},
    context::Shared,
    recording::{Recorder, SessionKind, SessionMeta, live::LiveUpload},
    session_limits::Activity,
};

/// How often a live session's recording is flushed to the spool.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub(super) struct SessionContext {
    pub(super) shared: Arc<Shared>,
    pub(super) grant: Arc<Grant>,
    pub(super) connection: String,
    pub(super) handle: server::Handle,
    /// When a byte last crossed the session (for `session.idleTimeout`).
    pub(super) activity: Activity,
    /// The bytes the session carried each way (for its audit event).
    pub(super) audit_bytes: crate::audit_log::SessionBytes,
}

/// A session's recording as both pumps see it.
#[derive(Debug)]
enum Recording {
    NotStarted,
    /// Recording; `output` is false for subsystems (sftp is a binary protocol, not a terminal).
    Active {
        recorder: Box<Recorder>,
        output: bool,
        /// Pieces of it going to the store while the session runs.
        live: Option<LiveUpload>,
    },
    /// Not recording (failed where the policy allows it, or finished).
    Off,
}

type SharedRecording = Arc<Mutex<Recording>>;

/// What the target said about its program's end.
#[derive(Debug, Default)]
struct Exit {
    /// The exit status, for the recording and the log.
    status: Mutex<Option<u32>>,
    /// The exit status or signal went to the engineer.
    told: AtomicBool,
}

/// Which pump ended, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pump {
    /// The engineer's side ended (closed, or a refusal).
    ToTarget,
    /// The target's side ended; `closed`: its close was passed on to the engineer.
    ToEngineer { closed: bool },
}

/// After the `first` pump ended, is the other worth waiting for (a few seconds)? Only while the
/// target may still tell the exit status: once the target closed and that went to the engineer,
/// or the status is known, the engineer's answer to a close never comes (russh answers closes
/// itself and drops the peer's answer to its own), and waiting would only hold the session.
fn pump_wait_for_other(first: Option<Pump>, status_known: bool) -> bool {
    match first {
        Some(Pump::ToEngineer { closed: true }) => false,
        _ => !status_known,
    }
}

/// Apply `write` to the recorder; a failure ends recording and, when the policy requires
/// recording, returns the message the session ends with.
fn record(
    recording: &SharedRecording,
    required: bool,
    write: impl FnOnce(&mut Recorder, bool) -> crate::Result<()>,
) -> Result<(), String> {
    let Ok(mut state) = recording.lock() else {
        return Err("recording state poisoned".into());
    };
    let Recording::Active {
        recorder, output, ..
    } = &mut *state
    else {
        return Ok(());
    };
    match write(recorder, *output) {
        Ok(()) => Ok(()),
        Err(error) => {
            // Over budget, the recording stays valid up to its limit: keep it to finish and
            // store; any other failure leaves it to the next start's upload.
            if !matches!(error, crate::Error::SpoolBudget { .. }) {
                *state = Recording::Off;
            }
            if required {
                Err(format!(
                    "recording failed ({error}) and the policy requires recording"
                ))
            } else {
                tracing::warn!(%error, "recording failed; the policy allows going on unrecorded");
                Ok(())
            }
        }
    }
}

pub(super) async fn run_session(
    ctx: SessionContext,
    engineer: Channel<server::Msg>,
    target: Channel<client::Msg>,
    mut ended: watch::Receiver<Option<Refusal>>,
) {
    let id = engineer.id();
    let session_id = new_id();
    let started = Instant::now();
    let metrics = ctx.shared.metrics.clone();
    metrics.sessions_active.inc();
    let (engineer_rx, engineer_tx) = engineer.split();
    let (target_rx, target_tx) = target.split();
    let engineer_tx = Arc::new(engineer_tx);
    let target_tx = Arc::new(target_tx);
    let recording: SharedRecording = Arc::new(Mutex::new(Recording::NotStarted));
    let exit = Arc::new(Exit::default());
    let (fail_tx, mut fail_rx) = mpsc::channel::<String>(2);
    let activity = ctx.activity.clone();
    activity.touch(started);
    let mut pumps = JoinSet::<Pump>::new();
    pumps.spawn(to_target(
        ctx.clone(),
        session_id.clone(),
        engineer_rx,
        target_tx.clone(),
        recording.clone(),
        fail_tx.clone(),
    ));
    pumps.spawn(to_engineer(
        ctx.clone(),
        id,
        target_rx,
        engineer_tx.clone(),
        recording.clone(),
        exit.clone(),
        fail_tx,
    ));
    // The recorder writes on events only; a quiet terminal's last output must still reach the
    // spool soon, or a crash would lose it.
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let termination: Option<(&'static str, String)> = {
        let both_done = async {
            if let Some(first) = pumps.join_next().await {
                // One side closed. russh answers a close itself and then drops the other
                // side's answer, so a pump waiting for it would wait in vain: wait (a moment)
                // only while the target may still tell the exit status.
                if !pump_wait_for_other(first.ok(), exit.told.load(Ordering::Relaxed)) {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), pumps.join_next()).await;
            }
        };
        tokio::pin!(both_done);
        loop {
            tokio::select! {
                _ = &mut both_done => break None,
                refusal = ended.wait_for(Option::is_some) => break refusal
                    .ok()
                    .and_then(|r| r.clone())
                    .map(|r| (r.reason, r.message)),
                Some(message) = fail_rx.recv() => break Some(("recording", message)),
                _ = flush.tick() => {
                    if let Err(message) = record(&recording, ctx.grant.recording_required, |r, _| r.flush()) {
                        break Some(("recording", message));
                    }
                    if let Some(message) = activity.expired(ctx.grant.idle_timeout, Instant::now()) {
                        break Some(("idle", message));
                    }
                }
            }
        }
    };
    if let Some((reason, message)) = &termination {
        metrics
            .sessions_terminated_total
            .with_label_values(&[reason])
            .inc();
        let text = format!("\r\ngatehouse: {message}; session closed\r\n");
        let _ = record(&recording, false, |r, _| r.note(&text));
        let goodbye = async {
            let _ = engineer_tx.extended_data_bytes(1, text.into_bytes()).await;
            let _ = engineer_tx.exit_status(255).await;
            let _ = engineer_tx.eof().await;
            let _ = engineer_tx.close().await;
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), goodbye).await;
        let _ = target_tx.close().await;
        pumps.abort_all();
    }
    let status = exit.status.lock().ok().and_then(|s| *s);
    let state = recording
        .lock()
        .map(|mut s| std::mem::replace(&mut *s, Recording::Off))
        .unwrap_or(Recording::Off);
    if let Recording::Active { recorder, live, .. } = state {
        if let Some(live) = live {
            live.stop().await;
        }
        match (*recorder).finish(status) {
            Ok(spooled) => ctx.shared.recording.queue.submit(spooled),
            Err(error) => {
                tracing::error!(%error, session = %session_id, "finishing the recording failed; its spool stays for the next start")
            }
        }
    }
    metrics.sessions_active.dec();
    tracing::info!(
        session = %session_id,
        connection = %ctx.connection,
        request = %ctx.grant.request,
        requester = %ctx.grant.requester,
        host = %ctx.grant.host.name,
        login = %ctx.grant.login,
        exit_status = status,
        seconds = started.elapsed().as_secs_f64(),
        ended_by = termination.as_ref().map(|t| t.0).unwrap_or("peer"),
        "session ended"
    );
    let ended_by = termination.as_ref().map(|t| t.0).unwrap_or("peer");
    let seconds = started.elapsed().as_secs_f64();
    ctx.shared
        .audit
        .session_ended(
            &ctx.grant,
            &session_id,
            status,
            ended_by,
            &ctx.audit_bytes,
            seconds,
        )
        .await;
}

fn session_meta(
    ctx: &SessionContext,
    session_id: &str,
    kind: SessionKind,
    pty: Option<&(String, u32, u32)>,
) -> SessionMeta {
    let grant = &ctx.grant;
    let kind = record_rule::recorded_kind(kind, grant.force_command.as_deref());
    let record_input = record_rule::records_input(&kind, pty.is_some(), grant.record_input);
    SessionMeta {
        session_id: session_id.to_owned(),
        request_namespace: grant.request.namespace.clone(),
        request_name: grant.request.name.clone(),
        request_uid: grant.request.uid.clone(),
        requester: grant.requester.clone(),
        approvers: grant.approvers.clone(),
        reason: grant.reason.clone(),
        host_group: grant.host_group.clone(),
        host: grant.host.name.clone(),
        login: grant.login.clone(),
        kind,
        start: jiff::Timestamp::now(),
        width: pty.map(|p| p.1).unwrap_or(80),
        height: pty.map(|p| p.2).unwrap_or(24),
        term: pty.map(|p| p.0.clone()),
        record_input,
        sftp_content_bytes: grant.sftp_content_bytes,
    }
}

/// Start recording at the session's shell/exec/subsystem request. Err: refuse the session.
async fn start_recording(
    ctx: &SessionContext,
    recording: &SharedRecording,
    meta: SessionMeta,
) -> Result<(), String> {
    let output = !matches!(meta.kind, SessionKind::Subsystem { .. });
    let kind = match &meta.kind {
        SessionKind::Shell => "shell",
        SessionKind::Exec { .. } => "exec",
        SessionKind::Subsystem { .. } => "subsystem",
    };
    ctx.shared
        .metrics
        .sessions_total
        .with_label_values(&[kind])
        .inc();
    tracing::info!(
        session = %meta.session_id, connection = %ctx.connection, request = %ctx.grant.request,
        requester = %meta.requester, host = %meta.host, login = %meta.login, kind,
        key = %meta.object_key(), "session started"
    );
    // Fail closed: a session the audit trail cannot hold does not start.
    ctx.shared
        .audit
        .session_started(&ctx.grant, &ctx.connection, &meta.session_id, kind)
        .await
        .map_err(|error| format!("cannot write the audit trail ({error}); session refused"))?;
    let status = ctx.shared.status.clone();
    let for_status = meta.clone();
    tokio::spawn(async move {
        if let Err(error) = status.started(&for_status).await {
            tracing::warn!(%error, session = %for_status.session_id, "recording the session start in status failed");
        }
    });
    let settings = &ctx.shared.recording;
    let key = meta.object_key();
    match Recorder::create_within(&settings.spool_dir, meta, settings.budget.clone()) {
        Ok(recorder) => {
            let live = settings.live.start(recorder.cast_path().to_owned(), key);
            if let Ok(mut state) = recording.lock() {
                *state = Recording::Active {
                    recorder: Box::new(recorder),
                    output,
                    live,
                };
            }
            Ok(())
        }
        Err(error) if ctx.grant.recording_required => Err(format!(
            "cannot record this session ({error}) and the policy requires recording"
        )),
        Err(error) => {
            tracing::warn!(%error, "cannot record; the policy allows going on unrecorded");
            Ok(())
        }
    }
}

/// Refuse a session that cannot be recorded. The request was acknowledged (by the handler, see
/// [`replies`]) and the session is ended with the reason on stderr and exit status 255: OpenSSH
/// drops stderr that arrives with a failed request, so a plain failure would hide why.
async fn refuse_unrecorded(fail: &mpsc::Sender<String>, message: String) {
    let _ = fail.send(message).await;
}

async fn to_target(
    ctx: SessionContext,
    session_id: String,
    mut engineer: russh::ChannelReadHalf,
    target: Arc<ChannelWriteHalf<client::Msg>>,
    recording: SharedRecording,
    fail: mpsc::Sender<String>,
) -> Pump {
    let required = ctx.grant.recording_required;
    let activity = ctx.activity.clone();
    let bytes = ctx
        .shared
        .metrics
        .bytes_total
        .with_label_values(&["to_target"]);
    let mut pty: Option<(String, u32, u32)> = None;
    // The handler answered each request; the same decision says what reaches the target.
    let mut state = ChannelState::default();
    let permit_pty = ctx.grant.permits(CertificateExtension::PermitPty);
    let mut granted = |request| replies::decide(request, &mut state, permit_pty) == Reply::Success;
    while let Some(message) = engineer.wait().await {
        let sent = match message {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                if !granted(Request::Pty) {
                    continue;
                }
                pty = Some((term.clone(), col_width, row_height));
                target
                    .request_pty(
                        false,
                        &term,
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                        &terminal_modes,
                    )
                    .await
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => target.set_env(false, variable_name, variable_value).await,
            ChannelMsg::RequestShell { .. }
            | ChannelMsg::Exec { .. }
            | ChannelMsg::RequestSubsystem { .. } => {
                if !granted(Request::Program) {
                    // One program per session channel, as in OpenSSH.
                    continue;
                }
                let kind = match &message {
                    ChannelMsg::Exec { command, .. } => SessionKind::Exec {
                        command: String::from_utf8_lossy(command).into_owned(),
                    },
                    ChannelMsg::RequestSubsystem { name, .. } => {
                        SessionKind::Subsystem { name: name.clone() }
                    }
                    _ => SessionKind::Shell,
                };
                let meta = session_meta(&ctx, &session_id, kind, pty.as_ref());
                if let Err(message) = start_recording(&ctx, &recording, meta).await {
                    refuse_unrecorded(&fail, message).await;
                    break;
                }
                // Only once recording runs does the target start the program.
                match message {
                    ChannelMsg::Exec { command, .. } => target.exec(true, command).await,
                    ChannelMsg::RequestSubsystem { name, .. } => {
                        target.request_subsystem(true, name).await
                    }
                    _ => target.request_shell(true).await,
                }
            }
            ChannelMsg::Data { data } => {
                bytes.inc_by(data.len() as u64);
                ctx.audit_bytes.to_target(data.len());
                activity.touch(Instant::now());
                if let Err(message) = record(&recording, required, |r, _| r.input(&data)) {
                    let _ = fail.send(message).await;
                    break;
                }
                target.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => target.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => target.eof().await,
            ChannelMsg::Close => {
                let _ = target.close().await;
                break;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Err(message) =
                    record(&recording, required, |r, _| r.resize(col_width, row_height))
                {
                    let _ = fail.send(message).await;
                    break;
                }
                target
                    .window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => target.signal(signal).await,
            ChannelMsg::AgentForward { .. } | ChannelMsg::RequestX11 { .. } => {
                // Not bridged (declined by the handler): an agent or X11 display must not reach
                // a recorded host.
                continue;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    Pump::ToTarget
}

async fn to_engineer(
    ctx: SessionContext,
    id: ChannelId,
    mut target: russh::ChannelReadHalf,
    engineer: Arc<ChannelWriteHalf<server::Msg>>,
    recording: SharedRecording,
    exit: Arc<Exit>,
    fail: mpsc::Sender<String>,
) -> Pump {
    let activity = ctx.activity.clone();
    let required = ctx.grant.recording_required;
    let bytes = ctx
        .shared
        .metrics
        .bytes_total
        .with_label_values(&["to_client"]);
    // stdout and stderr both reach the terminal, so both are output in the recording.
    let record_output = |data: &[u8]| {
        bytes.inc_by(data.len() as u64);
        ctx.audit_bytes.to_client(data.len());
        activity.touch(Instant::now());
        record(&recording, required, |r, output| {
            if output {
                r.output(data)
            } else {
                r.subsystem_output(data)
            }
        })
    };
    // The target's EOF is held until its exit status (or close): OpenSSH's client answers an
    // EOF with its close at once when its own input is done, russh answers that close itself
    // and forgets the channel, and an exit status sent after that never reaches the client
    // (which then exits 255). Nothing can follow an EOF but requests and the close.
    let mut eof_held = false;
    let mut ended = Pump::ToEngineer { closed: false };
    while let Some(message) = target.wait().await {
        let sent = match message {
            ChannelMsg::Data { data } => {
                if let Err(message) = record_output(&data) {
                    let _ = fail.send(message).await;
                    break;
                }
                engineer.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if let Err(message) = record_output(&data) {
                    let _ = fail.send(message).await;
                    break;
                }
                engineer.extended_data_bytes(ext, data).await
            }
            ChannelMsg::ExitStatus { exit_status: code } => {
                if let Ok(mut status) = exit.status.lock() {
                    *status = Some(code);
                }
                let sent = engineer.exit_status(code).await;
                exit.told.store(true, Ordering::Relaxed);
                release_eof(&mut eof_held, &engineer, sent).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let _ = ctx
                    .handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
                exit.told.store(true, Ordering::Relaxed);
                release_eof(&mut eof_held, &engineer, Ok(())).await
            }
            ChannelMsg::Eof if exit.told.load(Ordering::Relaxed) => engineer.eof().await,
            ChannelMsg::Eof => {
                eof_held = true;
                Ok(())
            }
            ChannelMsg::Close => {
                let _ = release_eof(&mut eof_held, &engineer, Ok(())).await;
                let _ = engineer.close().await;
                ended = Pump::ToEngineer { closed: true };
                break;
            }
            // The engineer's requests were answered by the handler; the only request sent to
            // the target with want_reply is the program, so a failure here is its refusal.
            ChannelMsg::Success => Ok(()),
            ChannelMsg::Failure => {
                let _ = fail
                    .send("the target refused to start the session's program".to_owned())
                    .await;
                break;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    ended
}

/// Send the EOF [`to_engineer`] held back, after what went before it was sent.
async fn release_eof(
    held: &mut bool,
    engineer: &ChannelWriteHalf<server::Msg>,
    before: Result<(), russh::Error>,
) -> Result<(), russh::Error> {
    before?;
    if std::mem::take(held) {
        engineer.eof().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_pump_is_awaited_only_while_the_exit_status_may_still_come() {
        let closed = Some(Pump::ToEngineer { closed: true });
        let cut = Some(Pump::ToEngineer { closed: false });
        // (first pump, exit status known) → wait for the other
        let cases = [
            (closed, false, false),
            (closed, true, false),
            (cut, false, true),
            (cut, true, false),
            (Some(Pump::ToTarget), false, true),
            (Some(Pump::ToTarget), true, false),
            (None, false, true),
        ];
        for (first, known, want) in cases {
            assert_eq!(pump_wait_for_other(first, known), want, "{first:?} {known}");
        }
    }
}
