//! The on-disk spool. Data comes from a session task through a [`Recorder`] (terminal bytes,
//! resizes, notices); it goes to `<spool>/<session>.cast` (asciinema v2) and
//! `<spool>/<session>.json` (the [`SessionMeta`] plus completion), which [`scan`] hands to the
//! uploader, also after a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::SessionMeta;
use super::asciicast::{Utf8Stream, event_line, header_line};
use super::budget::{Charge, SessionBudget, SpoolBudget, within_budget};
use super::sftp::{AuditEvent, SftpAudit};
use crate::error::{Error, Result};

/// Buffered bytes older than this are written out on the next event, so an interactive echo
/// reaches the file at once while bulk output is not one syscall per chunk.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The write buffer: bulk output is written in pieces of this size at most.
const BUFFER_BYTES: usize = 64 * 1024;

/// The `.json` next to a `.cast`: the session's metadata and whether it ended cleanly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct SpoolMeta {
    #[serde(flatten)]
    meta: SessionMeta,
    /// False while recording, and forever if the proxy died mid-session.
    #[serde(default)]
    complete: bool,
    end: Option<jiff::Timestamp>,
    exit_status: Option<u32>,
}

/// Records one session into the spool directory.
#[derive(Debug)]
pub struct Recorder {
    meta: SessionMeta,
    cast_path: PathBuf,
    meta_path: PathBuf,
    cast: BufWriter<File>,
    started: Instant,
    last_flush: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    budget: SessionBudget,
    /// For `sftp` subsystems: what the transfer does, as audit events.
    sftp: Option<SftpAudit>,
}

/// A recording on disk, finished or left behind by a proxy that stopped mid-session.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledRecording {
    /// The session's metadata.
    pub meta: SessionMeta,
    /// The asciinema file.
    pub cast_path: PathBuf,
    /// The metadata file next to it.
    pub meta_path: PathBuf,
    /// When the session ended (for a recording left by a crash: when its file was last
    /// written).
    pub end: Option<jiff::Timestamp>,
    /// The program's exit status, when it ended with one.
    pub exit_status: Option<u32>,
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
            cast: BufWriter::with_capacity(BUFFER_BYTES, file),
            meta,
            cast_path,
            meta_path,
            started,
            last_flush: started,
            output: Utf8Stream::new(),
            input: Utf8Stream::new(),
            budget: SessionBudget::new(budget),
            sftp: None,
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
        let text = self.output.push(bytes);
        self.event("o", &text)
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
        let text = self.input.push(bytes);
        self.event("i", &text)
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

    /// An audit event: an `"m"` (marker) event in the recording and a log line.
    fn audit(&mut self, event: &AuditEvent) -> Result<()> {
        let text = event.describe();
        // File content (kept by recording.fileContent) goes into the recording only.
        if !event.logged() {
            return self.event("m", &text);
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
        let line = event_line(self.started.elapsed(), "o", text);
        self.budget.charge_note(line.len() as u64 + 1);
        self.write_raw(&line)?;
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
        self.cast.flush().map_err(|source| Error::WriteSpool {
            path: self.cast_path.clone(),
            source,
        })?;
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
        self.cast
            .get_ref()
            .sync_all()
            .map_err(|source| Error::WriteSpool {
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
            meta: self.meta,
            cast_path: self.cast_path,
            meta_path: self.meta_path,
            end: Some(end),
            exit_status,
        })
    }

    fn event(&mut self, code: &str, data: &str) -> Result<()> {
        // A chunk holding only the start of a character has nothing to show yet.
        if data.is_empty() {
            return Ok(());
        }
        let line = event_line(self.started.elapsed(), code, data);
        self.write_line(&line)?;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        match self.budget.charge(line.len() as u64 + 1) {
            Charge::Write => self.write_raw(line),
            Charge::Drop => Ok(()),
            Charge::Exceeded(exceeded) => Err(exceeded.into()),
        }
    }

    fn write_raw(&mut self, line: &str) -> Result<()> {
        self.cast
            .write_all(line.as_bytes())
            .and_then(|()| self.cast.write_all(b"\n"))
            .map_err(|source| Error::WriteSpool {
                path: self.cast_path.clone(),
                source,
            })
    }
}

