//! How a live recording is cut into pieces while its session runs. Pure: data comes from the
//! live uploader ([`super::live`]: how much of the spool file is written, how much is already
//! stored, how long ago the last piece went up); decisions go back to it (upload now or not,
//! where the piece ends, what it is called).
//!
//! Layout in the store: the pieces of the recording stored at `KEY` are whole objects
//! `KEY.parts/000001`, `KEY.parts/000002`, … Each holds whole asciicast lines (a piece ends
//! after a newline unless one line is longer than a whole piece), and concatenating them in
//! name order gives the recording as far as it was stored. Once the session's final object
//! `KEY` is stored (with its SHA-256 in `status.sessions`), the pieces are removed.

use std::time::Duration;

/// When pieces go up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// New output is stored at the latest this long after it was spooled; zero turns live
    /// upload off (recordings are then stored when the session ends, as a whole).
    pub interval: Duration,
    /// A piece is stored as soon as this much is waiting, and is never larger.
    pub piece_bytes: u64,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            interval: Duration::from_secs(10),
            piece_bytes: 8 * 1024 * 1024,
        }
    }
}

impl LiveSettings {
    /// Whether sessions upload pieces at all.
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero() && self.piece_bytes > 0
    }
}

/// The prefix under which the pieces of the recording stored at `key` live.
pub fn parts_prefix(key: &str) -> String {
    format!("{key}.parts/")
}

/// The key of piece `number` (counting from 1) of the recording stored at `key`.
pub fn piece_key(key: &str, number: u32) -> String {
    format!("{}{number:06}", parts_prefix(key))
}

/// Whether a piece should go up now: a full piece is waiting, or something is waiting and the
/// last piece (or the session's start) is `interval` old.
pub fn due(written: u64, stored: u64, since_last: Duration, settings: &LiveSettings) -> bool {
    let waiting = written.saturating_sub(stored);
    waiting > 0 && (waiting >= settings.piece_bytes || since_last >= settings.interval)
}

/// How many bytes to read for the next piece: what is waiting, at most a piece.
pub fn read_len(written: u64, stored: u64, settings: &LiveSettings) -> u64 {
    written.saturating_sub(stored).min(settings.piece_bytes)
}

/// Where a piece read as `data` ends: after its last newline, so pieces hold whole lines and
/// the rest waits for the next piece. Without a newline, a full piece (`full`: `data` is as
/// long as a piece may be) is taken whole — one line longer than a piece must not stall the
/// upload — and a short one waits (0).
pub fn cut(data: &[u8], full: bool) -> usize {
    match data.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if full => data.len(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: LiveSettings = LiveSettings {
        interval: Duration::from_secs(10),
        piece_bytes: 100,
    };

    #[test]
    fn piece_keys_sort_in_upload_order() {
        let key = "recordings/2026-12-02/alice_db1_00aa.cast";
        assert_eq!(
            piece_key(key, 1),
            "recordings/2026-12-02/alice_db1_00aa.cast.parts/000001"
        );
        assert!(piece_key(key, 9) < piece_key(key, 10));
        assert!(piece_key(key, 99_999) < piece_key(key, 100_000));
        assert!(piece_key(key, 1).starts_with(&parts_prefix(key)));
    }

    #[test]
    fn a_piece_is_due_when_full_or_old_and_never_when_nothing_waits() {
        let s = Duration::from_secs;
        for (written, stored, since, want) in [
            (0, 0, s(60), false),   // nothing written
            (50, 50, s(60), false), // everything stored
            (49, 0, s(9), false),   // little, and recent
            (49, 0, s(10), true),   // little, but old
            (100, 0, s(0), true),   // a full piece
            (350, 200, s(1), true), // a full piece behind
            (10, 20, s(60), false), // stored ahead of the size seen (file read racing)
        ] {
            assert_eq!(
                due(written, stored, since, &S),
                want,
                "{written} {stored} {since:?}"
            );
        }
        assert_eq!(read_len(350, 200, &S), 100);
        assert_eq!(read_len(230, 200, &S), 30);
        assert_eq!(read_len(100, 200, &S), 0);
    }

    #[test]
    fn pieces_end_after_a_newline_unless_one_line_fills_a_piece() {
        assert_eq!(cut(b"[1, \"o\", \"a\"]\n[2, \"o\", \"b", false), 14);
        assert_eq!(cut(b"[1, \"o\", \"a\"]\n[2, \"o\", \"b", true), 14);
        assert_eq!(cut(b"one\ntwo\n", false), 8);
        assert_eq!(cut(b"half a line", false), 0);
        assert_eq!(cut(b"a line as long as a piece", true), 25);
        assert_eq!(cut(b"", false), 0);
    }

    #[test]
    fn zero_interval_or_size_turns_live_upload_off() {
        assert!(LiveSettings::default().enabled());
        assert_eq!(LiveSettings::default().piece_bytes, 8 << 20);
        let off = LiveSettings {
            interval: Duration::ZERO,
            ..LiveSettings::default()
        };
        assert!(!off.enabled());
    }
}
