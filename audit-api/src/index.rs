//! The in-memory index the API answers from. Pure: data comes in as audit batches (their store
//! key and text, which the refresh loop in [`crate::server`] lists and fetches under `audit/`);
//! it goes out as events in (time, writer, sequence, index) order and as [`Session`]s folded
//! from session events, to the handlers that render them.
//!
//! A batch that does not parse, whose header disagrees with its key, or whose count is wrong
//! is skipped and reported ([`BatchProblem`]); the others still count. Memory is bounded: at
//! most `max_events` events are kept, the oldest go first ([`Index::dropped_events`] counts
//! them, exported as a metric), and at most as many sessions (again the oldest go first).
//! Consecutive batches of a writer are checked against each other's SHA-256 as they arrive; a
//! break is reported ([`Index::take_chain_breaks`]) while the events stay served.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use gatehouse_crds::audit::{
    AuditEvent, BatchHeader, EventType, RecordingDetail, RequestRef, batch_sha256, verify_chain,
};
use jiff::Timestamp;

/// Where audit batches live in the store.
pub const AUDIT_PREFIX: &str = "audit/";
/// Events kept by default.
pub const DEFAULT_MAX_EVENTS: usize = 1_000_000;
/// A writer name (a pod name) is at most this long.
pub const MAX_WRITER_BYTES: usize = 253;
/// Digits of a batch key's sequence.
const SEQUENCE_DIGITS: usize = 20;

/// `audit/<writer>/<sequence, 20 digits>.jsonl` → (writer, sequence); anything else is not a
/// batch key.
pub fn parse_batch_key(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(AUDIT_PREFIX)?;
    let (writer, file) = rest.split_once('/')?;
    let digits = file.strip_suffix(".jsonl")?;
    // A pod name: starts with a letter or digit (so never `.` or `..`).
    let writer_ok = writer
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && writer.len() <= MAX_WRITER_BYTES
        && writer
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !writer_ok || digits.len() != SEQUENCE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((writer, digits.parse().ok()?))
}

/// The store key of `writer`'s batch `sequence`.
pub fn batch_key(writer: &str, sequence: u64) -> String {
    format!("{AUDIT_PREFIX}{writer}/{sequence:020}.jsonl")
}

/// Where an event sits in the order the API serves: time, then writer, sequence and line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    /// The event's time.
    pub time: Timestamp,
    /// The batch's writer.
    pub writer: Arc<str>,
    /// The batch's sequence.
    pub sequence: u64,
    /// The event's place in its batch, from 0.
    pub index: u64,
}

impl EventKey {
    /// The event's name in the API: `<writer>.<sequence>.<index>`.
    pub fn name(&self) -> String {
        format!("{}.{}.{}", self.writer, self.sequence, self.index)
    }

    /// The `continue` token of a list page ending at this event.
    pub fn token(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.time, self.writer, self.sequence, self.index
        )
    }

    /// The event a `continue` token names (client-written: checked as strictly as a key).
    pub fn from_token(token: &str) -> Option<Self> {
        let mut parts = token.split('|');
        let time = parts.next()?.parse().ok()?;
        let writer = parts.next()?;
        let sequence = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        // The same rule as a batch key's writer.
        parse_batch_key(&batch_key(writer, sequence))?;
        Some(Self {
            time,
            writer: Arc::from(writer),
            sequence,
            index,
        })
    }
}

/// A batch that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProblem {
    /// Its store key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// One session, folded from its events (`sessionStarted`, `sessionEnded`, `recordingStored`,
/// `command`, `fileOperation`, `forwardOpened`, and any other event naming the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The proxy's session id.
    pub id: String,
    /// The request's namespace.
    pub namespace: String,
    /// The AccessRequest.
    pub request: Option<RequestRef>,
    /// The Kubernetes user the session is for (the requester).
    pub user: Option<String>,
    /// Target host.
    pub host: Option<String>,
    /// Unix login.
    pub login: Option<String>,
    /// `shell`, `exec`, `subsystem:sftp`…
    pub kind: Option<String>,
    /// `sessionStarted`'s time.
    pub start: Option<Timestamp>,
    /// `sessionEnded`'s time.
    pub end: Option<Timestamp>,
    /// Bytes to the target (from `sessionEnded`).
    pub bytes_to_target: Option<u64>,
    /// Bytes to the client (from `sessionEnded`).
    pub bytes_to_client: Option<u64>,
    /// Exit status (from `sessionEnded`).
    pub exit_status: Option<u32>,
    /// The stored recording (from `recordingStored`).
    pub recording: Option<RecordingDetail>,
    /// `command` events.
    pub commands: u64,
    /// `fileOperation` events.
    pub file_operations: u64,
    /// `forwardOpened` events.
    pub forwards: u64,
    /// The earliest event time seen for it (its age, for eviction and ordering).
    pub first_seen: Timestamp,
}

