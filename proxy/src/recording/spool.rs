//! The on-disk spool, as a session writes it. Data comes from a session task through a
//! [`Recorder`] (terminal bytes, resizes, notices); it goes to `<spool>/<session>.cast`
//! (asciinema v2, output escaped straight into a growing buffer and coalesced into few events)
//! and `<spool>/<session>.json` (the [`SessionMeta`] plus completion), which [`scan`]
//! ([`super::spooled`]: the spool as the uploader finds it) hands to the uploader, also after a
//! crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::SessionMeta;
use super::asciicast::{Utf8Stream, close_event, escape_json_into, header_line, open_event};
use super::budget::{Charge, SessionBudget, SpoolBudget, within_budget};
use super::sftp::{AuditEvent, SftpAudit};
pub use super::spooled::{SpooledRecording, remove_leftovers, scan};
use crate::error::{Error, Result};

/// Buffered bytes older than this are written out on the next event, so an interactive echo
/// reaches the file at once while bulk output is not one syscall per chunk.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Bulk output is written once this much is buffered (in pieces of about this size).
const BUFFER_BYTES: usize = 64 * 1024;
/// What the buffer keeps between bursts: an idle session holds no more than this.
const IDLE_BUFFER_BYTES: usize = 4 * 1024;
/// Chunks of one kind that follow each other within this long go into one event...
const COALESCE_WINDOW: Duration = Duration::from_millis(10);
/// ...until its data reaches this size (escaped).
const COALESCE_BYTES: usize = 32 * 1024;
/// What closes an event line: the data's quote, the bracket, the newline.
const EVENT_END: &[u8] = b"\"]\n";

/// The `.json` next to a `.cast`: the session's metadata and whether it ended cleanly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct SpoolMeta {
    #[serde(flatten)]
    pub(super) meta: SessionMeta,
    /// False while recording, and forever if the proxy died mid-session.
    #[serde(default)]
    pub(super) complete: bool,
    pub(super) end: Option<jiff::Timestamp>,
    pub(super) exit_status: Option<u32>,
}

/// Records one session into the spool directory.
#[derive(Debug)]
pub struct Recorder {
    meta: SessionMeta,
    cast_path: PathBuf,
    meta_path: PathBuf,
    cast: File,
    /// Event lines not written yet, the [`OpenEvent`] (if any) at its end. It grows as needed
    /// (an idle session's stays small) and is written out past [`BUFFER_BYTES`] and on flush.
    buffer: Vec<u8>,
    open: Option<OpenEvent>,
    started: Instant,
    last_flush: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    budget: SessionBudget,
    /// For `sftp` subsystems: what the transfer does, as audit events.
    sftp: Option<SftpAudit>,
    /// Told about each of those events but file content (for the proxy's audit log).
    file_ops: Option<FileOps>,
}

/// What [`Recorder::on_file_operation`] calls.
struct FileOps(Box<dyn Fn(&AuditEvent) + Send + Sync>);

impl std::fmt::Debug for FileOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileOps")
    }
}

/// The event being filled at the end of [`Recorder::buffer`]: output (or input) chunks that
/// follow each other closely are escaped straight into one event instead of one event each.
#[derive(Debug, Clone, Copy)]
struct OpenEvent {
    code: &'static str,
    opened: Instant,
    /// Where its line starts in the buffer.
    start: usize,
    /// Where its data starts in the buffer.
    data: usize,
}

impl Recorder {
    /// Start recording: claims `<dir>/<session_id>.cast` (which must not exist yet), writes the
    /// header to it, and writes `<dir>/<session_id>.json` marked incomplete. The directory must
    /// exist: a missing spool is a configuration error, not something to paper over.
    pub fn create(spool_dir: &Path, meta: SessionMeta) -> Result<Recorder> {
        Self::create_within(spool_dir, meta, SpoolBudget::unlimited())
    }

