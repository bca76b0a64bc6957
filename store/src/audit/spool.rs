//! The audit spool on local disk, synchronous (the task runs it on the blocking pool). Data
//! comes from the writer's appends (event lines); it goes to sealed batch files that the
//! uploader copies to the store and then deletes. Files in the spool directory:
//! - `open.jsonl`: the open segment, one event line each, fsynced before an append is
//!   acknowledged;
//! - `<sequence:020>.jsonl`: sealed batches, exactly as they are stored, waiting for upload;
//! - `chain`: the last sealed batch ([`Head`] as JSON), so the chain continues after its
//!   batch was uploaded and deleted;
//! - `writer`: the writer the chain belongs to, `<pod>.<run id>`: a fresh spool is a new run
//!   with a random run id (a new chain from sequence 0, so no two runs ever share a key); a
//!   recovered spool keeps its writer and goes on with its chain ([`decide::identity`]);
//! - `.*.tmp`: files being written (renamed into place once fsynced; leftovers are removed).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use gatehouse_crds::audit::BatchHeader;
use sha2::{Digest, Sha256};

use super::decide::{self, Head, Identity};
use crate::error::{Error, Result};
use crate::objects::hex;

/// The open segment's file name.
pub const SEGMENT: &str = "open.jsonl";
/// The chain file's name.
pub const CHAIN: &str = "chain";
/// The file naming the spool's writer.
pub const WRITER: &str = "writer";

/// What opening the spool found of an earlier run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Events found in a leftover segment and kept.
    pub events: usize,
    /// Bytes of a torn last line dropped.
    pub torn_bytes: usize,
    /// Lines of the leftover segment that were not events (dropped).
    pub invalid_lines: usize,
    /// The leftover segment had already been sealed (its batch exists): dropped as a whole.
    pub already_sealed: bool,
    /// Sealed batches waiting for upload.
    pub sealed: usize,
    /// The spool was fresh: this is a new run, its writer named just now.
    pub new_run: bool,
}

/// The spool of one writer.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    writer: String,
    segment: File,
    /// Bytes of the segment known to be whole lines.
    segment_len: u64,
    /// Events in the segment.
    events: usize,
    /// The last sealed batch; `None` inside `Some`: a new chain.
    head: Option<Option<Head>>,
    /// Set by a write that could not be undone: every later append fails (fail closed).
    broken: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::AuditSpool { path, source }
}

/// Write `data` to `dir/name` durably: a temporary file, fsynced, renamed, the dir fsynced.
fn write_durably(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(data).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io(&dest))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The writer of the spool in `dir` (holding `holds_chain`) for pod `pod`: the one its
/// `writer` file names, else (written durably before anything is sealed) the bare pod name
/// for an earlier version's chain, or a new run's `<pod>.<run id>`. True: a new run.
fn writer_of(dir: &Path, pod: &str, holds_chain: bool) -> Result<(String, bool)> {
    let path = dir.join(WRITER);
    let stored = match fs::read(&path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    let (writer, new_run) = match decide::identity(stored.as_deref(), holds_chain) {
        Identity::Kept(writer) => return Ok((writer, false)),
        Identity::Invalid => {
            return Err(Error::AuditSpool {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "holds no writer name ([a-z0-9.-], 1-253 characters)",
                ),
            });
        }
        Identity::Legacy => (pod.to_owned(), false),
        Identity::NewRun => {
            let random = getrandom::u64().map_err(|e| Error::AuditRunId(e.to_string()))?;
            (decide::run_writer(pod, &decide::run_id(random)), true)
        }
    };
    write_durably(dir, WRITER, format!("{writer}\n").as_bytes())?;
    Ok((writer, new_run))
}

