//! `kubectl gatehouse audit verify`, the pure part: given what the store holds under `audit/`
//! (keys, and each batch's bytes) and what each `recordingStored` event's recording hashes to
//! now, say whether anything was deleted, edited, reordered or renamed, naming the object.
//!
//! Data comes from `audit::store` (an auditor's read-only store credentials: the audit API's
//! `auditevents` are parsed events, which cannot prove a hash chain); it goes to a
//! [`Report`] that `audit` prints (text, or JSON with `-o json`) and turns into the exit code.
//!
//! Checks, per writer (`audit/<writer>/<sequence>.jsonl`, the contract's layout):
//! - every batch parses and its header counts its lines ([`verify_chain`]);
//! - sequences follow one another, and each header records the SHA-256 of the batch before
//!   it, so a deleted, edited or reordered batch breaks the chain at the batch after it;
//! - each key says the writer and sequence its header says (a renamed or copied batch);
//! - the chain starts at sequence 0, unless `allow_expired` (older batches removed by a
//!   retention policy);
//! - each recording named by a `recordingStored` event exists with its SHA-256 and size.
//!
//! What this cannot see: the deletion of a writer's newest batches, or an edit of its very
//! last batch, since no later header records them; the writer's own record of its head would
//! (the `head` of [`verify_chain`]), which the contract does not publish yet.

use std::collections::BTreeMap;

use gatehouse_crds::audit::{AuditEvent, EventType, RecordingDetail, verify_chain};
use serde::Serialize;

/// Where audit batches live.
pub const AUDIT_PREFIX: &str = "audit/";

/// One problem found, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The store key (a batch or a recording).
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// One writer's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterReport {
    /// The writer (`<pod name>.<run id>`; a bare pod name before run ids).
    pub writer: String,
    /// Batches stored.
    pub batches: usize,
    /// Events in the batches up to the first break.
    pub events: u64,
    /// The first sequence stored.
    pub first_sequence: u64,
    /// The last sequence stored.
    pub last_sequence: u64,
    /// SHA-256 of the last batch, when the chain is whole.
    pub head: Option<String>,
}

/// What `audit verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Each writer's chain.
    pub writers: Vec<WriterReport>,
    /// Recordings checked against their `recordingStored` events.
    pub recordings: usize,
    /// Everything wrong; empty when the store verifies.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether everything verified.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report for people: one line per writer and per problem, and a verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for w in &self.writers {
            out.push_str(&format!(
                "writer {}: batches {}..{} ({}), {} events{}\n",
                w.writer,
                w.first_sequence,
                w.last_sequence,
                w.batches,
                w.events,
                w.head
                    .as_ref()
                    .map_or_else(String::new, |h| format!(", head sha256 {h}"))
            ));
        }
        for p in &self.problems {
            out.push_str(&format!("FAIL {}: {}\n", p.object, p.message));
        }
        let batches: usize = self.writers.iter().map(|w| w.batches).sum();
        let events: u64 = self.writers.iter().map(|w| w.events).sum();
        out.push_str(&format!(
            "audit verify: {} writer(s), {batches} batch(es), {events} event(s), {} recording(s): {}\n",
            self.writers.len(),
            self.recordings,
            if self.ok() {
                "OK".to_owned()
            } else {
                format!("{} problem(s)", self.problems.len())
            }
        ));
        out
    }
}

/// `audit/<writer>/<20 digits>.jsonl` → (writer, sequence); `None` for any other key.
pub fn parse_key(key: &str) -> Option<(String, u64)> {
    let rest = key.strip_prefix(AUDIT_PREFIX)?;
    let (writer, file) = rest.split_once('/')?;
    let digits = file.strip_suffix(".jsonl")?;
    let writer_ok = !writer.is_empty()
        && writer.len() <= 253
        && writer
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !writer_ok || digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((writer.to_owned(), digits.parse().ok()?))
}

/// The key of `writer`'s batch `sequence`.
#[cfg(test)]
pub fn batch_key(writer: &str, sequence: u64) -> String {
    format!("{AUDIT_PREFIX}{writer}/{sequence:020}.jsonl")
}

/// Each writer's batches: (sequence, key), in sequence order.
pub type Writers = BTreeMap<String, Vec<(u64, String)>>;

/// Batches grouped by writer, in sequence order, and the keys that are not batches.
pub fn group_keys(keys: &[String]) -> (Writers, Vec<String>) {
    let mut writers: Writers = BTreeMap::new();
    let mut strays = Vec::new();
    for key in keys {
        match parse_key(key) {
            Some((writer, sequence)) => writers
                .entry(writer)
                .or_default()
                .push((sequence, key.clone())),
            None => strays.push(key.clone()),
        }
    }
    for batches in writers.values_mut() {
        batches.sort();
    }
    (writers, strays)
}

