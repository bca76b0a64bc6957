//! The audit writer's decisions, pure: when a segment is sealed, which sequence and previous
//! hash the next batch gets, how long to wait before retrying an upload, what an upload's
//! answer means (stored, a conflict, retry), which writer (run) a spool's chain belongs to,
//! what of a segment a crash left is kept, whether a leftover segment was already sealed, and
//! the names of files and keys. Data comes from the spool, the store's answers and the clock;
//! the I/O is in [`super::spool`] and [`super::task`].

use std::time::{Duration, Instant};

use gatehouse_crds::audit::{AuditEvent, BatchHeader, batch_sha256, render_batch};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// At most this many events go into one batch.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// A segment holding events is sealed at the latest this long after its first event.
pub const SEAL_AFTER: Duration = Duration::from_secs(1);
/// The first retry of a failed upload waits this long, doubling each time...
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// ...up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The longest writer name (`<pod name>.<run id>`, or a bare pod name).
pub const MAX_WRITER_BYTES: usize = 253;
/// A run id: 16 lowercase hex digits (64 random bits).
pub const RUN_ID_CHARS: usize = 16;
/// Where audit batches live in the store.
pub const KEY_PREFIX: &str = "audit/";

/// The last sealed batch of a writer: what the next batch's header records, and what a
/// leftover segment is compared with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// Its sequence.
    pub sequence: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// What its header records of the batch before it ("" for sequence 0).
    pub previous_sha256: String,
}

/// Is the open segment (`events` in it, the first appended at `first`) due to be sealed?
pub fn seal_due(events: usize, first: Option<Instant>, now: Instant) -> bool {
    match first {
        _ if events == 0 => false,
        _ if events >= MAX_BATCH_EVENTS => true,
        Some(first) => now.saturating_duration_since(first) >= SEAL_AFTER,
        None => false,
    }
}

/// How many more events fit into the open segment (it becomes one batch).
pub fn room(events: usize) -> usize {
    MAX_BATCH_EVENTS.saturating_sub(events)
}

/// The next batch's sequence and previous hash after `head` (none: the chain's first batch).
pub fn next_batch(head: Option<&Head>) -> (u64, String) {
    match head {
        None => (0, String::new()),
        Some(head) => (head.sequence.saturating_add(1), head.sha256.clone()),
    }
}

/// The wait before retry number `attempt` (0-based) of a failed upload.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    BACKOFF_MIN.saturating_mul(factor).min(BACKOFF_MAX)
}

/// What an upload's answer means for the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// Stored (or found stored with the same bytes: a retry): delete it from the spool.
    Stored,
    /// Another object, with other content, is stored under its key: never overwritten; the
    /// batch stays in the spool and is tried again later (only an operator's hand ends it).
    Conflict,
    /// The store failed: try again after the backoff.
    Retry,
}

/// What the result of a write-once put of a batch means.
pub fn upload_outcome(result: &Result<()>) -> Upload {
    match result {
        Ok(()) => Upload::Stored,
        Err(Error::Exists { .. }) => Upload::Conflict,
        Err(_) => Upload::Retry,
    }
}

/// Which writer a spool's chain belongs to, as [`identity`] decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The spool names its writer (its `writer` file): the chain goes on under that name.
    Kept(String),
    /// The spool holds a chain but names no writer: an earlier version's spool, whose writer
    /// was the bare pod name; the chain goes on under it.
    Legacy,
    /// A fresh spool: a new run, `<pod>.<new run id>`, a new chain from sequence 0.
    NewRun,
    /// The spool's `writer` file holds no writer name (damaged): refuse to guess.
    Invalid,
}

/// The writer of a spool whose `writer` file holds `stored` (None: there is none) and which
/// `holds_chain` (a chain file, sealed batches or events in the open segment).
pub fn identity(stored: Option<&str>, holds_chain: bool) -> Identity {
    match stored.map(str::trim) {
        Some(name) if valid_writer(name) => Identity::Kept(name.to_owned()),
        Some(_) => Identity::Invalid,
        None if holds_chain => Identity::Legacy,
        None => Identity::NewRun,
    }
}