    /// [`create`](Self::create), counting every line against `budget`: refused when the spool
    /// is full; once the session's or the spool's limit is reached, the write that would
    /// break it fails with [`Error::SpoolBudget`] and later ones are dropped (the recording
    /// stays valid, complete up to the limit, and can still be finished).
    pub fn create_within(
        spool_dir: &Path,
        meta: SessionMeta,
        budget: std::sync::Arc<SpoolBudget>,
    ) -> Result<Recorder> {
        budget.admits_new().map_err(Error::from)?;
        let id = &meta.session_id;
        let cast_path = spool_dir.join(format!("{id}.cast"));
        let meta_path = spool_dir.join(format!("{id}.json"));
        // The id names files: refuse anything that could escape the directory or hide a file.
        if id.is_empty()
            || id.starts_with('.')
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::WriteSpool {
                path: cast_path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "unusable session id"),
            });
        }
        let started = Instant::now();
        // create_new: two sessions with one id must not share (or truncate) a file.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&cast_path)
            .map_err(|source| Error::WriteSpool {
                path: cast_path.clone(),
                source,
            })?;
        let mut recorder = Recorder {
            cast: file,
            buffer: Vec::new(),
            open: None,
            meta,
            cast_path,
            meta_path,
            started,
            last_flush: started,
            output: Utf8Stream::new(),
            input: Utf8Stream::new(),
            budget: SessionBudget::new(budget),
            sftp: None,
            file_ops: None,
        };
        if matches!(&recorder.meta.kind, super::SessionKind::Subsystem { name } if name == "sftp") {
            recorder.sftp = Some(SftpAudit::keeping(recorder.meta.sftp_content_bytes));
        }
        let ready = recorder.write_header().and_then(|()| {
            write_meta(
                &recorder.meta_path,
                &SpoolMeta {
                    meta: recorder.meta.clone(),
                    complete: false,
                    end: None,
                    exit_status: None,
                },
            )
        });
        if let Err(e) = ready {
            // Nothing was recorded and the caller refuses the session: leave no half spool
            // behind. The original error is the one worth reporting.
            let _ = fs::remove_file(&recorder.cast_path);
            return Err(e);
        }
        Ok(recorder)
    }

    fn write_header(&mut self) -> Result<()> {
        let header = header_line(&self.meta);
        self.write_line(&header)?;
        self.flush()
    }

    /// Terminal output from the target (an `"o"` event).
    pub fn output(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream("o", bytes)
    }

    /// Keystrokes from the engineer (an `"i"` event); does nothing unless the session records
    /// input.
    pub fn input(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(audit) = &mut self.sftp {
            for event in audit.from_client(bytes).map_err(Error::from)? {
                self.audit(&event)?;
            }
        }
        if !self.meta.record_input {
            return Ok(());
        }
        self.stream("i", bytes)
    }

    /// Output of a subsystem, which is not a terminal: followed for the SFTP audit, not
    /// recorded (but for file content read, when the policy keeps it).
    pub fn subsystem_output(&mut self, bytes: &[u8]) -> Result<()> {
        let events = match &mut self.sftp {
            Some(audit) => audit.from_server(bytes).map_err(Error::from)?,
            None => return Ok(()),
        };
        for event in &events {
            self.audit(event)?;
        }
        Ok(())
    }

    /// Call `hook` with every SFTP audit event but file content, as the audit finds them.
    pub fn on_file_operation(&mut self, hook: impl Fn(&AuditEvent) + Send + Sync + 'static) {
        self.file_ops = Some(FileOps(Box::new(hook)));
    }

    /// An audit event: an `"m"` (marker) event in the recording and a log line.
    fn audit(&mut self, event: &AuditEvent) -> Result<()> {
        let text = event.describe();
        // File content (kept by recording.fileContent) goes into the recording only.
        if !event.logged() {
            return self.event("m", &text);
        }
        if let Some(hook) = &self.file_ops {
            (hook.0)(event);
        }
        tracing::info!(session = %self.meta.session_id, request = %self.meta.request_name,
            namespace = %self.meta.request_namespace, requester = %self.meta.requester,
            host = %self.meta.host, event = %text, "sftp");
        self.event("m", &text)
    }

    /// The terminal was resized (an `"r"` event).
    pub fn resize(&mut self, width: u32, height: u32) -> Result<()> {
        self.event("r", &format!("{width}x{height}"))
    }

    /// A message from the proxy itself (e.g. why it ended the session), shown as output;
    /// written even over budget, so a recording cut at its limit says why.
    pub fn note(&mut self, text: &str) -> Result<()> {
        self.close_event()?;
        let start = self.buffer.len();
        open_event(&mut self.buffer, self.started.elapsed(), "o");
        escape_json_into(&mut self.buffer, text);
        close_event(&mut self.buffer);
        self.buffer.push(b'\n');
        self.budget.charge_note((self.buffer.len() - start) as u64);
        self.flush()
    }

    /// The `.cast` file being written.
    pub fn cast_path(&self) -> &Path {
        &self.cast_path
    }

    /// Whether the budget stopped this recording (what follows the limit is not in it).
    pub fn over_budget(&self) -> bool {
        self.budget.exceeded()
    }

    /// Write out whatever is buffered now. Events flush by themselves when the previous flush
    /// is older than 100 ms; a caller with a timer can call this so the last burst before a
    /// quiet spell is on disk too.
    pub fn flush(&mut self) -> Result<()> {
        self.close_event()?;
        self.write_buffer()?;
        self.buffer.shrink_to(IDLE_BUFFER_BYTES);
        self.last_flush = Instant::now();
        Ok(())
    }

    /// End the recording: write out and fsync the `.cast`, then mark the `.json` complete with
    /// the end time and the exit status.
    pub fn finish(mut self, exit_status: Option<u32>) -> Result<SpooledRecording> {
        // A character cut off by the end of the stream is shown as U+FFFD rather than lost.
        let tail = self.output.finish();
        within_budget(self.event("o", &tail))?;
        if self.meta.record_input {
            let tail = self.input.finish();
            within_budget(self.event("i", &tail))?;
        }
        self.flush()?;
        self.cast.sync_all().map_err(|source| Error::WriteSpool {
            path: self.cast_path.clone(),
            source,
        })?;
        let end = jiff::Timestamp::now();
        write_meta(
            &self.meta_path,
            &SpoolMeta {
                meta: self.meta.clone(),
                complete: true,
                end: Some(end),
                exit_status,
            },
        )?;
        Ok(SpooledRecording {
            meta: self.meta.clone(),
            cast_path: self.cast_path.clone(),
            meta_path: self.meta_path.clone(),
            end: Some(end),
            exit_status,
        })
    }

    /// Chunks of a byte stream (`"o"` or `"i"`): decoded and escaped straight into the open
    /// event of that kind, or a new one. Each chunk is charged to the budget as it goes in
    /// (a new event with its brackets), so an event cut at the limit keeps what came before.
    fn stream(&mut self, code: &'static str, bytes: &[u8]) -> Result<()> {
        if self
            .open
            .is_some_and(|o| o.code != code || o.opened.elapsed() >= COALESCE_WINDOW)
        {
            self.close_event()?;
        }
        let before = self.buffer.len();
        let opened_now = self.open.is_none();
        let open = self.open_event(code);
        let header = self.buffer.len();
        let buffer = &mut self.buffer;
        let text = if code == "i" {
            &mut self.input
        } else {
            &mut self.output
        };
        text.push_into(bytes, &mut |piece| escape_json_into(buffer, piece));
        if self.buffer.len() == header {
            // Only the start of a character: nothing to show yet.
            if opened_now {
                self.buffer.truncate(before);
                self.open = None;
            }
            return Ok(());
        }
        let closing = if opened_now { EVENT_END.len() } else { 0 };
        match self
            .budget
            .charge((self.buffer.len() - before + closing) as u64)
        {
            Charge::Write => {}
            refused => {
                self.buffer.truncate(before);
                if opened_now {
                    self.open = None;
                }
                self.close_event()?;
                return match refused {
                    Charge::Exceeded(exceeded) => Err(exceeded.into()),
                    _ => Ok(()),
                };
            }
        }
        if self.buffer.len() - open.data >= COALESCE_BYTES {
            self.close_event()?;
        }
        self.flush_if_due()
    }

    /// A whole event of its own (resize, marker, the end of a stream).
    fn event(&mut self, code: &'static str, data: &str) -> Result<()> {
        // A chunk holding only the start of a character has nothing to show yet.
        if data.is_empty() {
            return Ok(());
        }
        self.close_event()?;
        let start = self.buffer.len();
        open_event(&mut self.buffer, self.started.elapsed(), code);
        escape_json_into(&mut self.buffer, data);
        close_event(&mut self.buffer);
        self.buffer.push(b'\n');
        match self.budget.charge((self.buffer.len() - start) as u64) {
            Charge::Write => {}
            Charge::Drop => self.buffer.truncate(start),
            Charge::Exceeded(exceeded) => {
                self.buffer.truncate(start);
                return Err(exceeded.into());
            }
        }
        if self.buffer.len() >= BUFFER_BYTES {
            self.write_buffer()?;
        }
        self.flush_if_due()
    }

    /// The open event of `code`, opened now unless one is open.
    fn open_event(&mut self, code: &'static str) -> OpenEvent {
        if let Some(open) = self.open {
            return open;
        }
        let start = self.buffer.len();
        open_event(&mut self.buffer, self.started.elapsed(), code);
        let open = OpenEvent {
            code,
            opened: Instant::now(),
            start,
            data: self.buffer.len(),
        };
        self.open = Some(open);
        open
    }

    /// Finish the open event (charged already, brackets and all), and write the buffer out
    /// once it is large.
    fn close_event(&mut self) -> Result<()> {
        if self.open.take().is_none() {
            return Ok(());
        }
        self.buffer.extend_from_slice(EVENT_END);
        if self.buffer.len() >= BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(())
    }

    fn flush_if_due(&mut self) -> Result<()> {
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    /// A line of its own (the header), charged to the budget.
    fn write_line(&mut self, line: &str) -> Result<()> {
        match self.budget.charge(line.len() as u64 + 1) {
            Charge::Write => {
                self.buffer.extend_from_slice(line.as_bytes());
                self.buffer.push(b'\n');
                Ok(())
            }
            Charge::Drop => Ok(()),
            Charge::Exceeded(exceeded) => Err(exceeded.into()),
        }
    }

    /// Write the closed events in the buffer to the file (the open one stays).
    fn write_buffer(&mut self) -> Result<()> {
        let end = self.open.map_or(self.buffer.len(), |o| o.start);
        if end == 0 {
            return Ok(());
        }
        self.cast
            .write_all(&self.buffer[..end])
            .map_err(|source| Error::WriteSpool {
                path: self.cast_path.clone(),
                source,
            })?;
        self.buffer.drain(..end);
        if let Some(open) = &mut self.open {
            open.start -= end;
            open.data -= end;
        }
        Ok(())
    }
}

