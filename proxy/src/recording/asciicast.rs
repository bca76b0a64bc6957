//! asciinema v2 lines (<https://docs.asciinema.org/manual/asciicast/v2/>). Data comes from a
//! [`SessionMeta`] (the header) and raw terminal bytes from the session (events); it goes out
//! as newline-free JSON text lines that the [`spool`](super::spool) writes to disk.

use std::{io::Write, time::Duration};

use serde_json::{Map, Value, json};

use super::SessionMeta;

/// The header line: version, size, start time, `TERM`, a title and Gatehouse's own metadata
/// under `"gatehouse"` (players ignore unknown keys). No trailing newline.
pub fn header_line(meta: &SessionMeta) -> String {
    let mut header = Map::new();
    header.insert("version".to_owned(), json!(2));
    header.insert("width".to_owned(), json!(meta.width));
    header.insert("height".to_owned(), json!(meta.height));
    header.insert("timestamp".to_owned(), json!(meta.start.as_second()));
    // SHELL is the target's business and unknown to the proxy, so only TERM goes in.
    if let Some(term) = &meta.term {
        header.insert("env".to_owned(), json!({ "TERM": term }));
    }
    header.insert(
        "title".to_owned(),
        json!(format!(
            "{} → {}@{} ({}/{})",
            meta.requester, meta.login, meta.host, meta.request_namespace, meta.request_name
        )),
    );
    header.insert(
        "gatehouse".to_owned(),
        json!({
            "requestNamespace": meta.request_namespace,
            "requestName": meta.request_name,
            "requestUid": meta.request_uid,
            "requester": meta.requester,
            "approvers": meta.approvers,
            "reason": meta.reason,
            "hostGroup": meta.host_group,
            "host": meta.host,
            "login": meta.login,
            "sessionId": meta.session_id,
            "kind": meta.kind,
        }),
    );
    Value::Object(header).to_string()
}

/// One event line `[seconds, code, data]`, seconds with microsecond precision. `code` is `"o"`
/// (output), `"i"` (input) or `"r"` (resize, data `"{w}x{h}"`). No trailing newline.
pub fn event_line(elapsed: Duration, code: &str, data: &str) -> String {
    let mut line = Vec::with_capacity(data.len() + 24);
    open_event(&mut line, elapsed, code);
    escape_json_into(&mut line, data);
    close_event(&mut line);
    String::from_utf8_lossy(&line).into_owned()
}

/// Start an event line in `out`: `[seconds, "code", "` (the data follows, escaped with
/// [`escape_json_into`], then [`close_event`]).
pub fn open_event(out: &mut Vec<u8>, elapsed: Duration, code: &str) {
    // Formatted from integers so the time is exact and never in exponent notation. Writing
    // into a Vec cannot fail.
    let _ = write!(
        out,
        "[{}.{:06}, \"",
        elapsed.as_secs(),
        elapsed.subsec_micros()
    );
    escape_json_into(out, code);
    out.extend_from_slice(b"\", \"");
}

/// End an event line [`open_event`] started.
pub fn close_event(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"]");
}

/// What a byte becomes inside a JSON string: 0 itself, `b'u'` `\u00XX`, else `\` and this.
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Eight copies of a byte, for the word-at-a-time scan below.
const fn splat(byte: u8) -> u64 {
    0x0101_0101_0101_0101 * byte as u64
}

/// Whether any of the eight bytes of `word` needs escaping (below 0x20, a quote or a backslash). Exact,
/// not a hint: the classic "has a byte below n" and "has a zero byte" tests are exact as a
/// whole-word answer (a borrow can only mark a higher byte when a lower one already matched).
fn word_needs_escape(word: u64) -> bool {
    const HIGH: u64 = splat(0x80);
    let below_space = word.wrapping_sub(splat(0x20)) & !word;
    let quote = word ^ splat(b'"');
    let quote = quote.wrapping_sub(splat(1)) & !quote;
    let backslash = word ^ splat(b'\\');
    let backslash = backslash.wrapping_sub(splat(1)) & !backslash;
    (below_space | quote | backslash) & HIGH != 0
}

