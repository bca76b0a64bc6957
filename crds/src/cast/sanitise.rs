//! Replay safety: a recording is whatever a (possibly hostile) target printed, and replaying it
//! on an auditor's terminal runs its escape sequences there. A [`Sanitiser`] keeps what draws a
//! screen (text, cursor movement, colours, the usual control characters) and removes what
//! reaches beyond it: OSC (window title, OSC 52 clipboard, OSC 8 hyperlinks, palette queries),
//! DCS (DECRQSS, sixel, tmux passthrough), APC, PM, SOS and screen's `ESC k` title strings, the
//! C1 forms of all of these, and every CSI or escape sequence that makes the terminal answer,
//! resize itself, report the mouse or change how it decodes bytes, or that carries a count no
//! screen needs (more than 9999); and bidi overrides, which make text read unlike its bytes.
//!
//! It works by allowlist: what it emits is only printable characters, the C0 controls that
//! move the cursor (BEL, BS, HT, LF, VT, FF, CR, SO, SI) and *complete* sequences that
//! [`csi_is_safe`] or [`escape_is_safe`] accept. A sequence is held back until its final
//! character arrives, so it never leaves half-written, and state carries across calls: a string
//! that starts in one `o` event and ends in the next is dropped whole, and whatever is still
//! open when the stream ends is dropped. Pure; memory is bounded (a held-back sequence is at
//! most [`MAX_SEQUENCE`] characters; string bodies are skipped, never stored).

/// The longest CSI or escape sequence held back; a longer one is dropped to its final byte.
pub const MAX_SEQUENCE: usize = 64;

const ESC: char = '\u{1b}';
/// CAN and SUB abort any sequence or string.
const CAN: char = '\u{18}';
const SUB: char = '\u{1a}';

/// Where the parser is between two characters (and between two events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// Plain text.
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// ESC and intermediates (0x20–0x2F), held back until the final byte.
    EscapeIntermediate(String),
    /// A CSI sequence (kept in its 7-bit form `ESC [ …`), held back until the final byte.
    Csi(String),
    /// An over-long CSI sequence, skipped to its final byte.
    CsiDiscard,
    /// An over-long escape sequence, skipped to its final byte.
    EscapeDiscard,
    /// Inside an OSC, DCS, SOS, PM, APC or `ESC k` string; `escape` after an ESC in it.
    String {
        /// The previous character was ESC (`ESC \` ends the string).
        escape: bool,
        /// Characters dropped so far (bounded by [`MAX_STRING_BODY`]).
        body: usize,
    },
}

/// A stateful filter for one stream of terminal output (one per stream: `o` and `i` events
/// each get their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sanitiser {
    state: State,
}

impl Sanitiser {
    /// A filter at plain text.
    pub fn new() -> Self {
        Self::default()
    }

