//! SFTP audit: what a file transfer did, read from the SFTP packets passing through an `sftp`
//! subsystem channel (protocol version 3, what OpenSSH speaks; `scp` uses it too). Pure: data
//! comes from the recorder (the bytes each way, as the channel carries them); audit events go
//! back to it, which writes them into the recording (and the proxy's log). File content goes
//! into an event only when the policy keeps it (`recording.fileContent`, [`SftpAudit::keeping`]):
//! then the bytes written and read through each file, up to a bound per file and direction,
//! become [`AuditEvent::Content`] events (recording only, never the log).
//!
//! Recorded: open (path and flags), close (with bytes read and written through that handle),
//! remove, rename, mkdir, rmdir, setstat/fsetstat, symlink. Bounded: a packet is buffered only
//! until it is complete and may not exceed [`MAX_PACKET`] (OpenSSH's own limit is 256 KiB);
//! at most [`MAX_TRACKED`] open handles and pending requests are tracked (beyond that, bytes
//! of further files are not counted, their opens and closes still are). A stream that is not
//! SFTP (a packet too large to be one) is an [`AuditError`]: the audit cannot go on, and a
//! session whose policy requires recording ends.

use std::collections::HashMap;

use base64::Engine as _;

/// The largest packet accepted (length field), a little above OpenSSH's 256 KiB.
pub const MAX_PACKET: usize = 256 * 1024 + 1024;
/// Open handles and outstanding opens/reads tracked at once.
pub const MAX_TRACKED: usize = 1024;

const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_SYMLINK: u8 = 20;
const FXP_EXTENDED: u8 = 200;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;

/// One thing a transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A file was opened (asked to be: the answer may be an error).
    Open {
        /// Path as the client sent it.
        path: String,
        /// `read`, `write`, `append`, `create`, `truncate`, `exclusive`, comma-separated.
        flags: String,
    },
    /// A file handle was closed.
    Close {
        /// Its path.
        path: String,
        /// Bytes the server returned for reads through it.
        read: u64,
        /// Bytes the client wrote through it.
        written: u64,
    },
    /// `rm`.
    Remove {
        /// Path.
        path: String,
    },
    /// `rename`.
    Rename {
        /// Old path.
        from: String,
        /// New path.
        to: String,
    },
    /// `mkdir`.
    Mkdir {
        /// Path.
        path: String,
    },
    /// `rmdir`.
    Rmdir {
        /// Path.
        path: String,
    },
    /// `chmod`, `chown`, `touch` and the like (setstat, or fsetstat on an open file).
    Setstat {
        /// Path.
        path: String,
    },
    /// `ln` (a hard link, OpenSSH's `hardlink@openssh.com`).
    Hardlink {
        /// The existing path.
        from: String,
        /// The new link.
        to: String,
    },
    /// `ln -s` (OpenSSH sends the target first).
    Symlink {
        /// First path of the request.
        first: String,
        /// Second path.
        second: String,
    },
    /// File content kept by `recording.fileContent`: bytes of one WRITE, or of one DATA reply
    /// to a READ, at `offset` in the file (cut where the file's bound is reached).
    Content {
        /// `write` (client to server) or `read` (server to client).
        direction: Direction,
        /// The file's path.
        path: String,
        /// Offset in the file of the first byte.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A file's content reached `recording.fileContent.maxBytesPerFile` in one direction: the
    /// rest is counted (in its close event), not kept.
    ContentCut {
        /// Which direction.
        direction: Direction,
        /// The file's path.
        path: String,
        /// Bytes kept (the bound).
        kept: u64,
    },
}

/// Which way file content went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written by the client (an upload).
    Write,
    /// Read by the client (a download).
    Read,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Write => "write",
            Direction::Read => "read",
        }
    }
}