impl Drop for Recorder {
    /// A recorder dropped without [`Recorder::finish`] (its session task was aborted) still
    /// leaves what it buffered in the spool, for the next start to upload.
    fn drop(&mut self) {
        let _ = self.close_event().and_then(|()| self.write_buffer());
    }
}

/// Write `meta` to `path` atomically: a temporary file in the same directory, fsynced, renamed
/// over `path`, then the directory fsynced so the rename survives a crash.
fn write_meta(path: &Path, meta: &SpoolMeta) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::WriteSpool { path, source }
    };
    let json = serde_json::to_vec_pretty(meta)
        .map_err(io::Error::from)
        .map_err(write_err(path))?;
    let mut file = File::create(&tmp).map_err(write_err(&tmp))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(write_err(&tmp))?;
    fs::rename(&tmp, path).map_err(write_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::Value;

    use super::*;
    use crate::recording::tests::{events, lines, meta};

    #[test]
    fn records_output_resize_and_notes_but_not_input_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::create(dir.path(), meta("aaaa000000000001")).unwrap();
        rec.output(b"$ ls\r\n").unwrap();
        rec.input(b"secret-password\r").unwrap();
        rec.output("caf\u{e9}".as_bytes().split_at(4).0).unwrap();
        rec.output(&[0xa9, b'\n']).unwrap();
        rec.resize(100, 30).unwrap();
        rec.note("\r\n[gatehouse] session ended: access revoked\r\n")
            .unwrap();
        let done = rec.finish(Some(0)).unwrap();

        assert_eq!(done.cast_path, dir.path().join("aaaa000000000001.cast"));
        let lines = lines(&done.cast_path);
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["gatehouse"]["sessionId"], "aaaa000000000001");
        for event in &lines[1..] {
            assert!(event[0].as_f64().unwrap() >= 0.0, "{event}");
        }
        // Chunks in quick succession are one event (the note is an event of its own).
        assert_eq!(
            events(&lines, "o"),
            [
                "$ ls\r\ncaf\u{e9}\n",
                "\r\n[gatehouse] session ended: access revoked\r\n"
            ]
        );
        assert_eq!(events(&lines, "r"), ["100x30"]);
        assert!(events(&lines, "i").is_empty());
        let text = fs::read_to_string(&done.cast_path).unwrap();
        assert!(!text.contains("secret-password"));

        let json: Value = serde_json::from_slice(&fs::read(&done.meta_path).unwrap()).unwrap();
        assert_eq!(json["complete"], true);
        assert_eq!(json["exitStatus"], 0);
        assert!(json["end"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json["requester"], "oidc:alice@example.com");
        assert_eq!(done.meta, meta("aaaa000000000001"));
    }

    #[test]
    fn records_input_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta("aaaa000000000002");
        m.record_input = true;
        let mut rec = Recorder::create(dir.path(), m).unwrap();
        rec.input(b"ls\r").unwrap();
        rec.output(b"ls\r\n").unwrap();
        let done = rec.finish(None).unwrap();
        let lines = lines(&done.cast_path);
        assert_eq!(events(&lines, "i"), ["ls\r"]);
        assert_eq!(events(&lines, "o"), ["ls\r\n"]);
        let json: Value = serde_json::from_slice(&fs::read(&done.meta_path).unwrap()).unwrap();
        assert_eq!(json["exitStatus"], Value::Null);
    }

    #[test]
    fn output_after_a_quiet_spell_is_on_disk_before_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::create(dir.path(), meta("aaaa000000000003")).unwrap();
        let cast = dir.path().join("aaaa000000000003.cast");
        // The header is flushed by create.
        assert_eq!(lines(&cast).len(), 1);
        std::thread::sleep(FLUSH_INTERVAL + Duration::from_millis(20));
        rec.output(b"x").unwrap();
        assert_eq!(events(&lines(&cast), "o"), ["x"]);
        rec.output(b"y").unwrap();
        rec.flush().unwrap();
        assert_eq!(events(&lines(&cast), "o"), ["x", "y"]);
    }

    #[test]
    fn a_burst_of_small_chunks_becomes_few_events_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta("aaaa000000000004");
        m.record_input = true;
        let mut rec = Recorder::create(dir.path(), m).unwrap();
        for _ in 0..100 {
            rec.output(b"ab\x1b").unwrap();
        }
        rec.output(&vec![b'x'; 100 * 1024]).unwrap();
        rec.input(b"q").unwrap();
        rec.output("\u{e9}".as_bytes()).unwrap();
        let done = rec.finish(Some(0)).unwrap();
        let lines = lines(&done.cast_path);
        let output = events(&lines, "o");
        assert_eq!(
            output.concat(),
            "ab\x1b".repeat(100) + &"x".repeat(100 * 1024) + "\u{e9}"
        );
        assert!(output.len() < 10, "{} output events", output.len());
        // The input came between the two bursts, and times never go back.
        let codes: Vec<&str> = lines[1..].iter().map(|e| e[1].as_str().unwrap()).collect();
        let input = codes.iter().position(|c| *c == "i").unwrap();
        assert!(codes[..input].iter().all(|c| *c == "o") && codes[input + 1..] == ["o"]);
        let times: Vec<f64> = lines[1..].iter().map(|e| e[0].as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }

    #[test]
    fn create_in_a_missing_spool_dir_fails_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        match Recorder::create(&spool, meta("cccc000000000001")) {
            Err(Error::WriteSpool { path, source }) => {
                assert_eq!(path, spool.join("cccc000000000001.cast"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected WriteSpool, got {other:?}"),
        }
        assert!(matches!(scan(&spool), Err(Error::ReadSpool { .. })));
    }

    #[test]
    fn create_refuses_a_duplicate_or_unsafe_session_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::create(dir.path(), meta("dddd000000000001")).unwrap();
        rec.output(b"first").unwrap();
        let err = Recorder::create(dir.path(), meta("dddd000000000001")).unwrap_err();
        assert!(matches!(err, Error::WriteSpool { .. }), "{err}");
        // The first session's files are untouched by the failed second create.
        let done = rec.finish(None).unwrap();
        assert_eq!(events(&lines(&done.cast_path), "o"), ["first"]);
        assert!(done.meta_path.exists());

        for bad in ["", "../x", ".hidden", "a/b"] {
            let err = Recorder::create(dir.path(), meta(bad)).unwrap_err();
            assert!(matches!(err, Error::WriteSpool { .. }), "{bad}: {err}");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