    /// What of `text` may reach a terminal, given what came before it.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            self.step(c, &mut out);
        }
        out
    }

    /// The stream ended: drop whatever sequence or string is still open. Returns whether
    /// something was open (a truncated or hostile recording).
    pub fn finish(&mut self) -> bool {
        std::mem::take(&mut self.state) != State::Ground
    }

    fn step(&mut self, c: char, out: &mut String) {
        self.state = match std::mem::take(&mut self.state) {
            State::Ground => ground(c, out),
            State::Escape => after_escape(c, out),
            State::EscapeIntermediate(mut sequence) => match c {
                '\u{20}'..='\u{2f}' if sequence.len() < MAX_SEQUENCE => {
                    sequence.push(c);
                    State::EscapeIntermediate(sequence)
                }
                '\u{20}'..='\u{2f}' => State::EscapeDiscard,
                '\u{30}'..='\u{7e}' => {
                    sequence.push(c);
                    if escape_is_safe(&sequence) {
                        out.push_str(&sequence);
                    }
                    State::Ground
                }
                _ => interrupted(c, out),
            },
            State::Csi(mut sequence) => match c {
                '\u{20}'..='\u{3f}' if sequence.len() < MAX_SEQUENCE => {
                    sequence.push(c);
                    State::Csi(sequence)
                }
                '\u{20}'..='\u{3f}' => State::CsiDiscard,
                '\u{40}'..='\u{7e}' => {
                    if csi_is_safe(sequence.trim_start_matches("\u{1b}["), c) {
                        out.push_str(&sequence);
                        out.push(c);
                    }
                    State::Ground
                }
                _ => interrupted(c, out),
            },
            State::CsiDiscard => match c {
                '\u{20}'..='\u{3f}' => State::CsiDiscard,
                '\u{40}'..='\u{7e}' => State::Ground,
                _ => interrupted(c, out),
            },
            State::EscapeDiscard => match c {
                '\u{20}'..='\u{2f}' => State::EscapeDiscard,
                '\u{30}'..='\u{7e}' => State::Ground,
                _ => interrupted(c, out),
            },
            State::String { escape: true, .. } => match c {
                // ESC \ is the string terminator.
                '\\' => State::Ground,
                // Any other ESC ends the string and starts a new sequence, as in terminals.
                _ => after_escape(c, out),
            },
            State::String {
                escape: false,
                body,
            } => match c {
                '\u{7}' | '\u{9c}' | CAN | SUB => State::Ground,
                ESC => State::String { escape: true, body },
                // A line end or an over-long body ends the drop, visibly: terminals that do
                // not know the introducer (`ESC k` in xterm, C1 in UTF-8) showed this text live,
                // so hiding it until the next terminator could hide what the engineer saw.
                '\n' => {
                    out.push_str(&hidden_marker(body));
                    out.push('\n');
                    State::Ground
                }
                _ if body + 1 >= MAX_STRING_BODY => {
                    out.push_str(&hidden_marker(body + 1));
                    State::Ground
                }
                _ => State::String {
                    escape: false,
                    body: body + 1,
                },
            },
        };
    }
}

/// `text` without escape sequences that act beyond the screen, as one stream (anything left
/// open at its end is dropped).
pub fn sanitise_for_replay(text: &str) -> String {
    Sanitiser::new().push(text)
}

/// `text` with every control character removed (C0, DEL, C1, and so every escape sequence's
/// introducer): for one-line fields such as a header's title or a requester's name.
pub fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Characters of one control string dropped before the rest shows as text.
const MAX_STRING_BODY: usize = 4096;

/// What replaces a control string that did not end as one does (at a line end, or past
/// [`MAX_STRING_BODY`]).
fn hidden_marker(chars: usize) -> String {
    format!("[gatehouse: {chars} characters of an unterminated control string hidden]")
}

/// A character in plain text.
fn ground(c: char, out: &mut String) -> State {
    match c {
        ESC => State::Escape,
        // C1 CSI: judged like ESC [ and emitted in that 7-bit form.
        '\u{9b}' => State::Csi("\u{1b}[".to_owned()),
        // C1 DCS, SOS, OSC, PM, APC.
        '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => State::String {
            escape: false,
            body: 0,
        },
        // The other C1 controls (IND, NEL, SS2, ST, …): dropped.
        '\u{80}'..='\u{9f}' => State::Ground,
        // C0 controls that move the cursor, ring the bell or shift the character set.
        '\u{7}' | '\u{8}' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{e}' | '\u{f}' => {
            out.push(c);
            State::Ground
        }
        // The other C0 controls: ENQ makes a terminal send its answerback; none draws.
        '\u{0}'..='\u{1f}' => State::Ground,
        // Bidi embeddings, overrides and isolates: text that reads differently from its bytes
        // (the auditor would see `exe.txt` for `txt.exe`). Marks and joiners stay.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => State::Ground,
        _ => {
            out.push(c);
            State::Ground
        }
    }
}

/// The character after an ESC.
fn after_escape(c: char, out: &mut String) -> State {
    match c {
        '[' => State::Csi("\u{1b}[".to_owned()),
        // OSC, DCS, SOS, PM, APC, and screen/tmux's `ESC k title ESC \`.
        ']' | 'P' | 'X' | '^' | '_' | 'k' => State::String {
            escape: false,
            body: 0,
        },
        '\u{20}'..='\u{2f}' => State::EscapeIntermediate(format!("{ESC}{c}")),
        '\u{30}'..='\u{7e}' => {
            let sequence = format!("{ESC}{c}");
            if escape_is_safe(&sequence) {
                out.push_str(&sequence);
            }
            State::Ground
        }
        _ => interrupted(c, out),
    }
}

