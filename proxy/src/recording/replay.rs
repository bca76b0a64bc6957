//! Replay safety: a recording is whatever a (possibly hostile) target printed, and replaying it
//! on an auditor's terminal runs its escape sequences there. [`sanitise_for_replay`] keeps what
//! draws a screen (text, CSI cursor and colour sequences, the usual control characters) and
//! removes what reaches beyond it: OSC (window title, OSC 52 clipboard, hyperlinks, colour
//! palette queries), DCS (DECRQSS replies, sixel, tmux passthrough), APC, PM and SOS strings, the
//! C1 forms of all of these, and CSI sequences that make the terminal answer or resize itself.
//! Pure; for replay paths that print a cast's `o` event data.

/// `text` without escape sequences that act beyond the screen.
pub fn sanitise_for_replay(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek().copied() {
                // OSC, DCS, SOS, PM, APC: drop up to the string terminator (BEL or ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    skip_string(&mut chars);
                }
                Some('[') => {
                    chars.next();
                    let mut sequence = String::from("\u{1b}[");
                    let mut last = None;
                    for next in chars.by_ref() {
                        sequence.push(next);
                        if ('\u{40}'..='\u{7e}').contains(&next) {
                            last = Some(next);
                            break;
                        }
                    }
                    if let Some(final_byte) = last
                        && csi_is_safe(&sequence, final_byte)
                    {
                        out.push_str(&sequence);
                    }
                }
                Some(next) => {
                    // Two-character escapes (charset selection, keypad modes, save/restore
                    // cursor) stay.
                    chars.next();
                    out.push('\u{1b}');
                    out.push(next);
                }
                None => {}
            },
            // C1 forms of OSC, DCS, SOS, PM, APC.
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            // C1 CSI: dropped with its sequence (players rarely expect it; nothing needs it).
            '\u{9b}' => {
                for next in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&next) {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Skip a control string's body and its terminator (BEL, ESC \ or C1 ST).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// CSI sequences that only draw: not device reports (`n`, `c`), window operations (`t`),
/// or mode changes that turn on mouse/focus reporting, bracketed-paste tricks aside (`h`/`l`
/// with `?`-private modes 1000–1016 and 1004).
fn csi_is_safe(sequence: &str, final_byte: char) -> bool {
    match final_byte {
        'n' | 'c' | 't' | 'q' | 'p' | 'x' => false,
        'h' | 'l' => {
            let params = sequence.trim_start_matches("\u{1b}[");
            let reporting = [
                "?1000", "?1001", "?1002", "?1003", "?1004", "?1005", "?1006", "?1015", "?1016",
            ];
            !reporting.iter().any(|mode| params.starts_with(mode))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_sequences_go_and_drawing_stays() {
        let cases = [
            // OSC 52: write the auditor's clipboard.
            ("a\u{1b}]52;c;cm0gLXJmIH4=\u{7}b", "ab"),
            // Window title, ST-terminated.
            ("\u{1b}]0;pwned\u{1b}\\prompt$ ", "prompt$ "),
            // Hyperlink.
            ("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\", "link"),
            // DCS (DECRQSS) and APC, PM, SOS.
            ("x\u{1b}P$q\"p\u{1b}\\y", "xy"),
            (
                "x\u{1b}_apc\u{1b}\\\u{1b}^pm\u{1b}\\\u{1b}Xsos\u{1b}\\y",
                "xy",
            ),
            // C1 OSC.
            ("x\u{9d}0;title\u{7}y", "xy"),
            // Device status report and window resize make the terminal answer or act.
            ("\u{1b}[6n\u{1b}[8;100;200tok", "ok"),
            // Mouse reporting on.
            ("\u{1b}[?1000hok", "ok"),
            // Unterminated OSC swallows the rest rather than reach the terminal.
            ("ok\u{1b}]52;c;AAAA", "ok"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitise_for_replay(input), want, "{input:?}");
        }
        let drawing = "\u{1b}[1;31mred\u{1b}[0m\r\n\u{1b}[2J\u{1b}[H\u{1b}[?25l\u{1b}[?2004h\u{1b}7\u{1b}8\ttab é";
        assert_eq!(sanitise_for_replay(drawing), drawing);
    }
}