impl AuditEvent {
    /// One line for the recording and the log, e.g. `sftp open /etc/hosts (read)`.
    pub fn describe(&self) -> String {
        match self {
            AuditEvent::Open { path, flags } => format!("sftp open {path} ({flags})"),
            AuditEvent::Close {
                path,
                read,
                written,
            } => format!("sftp close {path} (read {read} bytes, wrote {written} bytes)"),
            AuditEvent::Remove { path } => format!("sftp remove {path}"),
            AuditEvent::Rename { from, to } => format!("sftp rename {from} -> {to}"),
            AuditEvent::Mkdir { path } => format!("sftp mkdir {path}"),
            AuditEvent::Rmdir { path } => format!("sftp rmdir {path}"),
            AuditEvent::Setstat { path } => format!("sftp setstat {path}"),
            AuditEvent::Hardlink { from, to } => format!("sftp hardlink {from} -> {to}"),
            AuditEvent::Symlink { first, second } => format!("sftp symlink {first} {second}"),
            AuditEvent::Content {
                direction,
                path,
                offset,
                data,
            } => format!(
                "sftp content {} {offset} {} {path}",
                direction.name(),
                base64::engine::general_purpose::STANDARD.encode(data)
            ),
            AuditEvent::ContentCut {
                direction,
                path,
                kept,
            } => format!("sftp content-cut {} {kept} {path}", direction.name()),
        }
    }

    /// Whether the event goes to the proxy's log too: everything but file content.
    pub fn logged(&self) -> bool {
        !matches!(self, AuditEvent::Content { .. })
    }
}

/// The stream cannot be audited any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sftp stream cannot be audited: {0}")]
pub struct AuditError(pub String);

/// Cuts a byte stream into SFTP packets (without their length field).
#[derive(Debug, Default)]
struct Packets {
    buf: Vec<u8>,
}