/// A character that is not part of the sequence in progress: the sequence is dropped (it was
/// never emitted) and `c` is read afresh (ESC starts a new one, CAN and SUB only cancel).
fn interrupted(c: char, out: &mut String) -> State {
    match c {
        CAN | SUB => State::Ground,
        _ => ground(c, out),
    }
}

/// Escape sequences (other than CSI and strings) that only draw: save/restore cursor, keypad
/// modes, index/reverse index/next line, tab set, single shifts, reset, character set
/// designation (`ESC ( B`) and DEC line sizes (`ESC # 3` … `ESC # 8`). Not DECID (`ESC Z`, the
/// terminal answers), not `ESC % …` (leaves UTF-8), not 7/8-bit control switches.
fn escape_is_safe(sequence: &str) -> bool {
    let body: Vec<char> = sequence.chars().skip(1).collect();
    matches!(
        body.as_slice(),
        ['7' | '8' | '=' | '>' | 'D' | 'E' | 'H' | 'M' | 'N' | 'O' | 'c']
            | ['(' | ')' | '*' | '+', '0'..='~']
            | ['#', '3'..='8']
    )
}

/// DEC private modes (`CSI ? n h/l`) that change only the screen or keys: cursor keys, reverse
/// video, origin, autowrap, autorepeat, cursor blink and visibility, reverse wrap, keypad,
/// the alternate screen, bracketed paste, synchronised output. Mouse, focus and resize
/// reporting modes are absent on purpose.
const SCREEN_MODES: &[&str] = &[
    "1", "4", "5", "6", "7", "8", "12", "25", "45", "47", "66", "1047", "1048", "1049", "2004",
    "2026",
];

/// Digits a CSI parameter may have (values up to 9999).
const MAX_PARAMETER_DIGITS: usize = 4;