impl Session {
    fn new(namespace: &str, id: &str, time: Timestamp) -> Self {
        Self {
            id: id.to_owned(),
            namespace: namespace.to_owned(),
            request: None,
            user: None,
            host: None,
            login: None,
            kind: None,
            start: None,
            end: None,
            bytes_to_target: None,
            bytes_to_client: None,
            exit_status: None,
            recording: None,
            commands: 0,
            file_operations: 0,
            forwards: 0,
            first_seen: time,
        }
    }

    /// When it started, else the first time it was seen.
    pub fn started(&self) -> Timestamp {
        self.start.unwrap_or(self.first_seen)
    }

    /// Fold `event` in; events may come in any order.
    fn fold(&mut self, event: &AuditEvent) {
        let time = event.time.0;
        self.first_seen = self.first_seen.min(time);
        let user = event.actor.as_ref().and_then(|a| a.user.clone());
        let fill = |slot: &mut Option<String>, value: &Option<String>| {
            if slot.is_none() {
                slot.clone_from(value);
            }
        };
        // The proxy's own facts name the requester; an operator event's actor may be an
        // approver, so only session facts and logins say whose session it is.
        let own = matches!(
            event.type_,
            EventType::SessionStarted | EventType::SessionEnded | EventType::LoginAccepted
        );
        if own && (self.user.is_none() || event.type_ == EventType::SessionStarted) {
            self.user = user.or(self.user.take());
        }
        if self.request.is_none() {
            self.request.clone_from(&event.request);
        }
        fill(&mut self.host, &event.host);
        fill(&mut self.login, &event.login);
        let detail = event.session.as_ref();
        match event.type_ {
            EventType::SessionStarted => {
                self.start = Some(time);
                let kind = detail
                    .map(|d| d.kind.clone())
                    .filter(|k| !k.is_empty())
                    .or_else(|| event.outcome.clone());
                if kind.is_some() {
                    self.kind = kind;
                }
            }
            EventType::SessionEnded => {
                self.end = Some(time);
                if let Some(d) = detail {
                    self.bytes_to_target = d.bytes_to_target.or(self.bytes_to_target);
                    self.bytes_to_client = d.bytes_to_client.or(self.bytes_to_client);
                    self.exit_status = d.exit_status.or(self.exit_status);
                    if self.kind.is_none() && !d.kind.is_empty() {
                        self.kind = Some(d.kind.clone());
                    }
                }
            }
            EventType::RecordingStored => {
                if let Some(recording) = &event.recording {
                    self.recording = Some(recording.clone());
                }
            }
            EventType::Command => self.commands += 1,
            EventType::FileOperation => self.file_operations += 1,
            EventType::ForwardOpened => self.forwards += 1,
            _ => {}
        }
    }
}

/// One field selector requirement on sessions (`spec.user=alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionField {
    /// `spec.user`.
    User(String),
    /// `spec.host`.
    Host(String),
    /// `spec.request` (the request's name).
    Request(String),
}

impl SessionField {
    fn matches(&self, session: &Session) -> bool {
        let is = |value: &Option<String>, want: &str| value.as_deref() == Some(want);
        match self {
            SessionField::User(want) => is(&session.user, want),
            SessionField::Host(want) => is(&session.host, want),
            SessionField::Request(want) => {
                session.request.as_ref().is_some_and(|r| r.name == *want)
            }
        }
    }
}

/// The filters of an `auditevents` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this namespace's events (`None`: every event, with or without a namespace).
    pub namespace: Option<String>,
    /// Only events by this user (their actor) or about this user's requests (an approval of
    /// alice's request is part of alice's story; the requester is who created the request).
    pub user: Option<String>,
    /// Only these types (empty: all).
    pub types: Vec<EventType>,
    /// From this time on (inclusive).
    pub from: Option<Timestamp>,
    /// Before this time (exclusive).
    pub to: Option<Timestamp>,
    /// Only events after this one (a list's `continue` token).
    pub after: Option<EventKey>,
}

impl EventQuery {
    fn matches(&self, event: &AuditEvent, requester: Option<&str>) -> bool {
        let namespace = match &self.namespace {
            Some(ns) => event.namespace.as_deref() == Some(ns.as_str()),
            None => true,
        };
        let user = match &self.user {
            Some(user) => {
                event
                    .actor
                    .as_ref()
                    .and_then(|a| a.user.as_deref())
                    .is_some_and(|u| u == user)
                    || requester == Some(user.as_str())
            }
            None => true,
        };
        let type_ = self.types.is_empty() || self.types.contains(&event.type_);
        namespace && user && type_
    }
}