/// A run id from 64 random bits.
pub fn run_id(random: u64) -> String {
    format!("{random:016x}")
}

/// The writer name of run `run` of pod `pod` (a valid writer name): `<pod>.<run>`, the pod
/// name cut short if both would not fit in [`MAX_WRITER_BYTES`] (the run id keeps it unique).
pub fn run_writer(pod: &str, run: &str) -> String {
    let room = MAX_WRITER_BYTES.saturating_sub(run.len() + 1);
    let pod = pod.get(..room.min(pod.len())).unwrap_or(pod);
    format!("{pod}.{run}")
}

/// A writer name: a pod name, `[a-z0-9.-]`, 1 to 253 bytes, no `.`/`..` (it names a folder).
pub fn valid_writer(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_WRITER_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// The spool file (and the key's last part) of batch `sequence`: 20 zero-padded digits.
pub fn batch_file_name(sequence: u64) -> String {
    format!("{sequence:020}.jsonl")
}

/// The sequence a batch file name stands for; None for any other name.
pub fn parse_batch_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The folder of `writer`'s batches in the store.
pub fn writer_prefix(writer: &str) -> String {
    format!("{KEY_PREFIX}{writer}/")
}

/// The store key of `writer`'s batch `sequence`.
pub fn batch_key(writer: &str, sequence: u64) -> String {
    format!("{}{}", writer_prefix(writer), batch_file_name(sequence))
}

/// What is kept of a segment file.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The events of its complete, valid lines, in order.
    pub events: Vec<AuditEvent>,
    /// Bytes after the last newline (a line torn by a crash mid-write); 0 when none.
    pub torn_bytes: usize,
    /// 1-based numbers of complete lines that are not audit events (dropped).
    pub invalid_lines: Vec<usize>,
}

/// Split a segment's bytes into events: a last line without its newline was torn by a crash
/// mid-append (it was never acknowledged: the fsync comes after the newline) and is dropped;
/// so is any complete line that is not an event. Everything else is kept.
pub fn split_segment(bytes: &[u8]) -> Segment {
    let complete = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |last| last + 1);
    let mut segment = Segment {
        events: Vec::new(),
        torn_bytes: bytes.len() - complete,
        invalid_lines: Vec::new(),
    };
    let body = &bytes[..complete];
    let lines = body.strip_suffix(b"\n").map(|b| b.split(|c| *c == b'\n'));
    for (index, line) in lines.into_iter().flatten().enumerate() {
        match serde_json::from_slice::<AuditEvent>(line) {
            Ok(event) => segment.events.push(event),
            Err(_) => segment.invalid_lines.push(index + 1),
        }
    }
    segment
}

/// The batch `events` become after `head`, as written: header line, then the events.
pub fn render_next(writer: &str, head: Option<&Head>, events: &[AuditEvent]) -> (Head, String) {
    let (sequence, previous_batch_sha256) = next_batch(head);
    let header = BatchHeader {
        writer: writer.to_owned(),
        sequence,
        previous_batch_sha256: previous_batch_sha256.clone(),
        count: events.len() as u64,
    };
    let text = render_batch(&header, events);
    let sealed = Head {
        sequence,
        sha256: batch_sha256(&text),
        previous_sha256: previous_batch_sha256,
    };
    (sealed, text)
}