/// CSI sequences (`body` is what follows `ESC [` up to, not including, `final_byte`) that only
/// draw: cursor movement, erase, insert/delete, scroll, tab stops, colours and attributes
/// (SGR), margins, save/restore cursor, cursor style, and the screen-only modes. Not device
/// status or attribute queries (`n`, `c`), window operations and title reports (`t`), mode
/// reports (`$ p`), checksum reports (`* y`), or any private form (`?`, `>`, `=`, `<`) other
/// than the screen modes.
pub fn csi_is_safe(body: &str, final_byte: char) -> bool {
    let (private, rest) = match body.chars().next() {
        Some(p @ ('<' | '=' | '>' | '?')) => (Some(p), &body[1..]),
        _ => (None, body),
    };
    let params_end = rest
        .find(|c: char| ('\u{20}'..='\u{2f}').contains(&c))
        .unwrap_or(rest.len());
    let (params, intermediates) = rest.split_at(params_end);
    if !params
        .chars()
        .all(|c| c.is_ascii_digit() || c == ';' || c == ':')
        || !intermediates
            .chars()
            .all(|c| ('\u{20}'..='\u{2f}').contains(&c))
    {
        return false;
    }
    // Screens are far smaller than 10,000 cells: a bigger count (`CSI 99999999 b` repeats a
    // character that often) only makes the auditor's terminal work.
    if params
        .split([';', ':'])
        .any(|p| p.len() > MAX_PARAMETER_DIGITS)
    {
        return false;
    }
    let count = params.split(';').count();
    match (private, intermediates, final_byte) {
        (
            None,
            "",
            'A'..='H'
            | 'I'
            | 'J'
            | 'K'
            | 'L'
            | 'M'
            | 'P'
            | 'X'
            | 'Z'
            | '@'
            | '`'
            | 'a'
            | 'b'
            | 'd'
            | 'e'
            | 'f'
            | 'g'
            | 'm'
            | 'r'
            | 's'
            | 'u',
        ) => true,
        // Scroll up/down; five-parameter `CSI … T` is xterm's mouse highlight tracking.
        (None, "", 'S' | 'T') => count == 1,
        // Insert and newline modes.
        (None, "", 'h' | 'l') => params.split(';').all(|mode| mode == "4" || mode == "20"),
        (Some('?'), "", 'h' | 'l') => params.split(';').all(|mode| SCREEN_MODES.contains(&mode)),
        // Selective erase.
        (Some('?'), "", 'J' | 'K') => true,
        // Cursor style (DECSCUSR).
        (None, " ", 'q') => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile and harmless inputs, each as one stream, and what may reach the terminal.
    #[test]
    fn hostile_sequences_go_and_drawing_stays() {
        let cases: &[(&str, &str, &str)] = &[
            // Titles.
            ("OSC 0 title, BEL", "a\u{1b}]0;pwned\u{7}b", "ab"),
            (
                "OSC 2 title, ST",
                "\u{1b}]2;pwned\u{1b}\\prompt$ ",
                "prompt$ ",
            ),
            ("OSC 0 title, C1 ST", "a\u{1b}]0;pwned\u{9c}b", "ab"),
            ("C1 OSC title, BEL", "x\u{9d}0;title\u{7}y", "xy"),
            ("screen title ESC k", "x\u{1b}kevil\u{1b}\\y", "xy"),
            // OSC 52 clipboard writes and queries.
            ("OSC 52, BEL", "a\u{1b}]52;c;cm0gLXJmIH4=\u{7}b", "ab"),
            ("OSC 52, ST", "a\u{1b}]52;c;cm0gLXJmIH4=\u{1b}\\b", "ab"),
            ("OSC 52, C1 OSC and C1 ST", "a\u{9d}52;c;cm0=\u{9c}b", "ab"),
            ("OSC 52 query", "a\u{1b}]52;c;?\u{7}b", "ab"),
            // Hyperlinks, colours.
            (
                "OSC 8 hyperlink",
                "\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\",
                "link",
            ),
            ("OSC 4 palette query", "a\u{1b}]4;1;?\u{7}b", "ab"),
            ("OSC 11 background query", "a\u{1b}]11;?\u{1b}\\b", "ab"),
            // DCS, APC, PM, SOS and their C1 forms.
            ("DCS DECRQSS", "x\u{1b}P$q\"p\u{1b}\\y", "xy"),
            (
                "DCS tmux passthrough",
                "x\u{1b}Ptmux;\u{1b}\u{1b}]52;c;AA\u{7}\u{1b}\\y",
                "xy",
            ),
            ("APC", "x\u{1b}_apc\u{1b}\\y", "xy"),
            ("PM", "x\u{1b}^pm\u{1b}\\y", "xy"),
            ("SOS", "x\u{1b}Xsos\u{1b}\\y", "xy"),
            ("C1 DCS", "x\u{90}1$r\u{9c}y", "xy"),
            (
                "C1 APC, PM, SOS",
                "x\u{9f}a\u{9c}\u{9e}b\u{9c}\u{98}c\u{9c}y",
                "xy",
            ),
            ("CAN aborts a string", "x\u{1b}]0;t\u{18}y", "xy"),
            // An ESC inside a string ends it and starts a new sequence, as in terminals.
            (
                "ESC in a string",
                "x\u{1b}]0;t\u{1b}[1mbold",
                "x\u{1b}[1mbold",
            ),
            // CSI queries and window operations.
            ("DSR cursor report", "\u{1b}[6nok", "ok"),
            ("DSR status", "\u{1b}[5nok", "ok"),
            ("private DSR", "\u{1b}[?6nok", "ok"),
            ("DA1", "\u{1b}[cok", "ok"),
            ("DA2", "\u{1b}[>cok", "ok"),
            ("DA3", "\u{1b}[=cok", "ok"),
            ("XTVERSION", "\u{1b}[>0qok", "ok"),
            ("title report CSI 21 t", "\u{1b}[21tok", "ok"),
            ("icon label report CSI 20 t", "\u{1b}[20tok", "ok"),
            ("window resize", "\u{1b}[8;100;200tok", "ok"),
            ("title stack push", "\u{1b}[22;0tok", "ok"),
            ("DECRQM mode report", "\u{1b}[?2004$pok", "ok"),
            ("DECRQCRA checksum", "\u{1b}[1;1;1;1;1;1*yok", "ok"),
            ("XTQMODKEYS query", "\u{1b}[?4mok", "ok"),
            ("XTSMGRAPHICS query", "\u{1b}[?1;1;0Sok", "ok"),
            ("mouse highlight tracking", "\u{1b}[1;1;1;1;1Tok", "ok"),
            ("C1 CSI query", "\u{9b}6nok", "ok"),
            ("C1 CSI drawing becomes 7-bit", "\u{9b}1mok", "\u{1b}[1mok"),
            // Reporting modes, alone or hidden among screen modes.
            ("mouse reporting", "\u{1b}[?1000hok", "ok"),
            ("X10 mouse", "\u{1b}[?9hok", "ok"),
            ("focus reporting", "\u{1b}[?1004hok", "ok"),
            ("mouse after a screen mode", "\u{1b}[?25;1000hok", "ok"),
            ("in-band resize reports", "\u{1b}[?2048hok", "ok"),
            ("send/receive mode", "\u{1b}[12lok", "ok"),
            // Other escapes that answer or re-decode.
            ("DECID", "\u{1b}Zok", "ok"),
            ("leave UTF-8", "\u{1b}%@ok", "ok"),
            ("8-bit controls", "\u{1b} Gok", "ok"),
            ("ENQ answerback", "a\u{5}b", "ab"),
            ("NUL and other C0", "a\u{0}\u{1}\u{1f}b", "ab"),
            ("other C1 controls", "a\u{84}\u{85}\u{8e}b", "ab"),
            // Unterminated at the end of the stream: swallowed, never emitted.
            ("unterminated OSC 52", "ok\u{1b}]52;c;AAAA", "ok"),
            ("unterminated DCS", "ok\u{1b}P1$r", "ok"),
            ("unterminated CSI", "ok\u{1b}[1;3", "ok"),
            ("lone ESC", "ok\u{1b}", "ok"),
            ("C0 interrupts a CSI", "a\u{1b}[1\nb", "a\nb"),
            (
                "over-long CSI dropped whole",
                &format!("a\u{1b}[{}mb", "1;".repeat(100)),
                "ab",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(sanitise_for_replay(input), *want, "{name}: {input:?}");
        }
    }

    #[test]
    fn drawing_passes_unchanged() {
        let drawing = "\u{1b}[1;31mred\u{1b}[0m\r\n\u{1b}[2J\u{1b}[H\u{1b}[?25l\u{1b}[?2004h\
                       \u{1b}7\u{1b}8\ttab é \u{1b}(0qqq\u{1b}(B\u{1b}[?1049h\u{1b}[3;20r\
                       \u{1b}[38;5;196m\u{1b}[38:2::1:2:3m\u{1b}[2 q\u{1b}[K\u{1b}[10;5H\u{7}\u{8}\
                       \u{1b}M\u{1b}=\u{1b}>\u{1b}#8日本";
        assert_eq!(sanitise_for_replay(drawing), drawing);
    }

    /// A sequence split across events (one `push` each) is judged whole: it must not slip
    /// through because each half alone looks harmless.
    #[test]
    fn sequences_split_across_events_are_judged_whole() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "OSC 52 split in its body",
                &["mar\u{1b}]52;c;cm0", "gLXJm\u{7}ker"],
                "marker",
            ),
            (
                "split after ESC",
                &["mar\u{1b}", "]2;title\u{7}ker"],
                "marker",
            ),
            (
                "split after ESC ]",
                &["mar\u{1b}]", "0;t\u{1b}\\ker"],
                "marker",
            ),
            (
                "split inside ESC \\",
                &["mar\u{1b}]0;t\u{1b}", "\\ker"],
                "marker",
            ),
            ("split C1 OSC", &["mar\u{9d}52;c;", "AA\u{9c}ker"], "marker"),
            (
                "DCS over three events",
                &["a\u{1b}P", "$q", "m\u{1b}\\b"],
                "ab",
            ),
            ("CSI query split", &["a\u{1b}[", "6", "nb"], "ab"),
            ("title report split", &["a\u{1b}[2", "1tb"], "ab"),
            ("colour split stays", &["a\u{1b}[3", "1mb"], "a\u{1b}[31mb"),
            ("escape split stays", &["a\u{1b}", "7b"], "a\u{1b}7b"),
            ("charset split stays", &["a\u{1b}(", "Bb"], "a\u{1b}(Bb"),
        ];
        for (name, events, want) in cases {
            let mut sanitiser = Sanitiser::new();
            let got: String = events.iter().map(|e| sanitiser.push(e)).collect();
            assert_eq!(got, *want, "{name}: {events:?}");
            assert!(!sanitiser.finish(), "{name}: left open");
        }
    }

    #[test]
    fn what_is_open_at_the_end_is_dropped_and_reported() {
        let mut sanitiser = Sanitiser::new();
        assert_eq!(sanitiser.push("ok\u{1b}]52;c;AAAA"), "ok");
        assert!(sanitiser.finish());
        // Finished means back at plain text.
        assert_eq!(sanitiser.push("next"), "next");
        assert!(!sanitiser.finish());
    }

    #[test]
    fn bidi_overrides_and_isolates_go_and_marks_stay() {
        let cases = [
            ("RLO", "invoice\u{202e}fdp.exe", "invoicefdp.exe"),
            ("isolates", "a\u{2066}b\u{2069}c\u{2067}d\u{2068}e", "abcde"),
            ("embeddings and PDF", "\u{202a}x\u{202b}y\u{202c}", "xy"),
            (
                "marks and joiners stay",
                "a\u{200e}b\u{200d}c",
                "a\u{200e}b\u{200d}c",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(sanitise_for_replay(input), want, "{name}");
        }
    }

    #[test]
    fn printable_keeps_no_control_character() {
        assert_eq!(printable("a\u{1b}]0;t\u{7}b\r\n\u{9d}c\u{7f}é"), "a]0;tbcé");
    }

    #[test]
    fn csi_allowlist() {
        let cases = [
            ("1;31", 'm', true),
            ("", 'H', true),
            ("?25", 'l', true),
            ("?1049;25", 'h', true),
            ("?", 'h', false),
            ("?1000", 'h', false),
            ("4", 'h', true),
            ("4;12", 'h', false),
            ("6", 'n', false),
            ("21", 't', false),
            ("1 ", 'q', true),
            ("1$", 'p', false),
            ("1?2", 'm', false),
            (">1", 'm', false),
            ("2", 'S', true),
            // Counts: up to 9999, not more (REP, insert, cursor moves).
            ("9999", 'b', true),
            ("99999999", 'b', false),
            ("1;10000", 'H', false),
            ("38;2;255;0;0", 'm', true),
        ];
        for (body, final_byte, want) in cases {
            assert_eq!(csi_is_safe(body, final_byte), want, "{body:?} {final_byte}");
        }
    }

    #[test]
    fn an_unterminated_control_string_hides_at_most_a_line_and_says_so() {
        let long = format!("\u{1b}]52;c;{}tail", "A".repeat(5000));
        let cases: [(&str, String); 4] = [
            // Terminated normally: silent.
            ("\u{1b}]2;title\u{7}text", "text".to_owned()),
            // `ESC k` (unknown to xterm, so the engineer saw this line): hidden only to the
            // line end, and marked.
            ("\u{1b}ksecret\nnext", format!("{}\nnext", hidden_marker(6))),
            // C1 OSC (ignored by many UTF-8 terminals): the same.
            ("\u{9d}abc\nok", format!("{}\nok", hidden_marker(3))),
            // Past the bound the rest is text (the opener is gone, so nothing runs).
            (
                long.as_str(),
                format!(
                    "{}{}tail",
                    hidden_marker(MAX_STRING_BODY),
                    "A".repeat(5000 + 5 - MAX_STRING_BODY)
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(sanitise_for_replay(input), want, "{input:.40?}");
        }
    }
}