/// Sessions and events, from the batches added so far.
#[derive(Debug)]
pub struct Index {
    max_events: usize,
    events: BTreeMap<EventKey, AuditEvent>,
    sessions: BTreeMap<(String, String), Session>,
    /// (first seen, namespace, id) of every session: the oldest is evicted first.
    session_ages: BTreeSet<(Timestamp, String, String)>,
    batches: BTreeSet<(Arc<str>, u64)>,
    /// (SHA-256, recorded previous SHA-256) of every whole batch, to check the chain links.
    links: BTreeMap<(Arc<str>, u64), (String, String)>,
    chain_breaks: Vec<BatchProblem>,
    dropped_events: u64,
    dropped_sessions: u64,
    /// Who created each request (from its kept `requestCreated` event; dropped with it, so
    /// this holds at most as many entries as events).
    requesters: BTreeMap<(String, String), String>,
}

/// The request an event is about, as (namespace, uid or else name).
fn request_of(event: &AuditEvent) -> Option<(String, String)> {
    let request = event.request.as_ref()?;
    let id = match request.uid.is_empty() {
        true => request.name.clone(),
        false => request.uid.clone(),
    };
    Some((event.namespace.clone().unwrap_or_default(), id))
}

impl Index {
    /// An empty index keeping at most `max_events` events (and as many sessions).
    pub fn new(max_events: usize) -> Self {
        Self {
            max_events: max_events.max(1),
            events: BTreeMap::new(),
            sessions: BTreeMap::new(),
            session_ages: BTreeSet::new(),
            batches: BTreeSet::new(),
            links: BTreeMap::new(),
            chain_breaks: Vec::new(),
            dropped_events: 0,
            dropped_sessions: 0,
            requesters: BTreeMap::new(),
        }
    }

    /// Whether the batch under `key` was added (or skipped as broken) already.
    pub fn has_batch(&self, key: &str) -> bool {
        parse_batch_key(key)
            .is_some_and(|(writer, sequence)| self.batches.contains(&(Arc::from(writer), sequence)))
    }

    /// Remember the batch under `key` as skipped (it could not be read as text), so it is not
    /// fetched again.
    pub fn skip_batch(&mut self, key: &str) {
        if let Some((writer, sequence)) = parse_batch_key(key) {
            self.batches.insert((Arc::from(writer), sequence));
        }
    }

    /// Add the batch stored under `key`, returning how many events it held. A batch that is
    /// not whole, or whose header names another writer or sequence than its key, is skipped
    /// (and remembered, so it is not fetched again) with the reason.
    pub fn add_batch(&mut self, key: &str, text: &str) -> Result<usize, BatchProblem> {
        let problem = |problem: String| BatchProblem {
            key: key.to_owned(),
            problem,
        };
        let (writer, sequence) =
            parse_batch_key(key).ok_or_else(|| problem("not an audit batch key".to_owned()))?;
        let writer: Arc<str> = Arc::from(writer);
        if !self.batches.insert((Arc::clone(&writer), sequence)) {
            return Ok(0);
        }
        verify_chain(&[text], None).map_err(|e| problem(e.to_string()))?;
        let mut lines = text.lines();
        let header: BatchHeader = lines
            .next()
            .and_then(|line| serde_json::from_str(line).ok())
            .ok_or_else(|| problem("no header".to_owned()))?;
        if *header.writer != *writer || header.sequence != sequence {
            return Err(problem(format!(
                "the header says writer {} sequence {}, the key {writer} {sequence}",
                header.writer, header.sequence
            )));
        }
        let mut events = Vec::new();
        for line in lines {
            let event: AuditEvent =
                serde_json::from_str(line).map_err(|e| problem(e.to_string()))?;
            events.push(event);
        }
        self.link(
            &writer,
            sequence,
            batch_sha256(text),
            header.previous_batch_sha256,
        );
        let count = events.len();
        for (index, event) in events.into_iter().enumerate() {
            let key = EventKey {
                time: event.time.0,
                writer: Arc::clone(&writer),
                sequence,
                index: index as u64,
            };
            self.fold_session(&event);
            if event.type_ == EventType::RequestCreated
                && let (Some(request), Some(user)) = (
                    request_of(&event),
                    event.actor.as_ref().and_then(|a| a.user.clone()),
                )
            {
                self.requesters.insert(request, user);
            }
            self.events.insert(key, event);
        }
        while self.events.len() > self.max_events {
            if let Some((_, dropped)) = self.events.pop_first()
                && dropped.type_ == EventType::RequestCreated
                && let Some(request) = request_of(&dropped)
            {
                self.requesters.remove(&request);
            }
            self.dropped_events += 1;
        }
        Ok(count)
    }