impl SpooledRecording {
    /// Delete the spool files (the `.cast` first, so a crash in between leaves a `.json` that
    /// [`scan`] reports rather than an orphaned recording nobody lists). Files already gone
    /// are fine.
    pub fn remove(&self) -> Result<()> {
        for path in [&self.cast_path, &self.meta_path] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::WriteSpool {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
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

/// Delete what a process killed mid-write leaves in `spool_dir` and nothing reads: `write_meta`
/// temporaries (the `.json` they would have replaced still names the recording), and `.cast`
/// files without their `.json` ([`Recorder::create`] writes the `.json` before it returns, and
/// [`SpooledRecording::remove`] deletes the `.cast` first, so such a file holds at most a
/// header). Call it at start-up, before any session can be writing. Returns what it deleted.
pub fn remove_leftovers(spool_dir: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |source| Error::ReadSpool {
        path: spool_dir.to_owned(),
        source,
    };
    let mut removed = Vec::new();
    for entry in fs::read_dir(spool_dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let temporary = name.starts_with('.') && name.ends_with(".json.tmp");
        let orphan_cast = !name.starts_with('.')
            && name.ends_with(".cast")
            && !path.with_extension("json").exists();
        if !(temporary || orphan_cast) {
            continue;
        }
        fs::remove_file(&path).map_err(|source| Error::WriteSpool {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), "removed a partial spool file left by an earlier run");
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// Every recording in `spool_dir`, finished or not, oldest first. A `.json` that can't be read
/// or parsed, or whose `.cast` is missing, is skipped with a warning and left in place for a
/// human to look at.
pub fn scan(spool_dir: &Path) -> Result<Vec<SpooledRecording>> {
    let read_err = |source| Error::ReadSpool {
        path: spool_dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(spool_dir).map_err(read_err)? {
        let meta_path = entry.map_err(read_err)?.path();
        let Some(name) = meta_path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Dot files are write_meta's temporaries.
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let text = match fs::read(&meta_path) {
            Ok(text) => text,
            Err(source) => {
                let error = Error::ReadSpool {
                    path: meta_path.clone(),
                    source,
                };
                tracing::warn!(path = %meta_path.display(), %error, "skipping spooled recording");
                continue;
            }
        };
        let spool: SpoolMeta = match serde_json::from_slice(&text) {
            Ok(spool) => spool,
            Err(source) => {
                let error = Error::ParseSpoolMeta {
                    path: meta_path.clone(),
                    source,
                };
                tracing::warn!(path = %meta_path.display(), %error, "skipping spooled recording");
                continue;
            }
        };
        let cast_path = meta_path.with_extension("cast");
        let written = match fs::metadata(&cast_path) {
            Ok(m) => m.modified().ok(),
            Err(e) => {
                tracing::warn!(
                path = %meta_path.display(),
                cast = %cast_path.display(),
                error = %e,
                "skipping spooled recording without its .cast",
                );
                continue;
            }
        };
        if !spool.complete {
            tracing::info!(
                path = %cast_path.display(),
                "found an unfinished recording left by an earlier run; uploading it as it is",
            );
        }
        let end = spool
            .end
            .or_else(|| written.and_then(|t| jiff::Timestamp::try_from(t).ok()));
        found.push(SpooledRecording {
            meta: spool.meta,
            cast_path,
            meta_path,
            end,
            exit_status: spool.exit_status,
        });
    }
    found.sort_by(|a, b| {
        (a.meta.start, &a.meta.session_id).cmp(&(b.meta.start, &b.meta.session_id))
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::Value;

    use super::*;
    use crate::recording::tests::meta;

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn events(lines: &[Value], code: &str) -> Vec<String> {
        lines[1..]
            .iter()
            .filter(|e| e[1] == code)
            .map(|e| e[2].as_str().unwrap().to_owned())
            .collect()
    }

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
        assert_eq!(
            events(&lines, "o"),
            [
                "$ ls\r\n",
                "caf",
                "\u{e9}\n",
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
    fn scan_finds_finished_and_unfinished_recordings_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut newer = meta("bbbb000000000001");
        newer.start = "2024-03-10T10:00:00Z".parse().unwrap();
        let mut rec = Recorder::create(dir.path(), newer.clone()).unwrap();
        rec.output(b"done").unwrap();
        let finished = rec.finish(Some(1)).unwrap();

        let older = meta("bbbb000000000002");
        let mut rec = Recorder::create(dir.path(), older.clone()).unwrap();
        rec.output(b"crash").unwrap();
        // A proxy that dies leaves the spool as it is: no finish.
        drop(rec);

        fs::write(dir.path().join("garbage.json"), "{not json").unwrap();
        fs::write(
            dir.path().join("nocast.json"),
            fs::read(&finished.meta_path).unwrap(),
        )
        .unwrap();

        let found = scan(dir.path()).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].meta, older);
        assert_eq!(found[0].cast_path, dir.path().join("bbbb000000000002.cast"));
        assert_eq!(found[0].meta_path, dir.path().join("bbbb000000000002.json"));
        assert_eq!(events(&lines(&found[0].cast_path), "o"), ["crash"]);
        assert_eq!(found[1], finished);
        // Skipped files are kept for a human.
        assert!(dir.path().join("garbage.json").exists());
        assert!(dir.path().join("nocast.json").exists());

        found[0].remove().unwrap();
        assert!(!found[0].cast_path.exists() && !found[0].meta_path.exists());
        assert_eq!(scan(dir.path()).unwrap(), [finished]);
    }

    #[test]
    fn leftovers_of_a_killed_process_are_removed_and_recordings_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Killed while marking a recording complete: its `.json` is still the incomplete one.
        let mut rec = Recorder::create(dir.path(), meta("eeee000000000001")).unwrap();
        rec.output(b"kept").unwrap();
        rec.flush().unwrap();
        drop(rec);
        let temporary = dir.path().join(".eeee000000000001.json.tmp");
        fs::write(&temporary, "{\"half").unwrap();
        // Killed between the header and the `.json`.
        let orphan = dir.path().join("eeee000000000002.cast");
        fs::write(&orphan, "{\"version\": 2}\n").unwrap();
        fs::write(dir.path().join("notes.txt"), "a human's file").unwrap();

        let removed = remove_leftovers(dir.path()).unwrap();
        assert_eq!(removed, [temporary.clone(), orphan.clone()]);
        assert!(!temporary.exists() && !orphan.exists());
        assert!(dir.path().join("notes.txt").exists());
        let found = scan(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(events(&lines(&found[0].cast_path), "o"), ["kept"]);
        assert_eq!(remove_leftovers(dir.path()).unwrap(), Vec::<PathBuf>::new());
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
