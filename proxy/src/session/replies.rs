//! How the proxy answers an engineer's channel requests, decided exactly as OpenSSH's `sshd`
//! does. Pure: the russh handler ([`crate::server`]) calls [`decide`] for each request as it
//! arrives and replies at once (russh sends the reply only when the request had `want_reply`,
//! so every request gets at most one reply, in order); the session pump
//! ([`super::channel`]) calls the same function on its own copy of the state to know what to
//! pass on to the target.
//!
//! Why the handler and not the pump: a reply sent later from another task is matched by russh
//! against whatever request arrived last, so a declined `auth-agent-req` (sent by `ssh -A`
//! without `want_reply`) used to answer the next `exec` with a failure (`exec request failed on
//! channel 0`), and a declined `pty-req` never reached the client, which stayed in raw mode.
//!
//! The rules (OpenSSH `session.c`):
//! - `pty-req`: granted once per channel, before the program, when the certificate has
//!   `permit-pty`; otherwise declined and the session runs without a pty.
//! - `shell`, `exec`, `subsystem`: one program per channel; later ones are declined.
//! - `auth-agent-req@openssh.com`, `x11-req`: declined (an agent or display must not reach a
//!   recorded host). russh itself declines agent requests.
//! - `env`, `window-change`, `signal`: passed on to the target, acknowledged.
//!
//! Session channels per connection are capped at [`MAX_SESSIONS`] (`sshd`'s `MaxSessions`),
//! counted from the open to the close ([`SessionSlots`]), as sshd counts them.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use russh::ChannelId;

/// Session channels one connection may have open at once (OpenSSH's default `MaxSessions`).
pub const MAX_SESSIONS: usize = 10;

/// A channel request, as far as replying to it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `pty-req`.
    Pty,
    /// `x11-req`.
    X11,
    /// `auth-agent-req@openssh.com`.
    Agent,
    /// `env`.
    Env,
    /// `shell`, `exec` or `subsystem`.
    Program,
    /// `window-change`.
    WindowChange,
    /// `signal`.
    Signal,
}

/// What happened on one session channel so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelState {
    /// A pty was granted.
    pub pty: bool,
    /// A shell, exec or subsystem was started.
    pub started: bool,
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Granted: pass it on to the target.
    Success,
    /// Declined: do not pass it on.
    Failure,
}

/// Decide `request` on a channel in `state` (updated) for a certificate that may or may not
/// allocate a pty.
pub fn decide(request: Request, state: &mut ChannelState, permit_pty: bool) -> Reply {
    match request {
        Request::Pty if permit_pty && !state.pty && !state.started => {
            state.pty = true;
            Reply::Success
        }
        Request::Program if !state.started => {
            state.started = true;
            Reply::Success
        }
        Request::Env | Request::WindowChange | Request::Signal => Reply::Success,
        Request::Pty | Request::Program | Request::X11 | Request::Agent => Reply::Failure,
    }
}

/// May the connection open another session channel with `open` already open?
pub fn may_open_session(open: usize) -> bool {
    open < MAX_SESSIONS
}

/// The session channels a connection has open: taken by the handler when one opens, given back
/// when the client closes it first, when its session task ends, or when the connection task
/// rejects the open.
#[derive(Debug, Clone, Default)]
pub struct SessionSlots(Arc<Mutex<HashSet<ChannelId>>>);

impl SessionSlots {
    /// Take a slot for `channel`; false when [`MAX_SESSIONS`] are taken.
    pub fn try_open(&self, channel: ChannelId) -> bool {
        let Ok(mut open) = self.0.lock() else {
            return false;
        };
        if !may_open_session(open.len()) {
            return false;
        }
        open.insert(channel);
        true
    }

    /// Give `channel`'s slot back (nothing when it holds none).
    pub fn close(&self, channel: ChannelId) {
        if let Ok(mut open) = self.0.lock() {
            open.remove(&channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Reply::*, Request::*, *};

    fn run(requests: &[Request], permit_pty: bool) -> Vec<Reply> {
        let mut state = ChannelState::default();
        requests
            .iter()
            .map(|r| decide(*r, &mut state, permit_pty))
            .collect()
    }

    #[test]
    fn requests_are_answered_like_sshd() {
        let cases: &[(&str, &[Request], bool, &[Reply])] = &[
            (
                "ssh -A host cmd",
                &[Agent, Env, Program],
                true,
                &[Failure, Success, Success],
            ),
            (
                "ssh -tt with permit-pty",
                &[Pty, Env, Program, WindowChange],
                true,
                &[Success, Success, Success, Success],
            ),
            (
                "ssh -tt without permit-pty: runs without a pty",
                &[Pty, Program],
                false,
                &[Failure, Success],
            ),
            (
                "ssh -X -A -tt",
                &[X11, Agent, Pty, Program],
                true,
                &[Failure, Failure, Success, Success],
            ),
            (
                "second pty",
                &[Pty, Pty, Program],
                true,
                &[Success, Failure, Success],
            ),
            (
                "pty after the program",
                &[Program, Pty],
                true,
                &[Success, Failure],
            ),
            (
                "one program per channel",
                &[Program, Program, Signal],
                true,
                &[Success, Failure, Success],
            ),
        ];
        for (name, requests, permit_pty, want) in cases {
            assert_eq!(run(requests, *permit_pty), *want, "{name}");
        }
    }

    #[test]
    fn ten_sessions_per_connection() {
        assert!(may_open_session(0));
        assert!(may_open_session(9));
        assert!(!may_open_session(10));
    }
}
