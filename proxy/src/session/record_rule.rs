//! What a session channel's recording holds, decided from what the engineer asked for and what
//! the certificate forces. Pure; [`super::channel`] applies it when the program starts.
//!
//! | channel                         | output (`o`) | input (`i`)                      |
//! |---------------------------------|--------------|----------------------------------|
//! | shell or exec with a pty        | yes          | only with `recording.recordInput`|
//! | shell or exec without a pty     | yes          | always: it is the command stream |
//! | subsystem (sftp)                | no (binary)  | no (binary)                      |
//! | anything under `force-command`  | as the forced command (an exec) |               |
//!
//! `recordInput` exists for keystrokes typed at a terminal, where passwords are typed (and not
//! echoed); without a pty the input is the program itself (`printf 'rm -rf …' | ssh host
//! 'bash -s'`), and a recording without it would show only what the script printed.
//!
//! Under a `force-command` certificate `sshd` runs the forced command whatever the client asked
//! for (`ssh -s host sftp` included), so the session is recorded as that command: output and
//! input as an exec.
//!
//! A port forward (`ssh -L`/`-D`/`-W`) carries bytes that are not recorded, so a policy that
//! requires recording refuses it unless it says `recording.allowForwards`; the certificate
//! must grant `permit-port-forwarding` as well ([`forward_refusal`]).

use super::super::recording::SessionKind;

/// The kind the recording names: the forced command when the certificate has one.
pub fn recorded_kind(requested: SessionKind, force_command: Option<&str>) -> SessionKind {
    match force_command {
        Some(command) => SessionKind::Exec {
            command: command.to_owned(),
        },
        None => requested,
    }
}

/// Does the recording of a session of `kind` (as [`recorded_kind`] names it) keep the
/// engineer's input?
pub fn records_input(kind: &SessionKind, pty: bool, policy_record_input: bool) -> bool {
    if pty {
        return policy_record_input;
    }
    match kind {
        SessionKind::Shell | SessionKind::Exec { .. } => true,
        SessionKind::Subsystem { .. } => false,
    }
}

/// Why a port forward is refused, or `None` when it may open. Both rules must allow it: the
/// certificate's `permit-port-forwarding` (what the host enforces too) and, when the policy
/// requires recording, the policy's explicit `recording.allowForwards`.
pub fn forward_refusal(
    permit_port_forwarding: bool,
    recording_required: bool,
    allow_forwards: bool,
) -> Option<&'static str> {
    if !permit_port_forwarding {
        return Some("port forwarding refused: the certificate has no permit-port-forwarding");
    }
    if recording_required && !allow_forwards {
        return Some(
            "port forwarding refused: the policy requires recording (recording.required) and a \
             forward is not recorded; the policy must set recording.allowForwards",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(command: &str) -> SessionKind {
        SessionKind::Exec {
            command: command.to_owned(),
        }
    }

    fn sftp() -> SessionKind {
        SessionKind::Subsystem {
            name: "sftp".to_owned(),
        }
    }

    #[test]
    fn input_is_recorded_unless_typed_at_a_terminal_the_policy_keeps_private() {
        // (kind, pty, recordInput) → input recorded
        let cases = [
            (SessionKind::Shell, true, false, false),
            (SessionKind::Shell, true, true, true),
            (exec("bash -s"), true, false, false),
            (exec("bash -s"), false, false, true),
            (SessionKind::Shell, false, false, true),
            (exec("bash -s"), false, true, true),
            (sftp(), false, false, false),
            (sftp(), false, true, false),
        ];
        for (kind, pty, policy, want) in cases {
            assert_eq!(
                records_input(&kind, pty, policy),
                want,
                "{kind:?} pty={pty} recordInput={policy}"
            );
        }
    }

    #[test]
    fn a_forced_command_is_recorded_as_itself_whatever_was_asked() {
        for asked in [SessionKind::Shell, exec("id"), sftp()] {
            let kind = recorded_kind(asked, Some("/usr/local/bin/backup"));
            assert_eq!(kind, exec("/usr/local/bin/backup"));
            assert!(records_input(&kind, false, false));
        }
        assert_eq!(recorded_kind(sftp(), None), sftp());
    }

    #[test]
    fn a_forward_needs_the_certificate_and_an_explicit_allow_under_required_recording() {
        // (permit-port-forwarding, recording.required, recording.allowForwards) → refused by
        let cases = [
            (false, false, false, Some("permit-port-forwarding")),
            (false, true, true, Some("permit-port-forwarding")),
            (false, false, true, Some("permit-port-forwarding")),
            (true, true, false, Some("recording.allowForwards")),
            (true, true, true, None),
            (true, false, false, None),
            (true, false, true, None),
        ];
        for (permit, required, allow, want) in cases {
            let got = forward_refusal(permit, required, allow);
            match want {
                None => assert_eq!(got, None, "{permit} {required} {allow}"),
                Some(rule) => assert!(
                    got.is_some_and(|m| m.contains(rule)),
                    "{permit} {required} {allow}: {got:?}"
                ),
            }
        }
    }
}