/// Verify the chains: `keys` as listed under [`AUDIT_PREFIX`], `batches` the bytes of each
/// batch key (a missing entry is a batch that could not be read: `unreadable` says why).
/// Returns the report without recordings, and the recordings the events name (deduplicated
/// by key, in order of appearance).
pub fn verify_batches(
    keys: &[String],
    batches: &BTreeMap<String, Result<String, String>>,
    allow_expired: bool,
) -> (Report, Vec<RecordingDetail>) {
    let (writers, strays) = group_keys(keys);
    let mut report = Report::default();
    let mut recordings: Vec<RecordingDetail> = Vec::new();
    for key in strays {
        report.problems.push(Problem {
            object: key,
            message: "not an audit batch key (audit/<writer>/<20-digit sequence>.jsonl)".to_owned(),
        });
    }
    for (writer, listed) in writers {
        let mut texts: Vec<&str> = Vec::new();
        let mut names: Vec<&(u64, String)> = Vec::new();
        let mut unreadable = false;
        for entry in &listed {
            match batches.get(&entry.1) {
                Some(Ok(text)) => {
                    texts.push(text);
                    names.push(entry);
                }
                Some(Err(why)) => {
                    report.problems.push(Problem {
                        object: entry.1.clone(),
                        message: format!("could not be read: {why}"),
                    });
                    unreadable = true;
                }
                None => {
                    report.problems.push(Problem {
                        object: entry.1.clone(),
                        message: "listed but not fetched".to_owned(),
                    });
                    unreadable = true;
                }
            }
        }
        let first = listed.first().map_or(0, |(s, _)| *s);
        let last = listed.last().map_or(0, |(s, _)| *s);
        let mut summary = WriterReport {
            writer: writer.clone(),
            batches: listed.len(),
            events: 0,
            first_sequence: first,
            last_sequence: last,
            head: None,
        };
        if first != 0 && !allow_expired {
            report.problems.push(Problem {
                object: listed.first().map(|(_, k)| k.clone()).unwrap_or_default(),
                message: format!(
                    "writer {writer}'s chain starts at sequence {first}: batches 0..{} are missing (pass --allow-expired if a retention policy removed them)",
                    first - 1
                ),
            });
        }
        // The key must say what the header says: a batch copied or renamed to another key
        // would otherwise pass as the batch it replaces.
        for (text, (sequence, key)) in texts.iter().zip(&names) {
            let header = text
                .lines()
                .next()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            let said_writer = header
                .as_ref()
                .and_then(|h| h.get("writer")?.as_str().map(str::to_owned));
            let said_sequence = header.as_ref().and_then(|h| h.get("sequence")?.as_u64());
            if (said_writer.is_some() || said_sequence.is_some())
                && (said_writer.as_deref() != Some(writer.as_str())
                    || said_sequence != Some(*sequence))
            {
                report.problems.push(Problem {
                    object: key.clone(),
                    message: format!(
                        "the key names writer {writer} sequence {sequence}, the header says writer {} sequence {}",
                        said_writer.as_deref().unwrap_or("?"),
                        said_sequence.map_or_else(|| "?".to_owned(), |s| s.to_string())
                    ),
                });
            }
        }
        match verify_chain(&texts, None) {
            Ok(chain) => {
                summary.events = chain.events;
                if !unreadable {
                    summary.head = Some(chain.head);
                }
            }
            Err(broken) => {
                let object = names
                    .get(broken.batch)
                    .map(|(_, k)| k.clone())
                    .unwrap_or_default();
                report.problems.push(Problem {
                    object,
                    message: format!("line {}: {}", broken.line, broken.kind),
                });
                summary.events = texts[..broken.batch.min(texts.len())]
                    .iter()
                    .map(|t| t.lines().count().saturating_sub(1) as u64)
                    .sum();
            }
        }
        for text in &texts {
            for line in text.lines().skip(1) {
                let Ok(event) = serde_json::from_str::<AuditEvent>(line) else {
                    continue;
                };
                if event.type_ != EventType::RecordingStored {
                    continue;
                }
                if let Some(detail) = event.recording
                    && !recordings.iter().any(|r| r.key == detail.key)
                {
                    recordings.push(detail);
                }
            }
        }
        report.writers.push(summary);
    }
    // Fail closed: an empty trail is a wrong store or prefix, or a deleted trail.
    if report.writers.is_empty() {
        report.problems.push(Problem {
            object: AUDIT_PREFIX.to_owned(),
            message: "no audit batches: the wrong store or prefix, or the trail was deleted"
                .to_owned(),
        });
    }
    (report, recordings)
}