/// Was a leftover segment holding `events` already sealed as `head` (a crash after the batch
/// was written, before the segment was emptied)? Then sealing it again would duplicate it.
pub fn already_sealed(writer: &str, head: Option<&Head>, events: &[AuditEvent]) -> bool {
    let Some(head) = head else {
        return false;
    };
    if events.is_empty() {
        return false;
    }
    let header = BatchHeader {
        writer: writer.to_owned(),
        sequence: head.sequence,
        previous_batch_sha256: head.previous_sha256.clone(),
        count: events.len() as u64,
    };
    batch_sha256(&render_batch(&header, events)) == head.sha256
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn event(n: u32) -> AuditEvent {
        serde_json::from_value(serde_json::json!({
            "time": "2026-12-03T10:00:00.000001Z", "type": "loginAccepted", "message": format!("e{n}")
        }))
        .unwrap()
    }

    #[test]
    fn when_a_segment_is_sealed() {
        let now = Instant::now();
        let ago = |ms: u64| Some(now - Duration::from_millis(ms));
        let cases = [
            (0, None, false, "empty"),
            (0, ago(5000), false, "empty, however old"),
            (1, ago(0), false, "fresh"),
            (1, ago(999), false, "just under a second"),
            (1, ago(1000), true, "a second old"),
            (999, ago(10), false, "999 events"),
            (1000, ago(0), true, "1000 events"),
            (1200, None, true, "over full"),
        ];
        for (events, first, want, what) in cases {
            assert_eq!(seal_due(events, first, now), want, "{what}");
        }
        assert_eq!(
            (room(0), room(999), room(1000), room(5000)),
            (1000, 1, 0, 0)
        );
    }

    #[test]
    fn next_sequence_and_previous_hash() {
        let head = |sequence| Head {
            sequence,
            sha256: format!("h{sequence}"),
            previous_sha256: String::new(),
        };
        let max = format!("h{}", u64::MAX);
        let cases = [
            (None, 0, ""),
            (Some(head(0)), 1, "h0"),
            (Some(head(41)), 42, "h41"),
            // No successor: the chain breaks there (verify_chain reports it), nothing wraps.
            (Some(head(u64::MAX)), u64::MAX, max.as_str()),
        ];
        for (head, sequence, previous) in cases {
            let (got, hash) = next_batch(head.as_ref());
            assert_eq!((got, hash.as_str()), (sequence, previous), "{head:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_250ms_to_10s() {
        let ms = |attempt| backoff(attempt).as_millis();
        let got: Vec<u128> = [0, 1, 2, 3, 4, 5, 6, 40, u32::MAX].map(ms).to_vec();
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(batch_file_name(3), "00000000000000000003.jsonl");
        assert_eq!(
            batch_key("gatehouse-proxy-7d9f", 3),
            "audit/gatehouse-proxy-7d9f/00000000000000000003.jsonl"
        );
        let names = [
            ("00000000000000000003.jsonl", Some(3)),
            ("18446744073709551615.jsonl", Some(u64::MAX)),
            ("99999999999999999999.jsonl", None),
            ("0000000000000000003.jsonl", None),
            ("00000000000000000003.json", None),
            ("0000000000000000000a.jsonl", None),
            ("open.jsonl", None),
            ("chain", None),
            (".00000000000000000003.jsonl.tmp", None),
        ];
        for (name, want) in names {
            assert_eq!(parse_batch_name(name), want, "{name}");
        }
        let long = "a".repeat(253);
        let too_long = "a".repeat(254);
        let writers = [
            ("gatehouse-proxy-7d9f-x2", true),
            ("gatehouse-operator.0", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("", false),
            (".", false),
            ("..", false),
            ("Proxy", false),
            ("a/b", false),
            ("a_b", false),
            ("a b", false),
        ];
        for (name, want) in writers {
            assert_eq!(valid_writer(name), want, "{name}");
        }
    }

    #[test]
    fn what_an_upload_answer_means() {
        let other = || Error::Exists {
            key: "audit/w/00000000000000000000.jsonl".to_owned(),
            message: "other content".to_owned(),
        };
        let failed = || Error::Request {
            key: "audit/w/00000000000000000000.jsonl".to_owned(),
            message: "connection refused".to_owned(),
        };
        let cases = [
            // A put that landed, or found the same bytes stored (a retry after a crash).
            (Ok(()), Upload::Stored),
            // Other bytes under the key: never replaced, never deleted from the spool.
            (Err(other()), Upload::Conflict),
            (Err(failed()), Upload::Retry),
            (Err(Error::S3Options("x".to_owned())), Upload::Retry),
        ];
        for (result, want) in cases {
            assert_eq!(upload_outcome(&result), want, "{result:?}");
        }
    }

    #[test]
    fn whose_chain_a_spool_holds() {
        let kept = |n: &str| Identity::Kept(n.to_owned());
        let cases = [
            (None, false, Identity::NewRun, "a fresh (or emptied) spool"),
            (None, true, Identity::Legacy, "a chain from before run ids"),
            (
                Some("proxy-1.0123456789abcdef\n"),
                true,
                kept("proxy-1.0123456789abcdef"),
                "kept",
            ),
            (
                Some("proxy-1.0123456789abcdef"),
                false,
                kept("proxy-1.0123456789abcdef"),
                "nothing sealed yet",
            ),
            (
                Some("proxy-1"),
                true,
                kept("proxy-1"),
                "a legacy spool, named",
            ),
            (Some(""), true, Identity::Invalid, "empty"),
            (
                Some("Proxy/1"),
                false,
                Identity::Invalid,
                "not a writer name",
            ),
            (Some(".."), false, Identity::Invalid, "a folder name"),
        ];
        for (stored, holds_chain, want, what) in cases {
            assert_eq!(identity(stored, holds_chain), want, "{what}");
        }
    }

    #[test]
    fn run_writer_names_fit_and_stay_unique() {
        assert_eq!(run_id(0), "0000000000000000");
        assert_eq!(run_id(u64::MAX), "ffffffffffffffff");
        assert_eq!(run_id(0xabc).len(), RUN_ID_CHARS);
        let run = run_id(0x0123_4567_89ab_cdef);
        // A Deployment's pod names are at most 63 characters.
        let pod63 = "p".repeat(63);
        let pod253 = "q".repeat(253);
        let cases = [
            (
                "gatehouse-proxy-7d9f-x2",
                "gatehouse-proxy-7d9f-x2.0123456789abcdef".to_owned(),
            ),
            (pod63.as_str(), format!("{pod63}.{run}")),
            (pod253.as_str(), format!("{}.{run}", "q".repeat(236))),
        ];
        for (pod, want) in cases {
            let name = run_writer(pod, &run);
            assert_eq!(name, want, "{pod}");
            assert!(
                valid_writer(&name) && name.len() <= MAX_WRITER_BYTES,
                "{name}"
            );
            assert_eq!(
                batch_key(&name, 0),
                format!("audit/{name}/00000000000000000000.jsonl")
            );
        }
        assert_ne!(run_writer("p", &run_id(1)), run_writer("p", &run_id(2)));
    }

    #[test]
    fn a_torn_last_line_and_lines_that_are_not_events_are_dropped() {
        let line = |n| format!("{}\n", event(n).to_line());
        let cases: Vec<(String, usize, usize, Vec<usize>)> = vec![
            (String::new(), 0, 0, vec![]),
            (line(1), 1, 0, vec![]),
            (line(1) + &line(2), 2, 0, vec![]),
            (line(1) + "{\"time\":\"2026", 1, 13, vec![]),
            ("{\"ti".to_owned(), 0, 4, vec![]),
            (line(1) + "garbage\n" + &line(3), 2, 0, vec![2]),
            (line(1) + "\n" + &line(3) + "x", 2, 1, vec![2]),
        ];
        for (bytes, events, torn, invalid) in cases {
            let segment = split_segment(bytes.as_bytes());
            assert_eq!(segment.events.len(), events, "{bytes:?}");
            assert_eq!(segment.torn_bytes, torn, "{bytes:?}");
            assert_eq!(segment.invalid_lines, invalid, "{bytes:?}");
        }
        let segment = split_segment((line(7) + &line(8)).as_bytes());
        assert_eq!(segment.events, [event(7), event(8)]);
    }

    #[test]
    fn a_segment_already_sealed_is_recognised() {
        let events = [event(1), event(2)];
        let (first, _) = render_next("w", None, &events);
        let (second, text) = render_next("w", Some(&first), &events);
        assert_eq!((first.sequence, second.sequence), (0, 1));
        assert_eq!(second.previous_sha256, first.sha256);
        assert!(text.starts_with("{\"writer\":\"w\",\"sequence\":1,"));
        let cases = [
            (Some(&second), &events[..], true),
            (Some(&first), &events[..], true),
            (Some(&second), &events[..1], false),
            (None, &events[..], false),
            (Some(&second), &[][..], false),
        ];
        for (head, events, want) in cases {
            assert_eq!(
                already_sealed("w", head, events),
                want,
                "{head:?} {events:?}"
            );
            assert!(!already_sealed("other", head, events));
        }
    }
}
