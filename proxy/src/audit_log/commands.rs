//! Command lines rebuilt from what the engineer typed (for `command` events with
//! `exact: false`). Pure: the session's to-target pump feeds it the input bytes of a session
//! whose recording keeps input ([`rebuilds_commands`]); it returns each finished line, which
//! the pump hands to [`super::emit_command`]. Best effort, as the shell's own line editing
//! (history, completion, cursor moves) is not replayed: printable characters are appended,
//! backspace/DEL removes one character, Enter (CR or LF) ends a line, escape sequences
//! (`ESC [ … final`, `ESC O x`, `ESC x`) are skipped, Ctrl-C and Ctrl-U drop the line. Bounded:
//! a line keeps at most [`MAX_LINE_BYTES`], a session gives at most its `max_lines`.

use crate::recording::SessionKind;

/// A rebuilt line keeps at most this many bytes (the rest of it is dropped).
pub const MAX_LINE_BYTES: usize = 4096;
/// Rebuilt lines per session at most; later ones are not audited as commands (the recording
/// keeps them).
pub const MAX_LINES_PER_SESSION: usize = 10_000;

const ESC: u8 = 0x1b;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;
const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;

/// Are command lines rebuilt from the input of a session of `kind` (as recorded)? Only where
/// the recording keeps the input (`record_input`, see [`crate::session::record_rule`]), and
/// only where the input is a command stream: a shell (with or without a pty) or a program run
/// at a terminal; never a subsystem, nor an exec's piped stdin (that is data, not commands).
pub fn rebuilds_commands(kind: &SessionKind, pty: bool, record_input: bool) -> bool {
    if !record_input {
        return false;
    }
    match kind {
        SessionKind::Shell => true,
        SessionKind::Exec { .. } => pty,
        SessionKind::Subsystem { .. } => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Not in an escape sequence.
    None,
    /// After ESC.
    Start,
    /// In `ESC [` parameters, until a final byte (0x40..=0x7e).
    Csi,
    /// After `ESC O`: one more byte.
    Ss3,
}

/// Rebuilds typed lines from a stream of input bytes.
#[derive(Debug, Clone)]
pub struct LineRebuilder {
    line: Vec<u8>,
    escape: Escape,
    lines_left: usize,
}

impl LineRebuilder {
    /// A rebuilder that gives at most `max_lines` lines.
    pub fn new(max_lines: usize) -> Self {
        Self {
            line: Vec::new(),
            escape: Escape::None,
            lines_left: max_lines,
        }
    }

    /// Whether the bound on lines was reached (nothing more will be given).
    pub fn exhausted(&self) -> bool {
        self.lines_left == 0
    }

    /// Feed input bytes; returns the lines they finished (empty lines are left out).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        if self.exhausted() {
            return done;
        }
        for &byte in bytes {
            match self.escape {
                Escape::Start => {
                    self.escape = match byte {
                        b'[' => Escape::Csi,
                        b'O' => Escape::Ss3,
                        _ => Escape::None,
                    };
                    continue;
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&byte) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::Ss3 => {
                    self.escape = Escape::None;
                    continue;
                }
                Escape::None => {}
            }
            match byte {
                ESC => self.escape = Escape::Start,
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut self.line);
                    if line.is_empty() {
                        continue;
                    }
                    done.push(String::from_utf8_lossy(&line).into_owned());
                    self.lines_left -= 1;
                    if self.exhausted() {
                        break;
                    }
                }
                BACKSPACE | DEL => self.backspace(),
                CTRL_C | CTRL_U => self.line.clear(),
                byte if byte < 0x20 => {}
                byte => {
                    if self.line.len() < MAX_LINE_BYTES {
                        self.line.push(byte);
                    }
                }
            }
        }
        done
    }

    /// Remove the last character (all of its UTF-8 bytes).
    fn backspace(&mut self) {
        while let Some(byte) = self.line.pop() {
            // A continuation byte (10xxxxxx) belongs to the character before it.
            if byte & 0xc0 != 0x80 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut rebuilder = LineRebuilder::new(MAX_LINES_PER_SESSION);
        chunks.iter().flat_map(|c| rebuilder.push(c)).collect()
    }

    #[test]
    fn typed_input_becomes_the_lines_the_shell_received() {
        // (input chunks, lines)
        let cases: Vec<(Vec<&[u8]>, Vec<&str>)> = vec![
            (vec![b"echo one\r"], vec!["echo one"]),
            (vec![b"echo one\rexit\r"], vec!["echo one", "exit"]),
            (vec![b"e", b"c", b"ho", b" hi\r"], vec!["echo hi"]),
            (vec![b"ls\n"], vec!["ls"]),
            (vec![b"ls\r\n"], vec!["ls"]),
            (vec![b"\r\r\n\r"], vec![]),
            (vec![b"no enter yet"], vec![]),
            (vec![b"lss\x7f -l\r"], vec!["ls -l"]),
            (vec![b"lss\x08\r"], vec!["ls"]),
            (vec![b"\x7f\x7fid\r"], vec!["id"]),
            (vec!["caf\u{e9}\x7fe\r".as_bytes()], vec!["cafe"]),
            (vec!["\u{1f600}\x7fok\r".as_bytes()], vec!["ok"]),
            (vec![b"rm -rf /\x03"], vec![]),
            (vec![b"rm -rf /\x03id\r"], vec!["id"]),
            (vec![b"secret\x15whoami\r"], vec!["whoami"]),
            (vec![b"\x1b[Aup\r"], vec!["up"]),
            (vec![b"ls\x1b[D\x1b[D-\r"], vec!["ls-"]),
            (vec![b"a\x1b[1;5Cb\r"], vec!["ab"]),
            (vec![b"a\x1bOAb\r"], vec!["ab"]),
            (vec![b"a\x1b", b"[", b"3", b"~b\r"], vec!["ab"]),
            (vec![b"a\x1b", b"O", b"Bb\r"], vec!["ab"]),
            (vec![b"a\x1bbc\r"], vec!["ac"]),
            (vec![b"\x1b[200~pasted\x1b[201~\r"], vec!["pasted"]),
            (vec![b"a\tb\x04\r"], vec!["ab"]),
        ];
        for (chunks, want) in cases {
            assert_eq!(lines(&chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn a_line_is_bounded_and_so_are_the_lines_of_a_session() {
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        let got = lines(&[&long, b"\r"]);
        assert_eq!(got, vec!["x".repeat(MAX_LINE_BYTES)]);

        let mut rebuilder = LineRebuilder::new(2);
        assert_eq!(rebuilder.push(b"a\rb\rc\r"), vec!["a", "b"]);
        assert!(rebuilder.exhausted());
        assert!(rebuilder.push(b"d\r").is_empty());
    }

    #[test]
    fn commands_are_rebuilt_only_from_recorded_terminal_or_shell_input() {
        let exec = SessionKind::Exec {
            command: "bash".to_owned(),
        };
        let sftp = SessionKind::Subsystem {
            name: "sftp".to_owned(),
        };
        // (kind, pty, input recorded) → rebuilt
        let cases = [
            (SessionKind::Shell, true, true, true),
            (SessionKind::Shell, true, false, false),
            (SessionKind::Shell, false, true, true),
            (exec.clone(), true, true, true),
            (exec.clone(), true, false, false),
            (exec, false, true, false),
            (sftp.clone(), false, true, false),
            (sftp, true, true, false),
        ];
        for (kind, pty, recorded, want) in cases {
            assert_eq!(
                rebuilds_commands(&kind, pty, recorded),
                want,
                "{kind:?} pty={pty} recorded={recorded}"
            );
        }
    }
}