/// Check `expected` (a `recordingStored` event's detail) against what the store holds now:
/// `found` is (sha256, bytes) of the object, or why it could not be read.
pub fn check_recording(
    expected: &RecordingDetail,
    found: &Result<(String, u64), String>,
) -> Option<Problem> {
    let problem = |message: String| {
        Some(Problem {
            object: expected.key.clone(),
            message,
        })
    };
    match found {
        Err(why) => problem(format!("the recording is missing or unreadable: {why}")),
        Ok((sha256, bytes)) if *sha256 != expected.sha256 => problem(format!(
            "the recording was changed: its SHA-256 is {sha256} ({bytes} bytes), the recordingStored event records {} ({} bytes)",
            expected.sha256, expected.bytes
        )),
        Ok((_, bytes)) if *bytes != expected.bytes => problem(format!(
            "the recording is {bytes} bytes, the recordingStored event records {}",
            expected.bytes
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use gatehouse_crds::audit::{BatchHeader, batch_sha256, render_batch};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn event(seconds: i64, type_: EventType) -> AuditEvent {
        let time = jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap();
        AuditEvent::new(MicroTime(time), type_)
    }

    fn recording_event(key: &str, sha256: &str, bytes: u64) -> AuditEvent {
        let mut e = event(9, EventType::RecordingStored);
        e.recording = Some(RecordingDetail {
            key: key.to_owned(),
            sha256: sha256.to_owned(),
            bytes,
        });
        e
    }

    /// `count` batches of `writer` from sequence 0, chained; key → text.
    fn chain(writer: &str, count: u64) -> Vec<(String, String)> {
        let mut previous = String::new();
        (0..count)
            .map(|sequence| {
                let events = if sequence == 1 {
                    vec![
                        event(1, EventType::SessionStarted),
                        recording_event("r/1.cast", "aa", 3),
                    ]
                } else {
                    vec![event(2, EventType::LoginAccepted)]
                };
                let text = render_batch(
                    &BatchHeader {
                        writer: writer.to_owned(),
                        sequence,
                        previous_batch_sha256: previous.clone(),
                        count: 0,
                    },
                    &events,
                );
                previous = batch_sha256(&text);
                (batch_key(writer, sequence), text)
            })
            .collect()
    }

    fn run(objects: &[(String, String)], allow_expired: bool) -> (Report, Vec<RecordingDetail>) {
        let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
        let batches = objects
            .iter()
            .map(|(k, t)| (k.clone(), Ok(t.clone())))
            .collect();
        verify_batches(&keys, &batches, allow_expired)
    }

    fn problems(report: &Report) -> Vec<(String, String)> {
        report
            .problems
            .iter()
            .map(|p| (p.object.clone(), p.message.clone()))
            .collect()
    }

    #[test]
    fn keys() {
        let cases = [
            (
                "audit/gatehouse-proxy-7d9f/00000000000000000003.jsonl",
                Some(("gatehouse-proxy-7d9f", 3)),
            ),
            ("audit/op.0/00000000000000000000.jsonl", Some(("op.0", 0))),
            // The audit writer's names: `<pod>.<run id>`.
            (
                "audit/gatehouse-proxy-7d9f-x2.0123456789abcdef/00000000000000000001.jsonl",
                Some(("gatehouse-proxy-7d9f-x2.0123456789abcdef", 1)),
            ),
            ("audit/w/3.jsonl", None),
            ("audit/W/00000000000000000003.jsonl", None),
            ("audit/w/00000000000000000003.json", None),
            ("audit/w/x/00000000000000000003.jsonl", None),
            ("audit//00000000000000000003.jsonl", None),
            ("recordings/w/00000000000000000003.jsonl", None),
            ("audit/w/0000000000000000000a.jsonl", None),
        ];
        for (key, want) in cases {
            assert_eq!(
                parse_key(key),
                want.map(|(w, s)| (w.to_owned(), s)),
                "{key}"
            );
        }
        assert_eq!(batch_key("w", 3), "audit/w/00000000000000000003.jsonl");
    }

    #[test]
    fn a_pods_runs_are_chains_of_their_own() {
        // The pod came back with a fresh spool: a second run, a second chain from 0.
        let mut objects = chain("proxy-a.00000000000000aa", 3);
        objects.extend(chain("proxy-a.00000000000000bb", 2));
        let (report, _) = run(&objects, false);
        assert!(report.ok(), "{:?}", report.problems);
        let writers: Vec<(&str, usize)> = report
            .writers
            .iter()
            .map(|w| (w.writer.as_str(), w.batches))
            .collect();
        assert_eq!(
            writers,
            [
                ("proxy-a.00000000000000aa", 3),
                ("proxy-a.00000000000000bb", 2)
            ]
        );
    }

    #[test]
    fn an_intact_store_verifies_and_names_its_recordings() {
        let mut objects = chain("proxy-a", 3);
        objects.extend(chain("operator-0", 2));
        let (report, recordings) = run(&objects, false);
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.writers.len(), 2);
        assert_eq!(report.writers[1].writer, "proxy-a");
        assert_eq!(report.writers[1].batches, 3);
        assert_eq!(report.writers[1].events, 4);
        assert_eq!(
            report.writers[1].head.as_deref(),
            Some(batch_sha256(&objects[2].1).as_str())
        );
        assert_eq!(recordings.len(), 1, "deduplicated across writers");
        assert_eq!(recordings[0].key, "r/1.cast");
        assert!(
            report
                .render()
                .ends_with("2 writer(s), 5 batch(es), 7 event(s), 0 recording(s): OK\n")
        );
    }

    #[test]
    fn tampering_names_the_batch() {
        let base = chain("proxy-a", 4);
        let key = |s: u64| batch_key("proxy-a", s);
        let deleted = |s: usize| {
            let mut o = base.clone();
            o.remove(s);
            o
        };
        let edited = {
            let mut o = base.clone();
            o[1].1 = o[1].1.replace("sessionStarted", "sessionEnded");
            o
        };
        let renamed = {
            let mut o = base.clone();
            o[3].0 = batch_key("proxy-b", 0);
            o
        };
        let stray = {
            let mut o = base.clone();
            o.push(("audit/proxy-a/notes.txt".to_owned(), "x".to_owned()));
            o
        };
        type Case<'a> = (&'a str, Vec<(String, String)>, bool, Vec<(String, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "delete a middle batch",
                deleted(1),
                false,
                vec![(key(2), "line 1: batch sequence 1 is missing (found 2)")],
            ),
            (
                "delete the first batch",
                deleted(0),
                false,
                vec![(
                    key(1),
                    "chain starts at sequence 1: batches 0..0 are missing",
                )],
            ),
            ("retention removed the first", deleted(0), true, vec![]),
            (
                "edit a batch",
                edited,
                false,
                vec![(key(2), "line 1: the previous batch was changed")],
            ),
            (
                "rename a batch to another writer",
                renamed,
                false,
                vec![(
                    batch_key("proxy-b", 0),
                    "the key names writer proxy-b sequence 0, the header says writer proxy-a sequence 3",
                )],
            ),
            (
                "a stray object",
                stray,
                false,
                vec![(
                    "audit/proxy-a/notes.txt".to_owned(),
                    "not an audit batch key",
                )],
            ),
        ];
        for (what, objects, allow_expired, want) in cases {
            let (report, _) = run(&objects, allow_expired);
            let got = problems(&report);
            assert_eq!(got.len(), want.len(), "{what}: {got:?}");
            for ((object, message), (want_object, want_message)) in got.iter().zip(&want) {
                assert_eq!(object, want_object, "{what}");
                assert!(message.contains(want_message), "{what}: {message}");
            }
            assert_eq!(report.ok(), want.is_empty(), "{what}");
        }
    }

    #[test]
    fn an_empty_trail_fails() {
        let (report, _) = run(&[], false);
        assert_eq!(
            problems(&report),
            [(
                "audit/".to_owned(),
                "no audit batches: the wrong store or prefix, or the trail was deleted".to_owned()
            )]
        );
    }

    #[test]
    fn an_unreadable_batch_is_a_problem() {
        let objects = chain("w", 2);
        let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
        let mut batches: BTreeMap<String, Result<String, String>> = BTreeMap::new();
        batches.insert(objects[0].0.clone(), Ok(objects[0].1.clone()));
        batches.insert(objects[1].0.clone(), Err("access denied".to_owned()));
        let (report, _) = verify_batches(&keys, &batches, false);
        assert_eq!(
            problems(&report),
            [(
                objects[1].0.clone(),
                "could not be read: access denied".to_owned()
            )]
        );
        assert_eq!(report.writers[0].head, None);
    }

    #[test]
    fn recordings() {
        let expected = RecordingDetail {
            key: "r/1.cast".to_owned(),
            sha256: "aa".to_owned(),
            bytes: 3,
        };
        type Found = Result<(String, u64), String>;
        let cases: [(Found, Option<&str>); 4] = [
            (Ok(("aa".to_owned(), 3)), None),
            (
                Ok(("bb".to_owned(), 3)),
                Some("the recording was changed: its SHA-256 is bb"),
            ),
            (Ok(("aa".to_owned(), 4)), Some("the recording is 4 bytes")),
            (
                Err("NoSuchKey".to_owned()),
                Some("missing or unreadable: NoSuchKey"),
            ),
        ];
        for (found, want) in cases {
            let got = check_recording(&expected, &found);
            match (got, want) {
                (None, None) => {}
                (Some(p), Some(w)) => {
                    assert_eq!(p.object, "r/1.cast");
                    assert!(p.message.contains(w), "{}", p.message);
                }
                (got, want) => panic!("{found:?}: {got:?} vs {want:?}"),
            }
        }
    }
}