/// Sealed batches in `dir`, by sequence.
pub fn sealed(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(sequence) = decide::parse_batch_name(name) {
            found.push((sequence, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The head a stored or sealed batch's bytes stand for.
pub fn head_of(sequence: u64, bytes: &[u8]) -> Head {
    let previous_sha256 = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.lines().next())
        .and_then(|line| serde_json::from_str::<BatchHeader>(line).ok())
        .map(|header| header.previous_batch_sha256)
        .unwrap_or_default();
    Head {
        sequence,
        sha256: hex(&Sha256::digest(bytes)),
        previous_sha256,
    }
}

impl Spool {
    /// Open (creating) `dir` for pod `pod` and recover what an earlier run left: its writer
    /// (a fresh spool starts a new run, see [`Spool::writer`]), the chain from the chain file
    /// or the newest sealed batch, and the leftover segment, repaired (a torn last line and
    /// lines that are not events dropped), dropped if it was already sealed. The chain is
    /// new for a new run, and unknown (see [`Spool::set_head`]) when a spool that names its
    /// writer holds no trace of the chain.
    pub fn open(dir: &Path, pod: &str) -> Result<(Spool, Recovered)> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        let chain_path = dir.join(CHAIN);
        let segment_path = dir.join(SEGMENT);
        let leftover = match fs::read(&segment_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&segment_path)(e)),
        };
        let waiting = sealed(dir)?;
        let holds_chain = chain_path.exists() || !waiting.is_empty() || !leftover.is_empty();
        let (writer, new_run) = writer_of(dir, pod, holds_chain)?;
        let writer = writer.as_str();
        let mut head: Option<Head> = match fs::read(&chain_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| Error::AuditSpool {
                    path: chain_path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&chain_path)(e)),
        };
        if let Some((sequence, path)) = waiting.last()
            && head.as_ref().is_none_or(|h| h.sequence < *sequence)
        {
            // Sealed, but the chain file was not rewritten before the crash.
            head = Some(head_of(*sequence, &fs::read(path).map_err(io(path))?));
        }
        let known = new_run || head.is_some() || !waiting.is_empty();
        let mut recovered = Recovered {
            sealed: waiting.len(),
            new_run,
            ..Recovered::default()
        };
        let mut events = 0;
        if !leftover.is_empty() {
            let segment = decide::split_segment(&leftover);
            recovered.torn_bytes = segment.torn_bytes;
            recovered.invalid_lines = segment.invalid_lines.len();
            if decide::already_sealed(writer, head.as_ref(), &segment.events) {
                recovered.already_sealed = true;
                write_durably(dir, SEGMENT, b"")?;
            } else {
                recovered.events = segment.events.len();
                events = segment.events.len();
                if segment.torn_bytes > 0 || !segment.invalid_lines.is_empty() {
                    let mut kept = String::new();
                    for event in &segment.events {
                        kept.push_str(&event.to_line());
                        kept.push('\n');
                    }
                    write_durably(dir, SEGMENT, kept.as_bytes())?;
                }
            }
        }
        let segment = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&segment_path)
            .map_err(io(&segment_path))?;
        let segment_len = segment.metadata().map_err(io(&segment_path))?.len();
        sync_dir(dir)?;
        let spool = Spool {
            dir: dir.to_owned(),
            writer: writer.to_owned(),
            segment,
            segment_len,
            events,
            head: known.then_some(head),
            broken: false,
        };
        Ok((spool, recovered))
    }

    /// The writer of the spool's chain (every batch header's, and its keys').
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Events in the open segment.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Is the chain known (the last sealed batch, or that there is none)?
    pub fn chain_known(&self) -> bool {
        self.head.is_some()
    }

    /// The last sealed batch, when the chain is known.
    pub fn head(&self) -> Option<Option<&Head>> {
        self.head.as_ref().map(Option::as_ref)
    }

    /// Where the chain stands, learnt from the store (`None`: the writer has no batches).
    /// Ignored once the chain is known.
    pub fn set_head(&mut self, head: Option<Head>) {
        if self.head.is_none() {
            self.head = Some(head);
        }
    }

    /// Append `lines` (one event each, no newline) and fsync. On an error nothing of them
    /// stays (the segment is cut back), or, if that fails too, the spool refuses all appends.
    pub fn append(&mut self, lines: &[String]) -> Result<()> {
        let path = self.dir.join(SEGMENT);
        if self.broken {
            return Err(Error::AuditBroken);
        }
        let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            data.extend_from_slice(line.as_bytes());
            data.push(b'\n');
        }
        let written = self
            .segment
            .write_all(&data)
            .and_then(|()| self.segment.sync_data());
        if let Err(error) = written {
            let undone = self
                .segment
                .set_len(self.segment_len)
                .and_then(|()| self.segment.sync_data());
            if undone.is_err() {
                self.broken = true;
            }
            return Err(io(&path)(error));
        }
        self.segment_len += data.len() as u64;
        self.events += lines.len();
        Ok(())
    }

    /// Seal the open segment into the next batch (written durably), record it in the chain
    /// file, empty the segment. Returns the batch's sequence; None when the segment is empty
    /// or the chain is not known yet.
    pub fn seal(&mut self) -> Result<Option<u64>> {
        if self.broken {
            return Err(Error::AuditBroken);
        }
        let Some(head) = &self.head else {
            return Ok(None);
        };
        if self.events == 0 {
            return Ok(None);
        }
        let path = self.dir.join(SEGMENT);
        let bytes = fs::read(&path).map_err(io(&path))?;
        let segment = decide::split_segment(&bytes);
        let (sealed, text) = decide::render_next(&self.writer, head.as_ref(), &segment.events);
        write_durably(
            &self.dir,
            &decide::batch_file_name(sealed.sequence),
            text.as_bytes(),
        )?;
        let chain = serde_json::to_vec(&sealed).unwrap_or_default();
        if let Err(error) = write_durably(&self.dir, CHAIN, &chain) {
            // The batch is written: sealing the segment again would repeat its events.
            self.broken = true;
            return Err(error);
        }
        let sequence = sealed.sequence;
        self.head = Some(Some(sealed));
        // Were this lost, `open` would see the segment is already sealed and drop it.
        let emptied = self
            .segment
            .set_len(0)
            .and_then(|()| self.segment.sync_data());
        if let Err(error) = emptied {
            self.broken = true;
            return Err(io(&path)(error));
        }
        self.segment_len = 0;
        self.events = 0;
        Ok(Some(sequence))
    }
}