/// Append `text` to `out` as the inside of a JSON string, escaped exactly as `serde_json`
/// escapes it (so the recording is byte for byte what [`serde_json::Value`] would write),
/// copying unescaped runs whole: one pass, no allocation beyond `out` growing. Terminal output
/// is mostly plain text, so it is scanned eight bytes at a time (the byte-at-a-time loop was
/// 17 % of the proxy's CPU on a download, `docs/benchmarks.md`).
pub fn escape_json_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes[i..].first_chunk::<8>()
            && !word_needs_escape(u64::from_le_bytes(*word))
        {
            i += 8;
            continue;
        }
        let byte = bytes[i];
        let escape = ESCAPES[usize::from(byte)];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            if escape == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            } else {
                out.push(b'\\');
                out.push(escape);
            }
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The width of the UTF-8 sequence `lead` starts (1 for a byte that starts none).
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Turns arbitrary byte chunks into valid UTF-8: a multi-byte character split across chunks
/// comes out whole with the later chunk, bytes that can never be UTF-8 become U+FFFD. The
/// result is what [`String::from_utf8_lossy`] makes of all the chunks joined.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    /// The start of a character cut off at the end of the previous chunk (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// A stream with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of `chunk` (preceded by any bytes carried over), minus an incomplete character
    /// at its end, which is kept for the next call.
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut out = String::with_capacity(chunk.len());
        self.push_into(chunk, &mut |text| out.push_str(text));
        out
    }

    /// [`Self::push`] without building a string: `emit` gets the text in pieces, borrowed
    /// from `chunk` wherever it is valid UTF-8 already (all of it, usually).
    pub fn push_into(&mut self, chunk: &[u8], emit: &mut impl FnMut(&str)) {
        let mut rest = chunk;
        // Complete the carried character first, taking from the chunk only the bytes it lacks.
        while !self.pending.is_empty() && !rest.is_empty() {
            let lacking = sequence_width(self.pending[0])
                .saturating_sub(self.pending.len())
                .max(1);
            let (head, tail) = rest.split_at(lacking.min(rest.len()));
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(head);
            rest = tail;
            self.decode(&joined, emit);
        }
        if !rest.is_empty() {
            self.decode(rest, emit);
        }
    }

    fn decode(&mut self, mut rest: &[u8], emit: &mut impl FnMut(&str)) {
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    if !valid.is_empty() {
                        emit(valid);
                    }
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` guarantees this prefix is UTF-8, so this borrows it unchanged.
                    let valid = String::from_utf8_lossy(valid);
                    if !valid.is_empty() {
                        emit(&valid);
                    }
                    match e.error_len() {
                        Some(bad) => {
                            emit("\u{fffd}");
                            rest = &after[bad..];
                        }
                        None => {
                            // Incomplete but possibly valid: wait for the next chunk.
                            self.pending = after.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still pending, as U+FFFD (the stream ended mid-character); empty if nothing
    /// is pending.
    pub fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::recording::SessionKind;
    use crate::recording::tests::meta;

    #[test]
    fn header_is_one_json_line_with_every_field() {
        let mut m = meta("00112233aabbccdd");
        m.kind = SessionKind::Subsystem {
            name: "sftp".to_owned(),
        };
        let line = header_line(&m);
        assert!(!line.contains('\n'));
        let h: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(h["version"], 2);
        assert_eq!(h["width"], 120);
        assert_eq!(h["height"], 40);
        assert_eq!(h["timestamp"], 1_710_028_798);
        assert_eq!(h["env"], json!({ "TERM": "xterm-256color" }));
        assert_eq!(
            h["title"],
            "oidc:alice@example.com → ubuntu@prod-db-01 (team-a/req-1)"
        );
        let g = &h["gatehouse"];
        assert_eq!(g["requestNamespace"], "team-a");
        assert_eq!(g["requestName"], "req-1");
        assert_eq!(g["requestUid"], "0b6c2f4e-1111-2222-3333-444455556666");
        assert_eq!(g["requester"], "oidc:alice@example.com");
        assert_eq!(g["approvers"], json!(["bob"]));
        assert_eq!(g["reason"], "INC-42 disk full");
        assert_eq!(g["hostGroup"], "prod-db");
        assert_eq!(g["host"], "prod-db-01");
        assert_eq!(g["login"], "ubuntu");
        assert_eq!(g["sessionId"], "00112233aabbccdd");
        assert_eq!(g["kind"], json!({ "type": "subsystem", "name": "sftp" }));
    }

    #[test]
    fn header_without_term_has_no_env() {
        let mut m = meta("00112233aabbccdd");
        m.term = None;
        let h: Value = serde_json::from_str(&header_line(&m)).unwrap();
        assert!(h.get("env").is_none(), "{h}");
    }

    #[test]
    fn character_split_across_chunks_comes_out_whole() {
        let text = "a€b😀";
        let bytes = text.as_bytes();
        // Every split point, including inside the 3-byte € and the 4-byte emoji.
        for cut in 0..=bytes.len() {
            let mut s = Utf8Stream::new();
            let mut out = s.push(&bytes[..cut]);
            out += &s.push(&bytes[cut..]);
            out += &s.finish();
            assert_eq!(out, text, "cut at {cut}");
        }
        // One byte at a time.
        let mut s = Utf8Stream::new();
        let out: String = bytes.iter().map(|b| s.push(&[*b])).collect();
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Stream::new();
        // 0xff is never UTF-8; 0xe2 0x28 is a broken 3-byte start followed by '('.
        assert_eq!(s.push(b"a\xffb\xe2\x28c"), "a\u{fffd}b\u{fffd}(c");
        // A truncated character at the very end is reported by finish, not lost or invented.
        assert_eq!(s.push(b"x\xf0\x9f"), "x");
        assert_eq!(s.finish(), "\u{fffd}");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn event_line_escapes_like_json() {
        let data = "say \"hi\"\\\r\n\x1b[0m\x07\u{0}";
        let line = event_line(Duration::from_micros(1_234_567), "o", data);
        assert!(line.starts_with("[1.234567, \"o\", "), "{line}");
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\x1b'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, json!([1.234567, "o", data]));
        assert_eq!(
            event_line(Duration::from_millis(5), "r", "100x30"),
            "[0.005000, \"r\", \"100x30\"]"
        );
    }

    #[test]
    fn escaping_is_byte_for_byte_what_serde_json_writes() {
        let mut every: String = (0u8..0x80).map(char::from).collect();
        every.push_str("é€😀\u{2028}\u{7f}\u{fffd}");
        for text in [every.as_str(), "", "plain", "\"\\", "\u{0}x\u{1f}"] {
            let mut out = Vec::new();
            escape_json_into(&mut out, text);
            let quoted = format!("\"{}\"", String::from_utf8(out).unwrap());
            assert_eq!(quoted, Value::from(text).to_string(), "{text:?}");
        }
    }

    #[test]
    fn word_scan_finds_every_escape_at_every_offset() {
        // Each byte value at each position of a run longer than two words, with plain text and
        // multi-byte characters around it: the word scan must never skip one.
        for byte in 0u8..0x80 {
            for at in 0..24 {
                let mut text: String = "abcdefghijklmnopqrstuvwx".into();
                text.replace_range(at..at + 1, &char::from(byte).to_string());
                text.push_str("é€ tail");
                let mut out = Vec::new();
                escape_json_into(&mut out, &text);
                let quoted = format!("\"{}\"", String::from_utf8(out).unwrap());
                assert_eq!(
                    quoted,
                    Value::from(text.as_str()).to_string(),
                    "{byte:#x} at {at}"
                );
            }
        }
        assert!(!word_needs_escape(u64::from_le_bytes(*b"plain~\x7fz")));
        assert!(word_needs_escape(u64::from_le_bytes(*b"\x1f.......")));
        assert!(word_needs_escape(u64::from_le_bytes(*b".......\"")));
    }

    #[test]
    fn chunks_decode_like_the_whole_does_at_every_split() {
        // Valid text, broken sequences, truncated ones and stray continuation bytes.
        let mut bytes = "a€b😀 é".as_bytes().to_vec();
        bytes.extend_from_slice(b"\xe2\x28\xa1\xf0\x9f\x98\x41\xc3\xff\x80\xe2\x82");
        bytes.extend_from_slice("ok😀".as_bytes());
        bytes.extend_from_slice(b"\xf0\x9f");
        let whole = String::from_utf8_lossy(&bytes).into_owned();
        // Every pair of cut points: three chunks.
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut s = Utf8Stream::new();
                let mut out = String::new();
                for chunk in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    s.push_into(chunk, &mut |t| out.push_str(t));
                }
                out += &s.finish();
                assert_eq!(out, whole, "cuts at {a} and {b}");
            }
        }
        // One byte at a time.
        let mut s = Utf8Stream::new();
        let mut out: String = bytes.iter().map(|b| s.push(&[*b])).collect();
        out += &s.finish();
        assert_eq!(out, whole);
    }
}
