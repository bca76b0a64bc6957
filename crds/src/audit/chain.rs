//! The durable batch format: a writer's events as JSONL behind a header that records the
//! SHA-256 of the writer's previous batch, and the check that such a chain is whole.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuditEvent;

/// The first line of a batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchHeader {
    /// Who wrote it (a pod name): each writer keeps its own chain.
    pub writer: String,
    /// The writer's batch number, from 0, one more each batch.
    pub sequence: u64,
    /// SHA-256 (hex) of the writer's previous batch; empty for its first.
    pub previous_batch_sha256: String,
    /// How many event lines follow.
    pub count: u64,
}

/// A batch: the header line, then one line per event, each ending in a newline.
pub fn render_batch(header: &BatchHeader, events: &[AuditEvent]) -> String {
    let mut header = header.clone();
    header.count = events.len() as u64;
    let mut out = serde_json::to_string(&header).unwrap_or_default();
    out.push('\n');
    for event in events {
        out.push_str(&event.to_line());
        out.push('\n');
    }
    out
}

/// SHA-256 (lowercase hex) of a batch's bytes: what the next batch's header records.
pub fn batch_sha256(batch: &str) -> String {
    Sha256::digest(batch.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is wrong at a break in the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakKind {
    /// The header line is missing or not a header.
    #[error("the header is not {{writer, sequence, previousBatchSha256, count}}: {0}")]
    Header(String),
    /// An event line is not an audit event.
    #[error("not an audit event: {0}")]
    Event(String),
    /// Lines were added or removed.
    #[error("the header counts {declared} events, the batch holds {found}")]
    Count {
        /// What the header says.
        declared: u64,
        /// Event lines present.
        found: u64,
    },
    /// Another writer's batch in this chain.
    #[error("writer {found}, but the chain is writer {expected}'s")]
    Writer {
        /// The chain's writer.
        expected: String,
        /// This batch's.
        found: String,
    },
    /// A batch is missing before this one.
    #[error("batch sequence {expected} is missing (found {found})")]
    Missing {
        /// The sequence that should come here.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// This batch comes after a later one.
    #[error("batch sequence {found} is out of order (expected {expected})")]
    Reordered {
        /// The sequence that should come here.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// The previous batch's bytes are not what this batch's header recorded: it was edited.
    #[error(
        "the previous batch was changed: its SHA-256 is {actual}, this header records {recorded}"
    )]
    Edited {
        /// SHA-256 of the previous batch as stored.
        actual: String,
        /// What this header says it was.
        recorded: String,
    },
    /// The last batch is not the head the writer reported.
    #[error(
        "the last batch was changed or is missing: its SHA-256 is {actual}, the writer's head is {head}"
    )]
    Head {
        /// SHA-256 of the last batch.
        actual: String,
        /// The head to check against.
        head: String,
    },
}

/// The first break of a chain: batch index (0-based, in the order given) and line (1-based;
/// line 1 is the header).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit batch {batch}, line {line}: {kind}")]
pub struct ChainBreak {
    /// Index of the batch in the order given.
    pub batch: usize,
    /// Line in that batch.
    pub line: usize,
    /// What is wrong.
    pub kind: BreakKind,
}

/// What an intact chain holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Batches verified.
    pub batches: usize,
    /// Events in them.
    pub events: u64,
    /// SHA-256 of the last batch (empty when there is none).
    pub head: String,
}

/// Verify one writer's `batches`, in the order they are stored (by sequence): every header and
/// event parses, counts match, sequences follow one another, and each header records the
/// SHA-256 of the batch before it. With `head` (the writer's own record of its last batch),
/// the last batch is checked too: without it, an edit of the last batch or the deletion of the
/// newest batches cannot be seen. The first batch may start at any sequence (older batches
/// may have expired).
pub fn verify_chain(batches: &[&str], head: Option<&str>) -> Result<Chain, ChainBreak> {
    let at = |batch: usize, line: usize, kind: BreakKind| ChainBreak { batch, line, kind };
    let mut chain = Chain {
        batches: 0,
        events: 0,
        head: String::new(),
    };
    let mut previous: Option<BatchHeader> = None;
    let sequences: Vec<Option<u64>> = batches
        .iter()
        .map(|b| header_of(b).ok().map(|h| h.sequence))
        .collect();
    for (index, text) in batches.iter().enumerate() {
        let header = header_of(text).map_err(|problem| at(index, 1, BreakKind::Header(problem)))?;
        if let Some(before) = &previous {
            if header.writer != before.writer {
                return Err(at(
                    index,
                    1,
                    BreakKind::Writer {
                        expected: before.writer.clone(),
                        found: header.writer,
                    },
                ));
            }
            // A crafted u64::MAX can have no successor: whatever follows breaks the chain.
            let expected = before.sequence.checked_add(1);
            if expected != Some(header.sequence) {
                let expected = expected.unwrap_or(u64::MAX);
                let later = sequences[index + 1..].contains(&Some(expected));
                let (expected, found) = (expected, header.sequence);
                let kind = if later || found < expected {
                    BreakKind::Reordered { expected, found }
                } else {
                    BreakKind::Missing { expected, found }
                };
                return Err(at(index, 1, kind));
            }
            if header.previous_batch_sha256 != chain.head {
                return Err(at(
                    index,
                    1,
                    BreakKind::Edited {
                        actual: chain.head.clone(),
                        recorded: header.previous_batch_sha256,
                    },
                ));
            }
        }
        let mut found = 0u64;
        for (offset, line) in text.lines().skip(1).enumerate() {
            if let Err(error) = serde_json::from_str::<AuditEvent>(line) {
                return Err(at(index, offset + 2, BreakKind::Event(error.to_string())));
            }
            found += 1;
        }
        if found != header.count {
            let line = usize::try_from(header.count.min(found)).unwrap_or(usize::MAX) + 2;
            return Err(at(
                index,
                line,
                BreakKind::Count {
                    declared: header.count,
                    found,
                },
            ));
        }
        chain.batches += 1;
        chain.events += found;
        chain.head = batch_sha256(text);
        previous = Some(header);
    }
    if let Some(head) = head
        && head != chain.head
    {
        let last = batches.len().saturating_sub(1);
        return Err(at(
            last,
            1,
            BreakKind::Head {
                actual: chain.head.clone(),
                head: head.to_owned(),
            },
        ));
    }
    Ok(chain)
}

fn header_of(text: &str) -> Result<BatchHeader, String> {
    let line = text.lines().next().ok_or("the batch is empty")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}