impl Packets {
    fn push(&mut self, mut data: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), AuditError> {
        while !data.is_empty() {
            if self.buf.len() < 4 {
                let n = (4 - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.buf.len() < 4 {
                    return Ok(());
                }
            }
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_PACKET {
                return Err(AuditError(format!(
                    "a packet of {len} bytes (at most {MAX_PACKET})"
                )));
            }
            let n = (4 + len - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == 4 + len {
                each(&self.buf[4..]);
                self.buf.clear();
            }
        }
        Ok(())
    }
}

/// Reads fields of one packet; None when it is shorter than its fields say.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }
    fn text(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

#[derive(Debug)]
struct OpenFile {
    path: String,
    read: u64,
    written: u64,
    /// Content bytes kept so far (only with [`SftpAudit::keeping`]).
    kept_read: u64,
    kept_written: u64,
}

impl OpenFile {
    fn new(path: String) -> Self {
        Self {
            path,
            read: 0,
            written: 0,
            kept_read: 0,
            kept_written: 0,
        }
    }
}

/// Follows one SFTP session in both directions.
#[derive(Debug, Default)]
pub struct SftpAudit {
    from_client: Packets,
    from_server: Packets,
    /// Request id of an OPEN → its path, until the HANDLE (or STATUS) reply.
    opening: HashMap<u32, String>,
    /// Handle → the file it names.
    files: HashMap<Vec<u8>, OpenFile>,
    /// Request id of a READ → its handle and offset, until the DATA (or STATUS) reply.
    reading: HashMap<u32, (Vec<u8>, u64)>,
    /// Request id of a CLOSE → its handle, until the server's STATUS: replies to READs sent
    /// before the CLOSE (pipelined) still count for the file.
    closing: HashMap<u32, Vec<u8>>,
    /// Content bytes kept per file and direction; None: no content kept.
    keep: Option<u64>,
    /// Why the audit cannot follow the session any more (a full map, a reused request id):
    /// reported as an [`AuditError`], so a required recording ends the session.
    lost: Option<String>,
}

fn flag_names(pflags: u32) -> String {
    let names: Vec<&str> = [
        (1, "read"),
        (2, "write"),
        (4, "append"),
        (8, "create"),
        (0x10, "truncate"),
        (0x20, "exclusive"),
    ]
    .into_iter()
    .filter(|(bit, _)| pflags & bit != 0)
    .map(|(_, name)| name)
    .collect();
    names.join(",")
}

/// Insert a new entry, or say why not: `map` already tracks [`MAX_TRACKED`] entries, or `key`
/// is outstanding (a request id reused before its reply would mislabel the reply).
fn track<K: std::hash::Hash + Eq + std::fmt::Debug, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    lost: &mut Option<String>,
) {
    if map.contains_key(&key) {
        *lost = Some(format!(
            "the client reused SFTP request {key:?} before its reply"
        ));
    } else if map.len() >= MAX_TRACKED {
        *lost = Some(format!(
            "the client keeps more than {MAX_TRACKED} SFTP files or requests open"
        ));
    } else {
        map.insert(key, value);
    }
}

impl SftpAudit {
    /// A new session's audit, without file content.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session's audit that keeps up to `max_bytes_per_file` of content per file and
    /// direction (`recording.fileContent`); None keeps none, like [`Self::new`].
    pub fn keeping(max_bytes_per_file: Option<u64>) -> Self {
        Self {
            keep: max_bytes_per_file,
            ..Self::default()
        }
    }

    /// Bytes the client sent; returns what they did.
    pub fn from_client(&mut self, data: &[u8]) -> Result<Vec<AuditEvent>, AuditError> {
        let mut packets = Vec::new();
        self.from_client.push(data, |p| packets.push(p.to_vec()))?;
        let mut events = Vec::new();
        for p in &packets {
            self.request(p, &mut events);
        }
        self.check()?;
        Ok(events)
    }

    /// Bytes the server sent; returns the content it returned for reads (when kept).
    pub fn from_server(&mut self, data: &[u8]) -> Result<Vec<AuditEvent>, AuditError> {
        let mut packets = Vec::new();
        self.from_server.push(data, |p| packets.push(p.to_vec()))?;
        let mut events = Vec::new();
        for p in packets {
            self.reply(&p, &mut events);
        }
        self.check()?;
        Ok(events)
    }

    fn check(&mut self) -> Result<(), AuditError> {
        match self.lost.take() {
            Some(why) => Err(AuditError(why)),
            None => Ok(()),
        }
    }

    fn request(&mut self, packet: &[u8], events: &mut Vec<AuditEvent>) {
        if let Some(event) = self.request_event(packet, events) {
            events.push(event);
        }
    }

    fn request_event(&mut self, packet: &[u8], events: &mut Vec<AuditEvent>) -> Option<AuditEvent> {
        let mut f = Fields(packet);
        let kind = f.u8()?;
        match kind {
            FXP_OPEN => {
                let id = f.u32()?;
                let path = f.text()?;
                let flags = flag_names(f.u32()?);
                track(&mut self.opening, id, path.clone(), &mut self.lost);
                Some(AuditEvent::Open { path, flags })
            }
            FXP_CLOSE => {
                let id = f.u32()?;
                let handle = f.bytes()?.to_vec();
                if self.files.contains_key(&handle) {
                    track(&mut self.closing, id, handle, &mut self.lost);
                }
                None
            }
            FXP_READ => {
                let id = f.u32()?;
                let handle = f.bytes()?.to_vec();
                let offset = f.u64()?;
                if self.files.contains_key(&handle) {
                    track(&mut self.reading, id, (handle, offset), &mut self.lost);
                }
                None
            }
            FXP_WRITE => {
                let _id = f.u32()?;
                let handle = f.bytes()?;
                let offset = f.u64()?;
                let data = f.bytes()?;
                let keep = self.keep;
                if let Some(file) = self.files.get_mut(handle) {
                    file.written += data.len() as u64;
                    keep_content(keep, file, Direction::Write, offset, data, events);
                }
                None
            }
            FXP_SETSTAT => {
                let _id = f.u32()?;
                Some(AuditEvent::Setstat { path: f.text()? })
            }
            FXP_FSETSTAT => {
                let _id = f.u32()?;
                let handle = f.bytes()?;
                let path = self.files.get(handle)?.path.clone();
                Some(AuditEvent::Setstat { path })
            }
            FXP_REMOVE => {
                let _id = f.u32()?;
                Some(AuditEvent::Remove { path: f.text()? })
            }
            FXP_MKDIR => {
                let _id = f.u32()?;
                Some(AuditEvent::Mkdir { path: f.text()? })
            }
            FXP_RMDIR => {
                let _id = f.u32()?;
                Some(AuditEvent::Rmdir { path: f.text()? })
            }
            FXP_RENAME => {
                let _id = f.u32()?;
                let from = f.text()?;
                let to = f.text()?;
                Some(AuditEvent::Rename { from, to })
            }
            FXP_SYMLINK => {
                let _id = f.u32()?;
                let first = f.text()?;
                let second = f.text()?;
                Some(AuditEvent::Symlink { first, second })
            }
            FXP_EXTENDED => {
                let _id = f.u32()?;
                match f.text()?.as_str() {
                    // What OpenSSH's `rename` uses when the server offers it.
                    "posix-rename@openssh.com" => {
                        let from = f.text()?;
                        let to = f.text()?;
                        Some(AuditEvent::Rename { from, to })
                    }
                    "hardlink@openssh.com" => {
                        let from = f.text()?;
                        let to = f.text()?;
                        Some(AuditEvent::Hardlink { from, to })
                    }
                    "lsetstat@openssh.com" => Some(AuditEvent::Setstat { path: f.text()? }),
                    "fsetstat@openssh.com" => {
                        let handle = f.bytes()?;
                        let path = self.files.get(handle)?.path.clone();
                        Some(AuditEvent::Setstat { path })
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn reply(&mut self, packet: &[u8], events: &mut Vec<AuditEvent>) {
        let mut f = Fields(packet);
        let (Some(kind), Some(id)) = (f.u8(), f.u32()) else {
            return;
        };
        match kind {
            FXP_HANDLE => {
                if let (Some(path), Some(handle)) = (self.opening.remove(&id), f.bytes()) {
                    track(
                        &mut self.files,
                        handle.to_vec(),
                        OpenFile::new(path),
                        &mut self.lost,
                    );
                }
            }
            FXP_DATA => {
                let keep = self.keep;
                if let (Some((handle, offset)), Some(data)) = (self.reading.remove(&id), f.bytes())
                    && let Some(file) = self.files.get_mut(&handle)
                {
                    file.read += data.len() as u64;
                    keep_content(keep, file, Direction::Read, offset, data, events);
                }
            }
            FXP_STATUS => {
                self.opening.remove(&id);
                self.reading.remove(&id);
                // The CLOSE's answer: the file is done, with every reply before it counted.
                if let Some(file) = self
                    .closing
                    .remove(&id)
                    .and_then(|handle| self.files.remove(&handle))
                {
                    events.push(AuditEvent::Close {
                        path: file.path,
                        read: file.read,
                        written: file.written,
                    });
                }
            }
            _ => {}
        }
    }
}

/// Keep what of `data` (at `offset` of `file`, going `direction`) the bound `keep` still
/// allows, as a Content event, and say once when the bound cuts the file's content.
fn keep_content(
    keep: Option<u64>,
    file: &mut OpenFile,
    direction: Direction,
    offset: u64,
    data: &[u8],
    events: &mut Vec<AuditEvent>,
) {
    let Some(limit) = keep else {
        return;
    };
    let kept = match direction {
        Direction::Write => &mut file.kept_written,
        Direction::Read => &mut file.kept_read,
    };
    // Past the bound `kept` is `limit + 1`: the cut was reported.
    if *kept > limit || data.is_empty() {
        return;
    }
    let room = usize::try_from(limit - *kept).unwrap_or(usize::MAX);
    let take = data.len().min(room);
    if take > 0 {
        *kept += take as u64;
        events.push(AuditEvent::Content {
            direction,
            path: file.path.clone(),
            offset,
            data: data[..take].to_vec(),
        });
    }
    if take < data.len() {
        *kept = limit + 1;
        events.push(AuditEvent::ContentCut {
            direction,
            path: file.path.clone(),
            kept: limit,
        });
    }
}

impl From<AuditError> for crate::Error {
    fn from(error: AuditError) -> Self {
        crate::Error::AuditSftp(error.to_string())
    }
}

#[cfg(test)]
#[path = "sftp_tests.rs"]
mod tests;