    /// Record batch `sequence`'s hashes and check its links to the neighbours already known:
    /// a mismatch means a batch was edited or replaced (its events are still served; the
    /// break is reported, see [`take_chain_breaks`](Self::take_chain_breaks)).
    fn link(&mut self, writer: &Arc<str>, sequence: u64, sha256: String, previous: String) {
        let broken = |earlier: u64, actual: &str, recorded: &str| BatchProblem {
            key: batch_key(writer, earlier.saturating_add(1)),
            problem: format!(
                "the chain is broken: batch {earlier} has SHA-256 {actual}, the next batch records {recorded}"
            ),
        };
        if sequence == 0 && !previous.is_empty() {
            self.chain_breaks.push(BatchProblem {
                key: batch_key(writer, 0),
                problem: "the first batch records a previous batch".to_owned(),
            });
        }
        if let Some(before) = sequence.checked_sub(1)
            && let Some((actual, _)) = self.links.get(&(Arc::clone(writer), before))
            && *actual != previous
        {
            let problem = broken(before, actual, &previous);
            self.chain_breaks.push(problem);
        }
        if let Some(after) = sequence.checked_add(1)
            && let Some((_, recorded)) = self.links.get(&(Arc::clone(writer), after))
            && *recorded != sha256
        {
            let problem = broken(sequence, &sha256, recorded);
            self.chain_breaks.push(problem);
        }
        self.links
            .insert((Arc::clone(writer), sequence), (sha256, previous));
    }

    /// The chain breaks found since the last call (for logs and a metric).
    pub fn take_chain_breaks(&mut self) -> Vec<BatchProblem> {
        std::mem::take(&mut self.chain_breaks)
    }

    fn fold_session(&mut self, event: &AuditEvent) {
        let (Some(id), Some(namespace)) = (&event.session_id, &event.namespace) else {
            return;
        };
        let key = (namespace.clone(), id.clone());
        let time = event.time.0;
        let old = self.sessions.get(&key).map(age);
        let session = self
            .sessions
            .entry(key)
            .or_insert_with(|| Session::new(namespace, id, time));
        session.fold(event);
        let new = age(session);
        if old.as_ref() != Some(&new) {
            if let Some(old) = old {
                self.session_ages.remove(&old);
            }
            self.session_ages.insert(new);
        }
        while self.sessions.len() > self.max_events {
            let Some((_, ns, id)) = self.session_ages.pop_first() else {
                break;
            };
            self.sessions.remove(&(ns, id));
            self.dropped_sessions += 1;
        }
    }

    /// Events kept.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Sessions kept.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Events dropped (oldest first) to stay within the bound.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Sessions dropped (oldest first) to stay within the bound.
    pub fn dropped_sessions(&self) -> u64 {
        self.dropped_sessions
    }

    /// Session `id` of `namespace`.
    pub fn session(&self, namespace: &str, id: &str) -> Option<&Session> {
        self.sessions.get(&(namespace.to_owned(), id.to_owned()))
    }

    /// Sessions of `namespace` (`None`: all) matching every `fields` requirement, by start
    /// time, then namespace and id.
    pub fn sessions(&self, namespace: Option<&str>, fields: &[SessionField]) -> Vec<&Session> {
        let mut found: Vec<&Session> = self
            .sessions
            .values()
            .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
            .filter(|s| fields.iter().all(|f| f.matches(s)))
            .collect();
        found.sort_by(|a, b| {
            (a.started(), &a.namespace, &a.id).cmp(&(b.started(), &b.namespace, &b.id))
        });
        found
    }

    /// The events of session `id` of `namespace`, in order.
    pub fn session_events(&self, namespace: &str, id: &str) -> Vec<(&EventKey, &AuditEvent)> {
        self.events
            .iter()
            .filter(|(_, e)| {
                e.session_id.as_deref() == Some(id) && e.namespace.as_deref() == Some(namespace)
            })
            .collect()
    }

    /// The first `max` events `query` selects, in order.
    pub fn events(&self, query: &EventQuery, max: usize) -> Vec<(&EventKey, &AuditEvent)> {
        let from = EventKey {
            time: query.from.unwrap_or(Timestamp::MIN),
            writer: Arc::from(""),
            sequence: 0,
            index: 0,
        };
        let start = match &query.after {
            Some(after) if *after >= from => Bound::Excluded(after.clone()),
            _ => Bound::Included(from),
        };
        self.events
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| query.to.is_none_or(|to| key.time < to))
            .filter(|(_, e)| {
                let requester = request_of(e)
                    .and_then(|r| self.requesters.get(&r))
                    .map(String::as_str);
                query.matches(e, requester)
            })
            .take(max)
            .collect()
    }
}

fn age(session: &Session) -> (Timestamp, String, String) {
    (
        session.first_seen,
        session.namespace.clone(),
        session.id.clone(),
    )
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
