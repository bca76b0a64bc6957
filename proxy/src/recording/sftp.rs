//! SFTP audit: what a file transfer did, read from the SFTP packets passing through an `sftp`
//! subsystem channel (protocol version 3, what OpenSSH speaks; `scp` uses it too). Pure: data
//! comes from the recorder (the bytes each way, as the channel carries them); audit events go
//! back to it, which writes them into the recording (and the proxy's log). File content never
//! goes into an event.
//!
//! Recorded: open (path and flags), close (with bytes read and written through that handle),
//! remove, rename, mkdir, rmdir, setstat/fsetstat, symlink. Bounded: a packet is buffered only
//! until it is complete and may not exceed [`MAX_PACKET`] (OpenSSH's own limit is 256 KiB);
//! at most [`MAX_TRACKED`] open handles and pending requests are tracked (beyond that, bytes
//! of further files are not counted, their opens and closes still are). A stream that is not
//! SFTP (a packet too large to be one) is an [`AuditError`]: the audit cannot go on, and a
//! session whose policy requires recording ends.

use std::collections::HashMap;

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
        }
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
    /// Request id of a READ → its handle, until the DATA (or STATUS) reply.
    reading: HashMap<u32, Vec<u8>>,
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

/// Insert unless `map` already tracks [`MAX_TRACKED`] entries.
fn track<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() < MAX_TRACKED || map.contains_key(&key) {
        map.insert(key, value);
    }
}

impl SftpAudit {
    /// A new session's audit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes the client sent; returns what they did.
    pub fn from_client(&mut self, data: &[u8]) -> Result<Vec<AuditEvent>, AuditError> {
        let mut packets = Vec::new();
        self.from_client.push(data, |p| packets.push(p.to_vec()))?;
        Ok(packets.iter().filter_map(|p| self.request(p)).collect())
    }

    /// Bytes the server sent.
    pub fn from_server(&mut self, data: &[u8]) -> Result<(), AuditError> {
        let mut packets = Vec::new();
        self.from_server.push(data, |p| packets.push(p.to_vec()))?;
        for p in packets {
            self.reply(&p);
        }
        Ok(())
    }

    fn request(&mut self, packet: &[u8]) -> Option<AuditEvent> {
        let mut f = Fields(packet);
        let kind = f.u8()?;
        match kind {
            FXP_OPEN => {
                let id = f.u32()?;
                let path = f.text()?;
                let flags = flag_names(f.u32()?);
                track(&mut self.opening, id, path.clone());
                Some(AuditEvent::Open { path, flags })
            }
            FXP_CLOSE => {
                let _id = f.u32()?;
                let handle = f.bytes()?;
                let file = self.files.remove(handle)?;
                Some(AuditEvent::Close {
                    path: file.path,
                    read: file.read,
                    written: file.written,
                })
            }
            FXP_READ => {
                let id = f.u32()?;
                let handle = f.bytes()?.to_vec();
                if self.files.contains_key(&handle) {
                    track(&mut self.reading, id, handle);
                }
                None
            }
            FXP_WRITE => {
                let _id = f.u32()?;
                let handle = f.bytes()?;
                let _offset = f.take(8)?;
                let data = f.bytes()?;
                if let Some(file) = self.files.get_mut(handle) {
                    file.written += data.len() as u64;
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

    fn reply(&mut self, packet: &[u8]) {
        let mut f = Fields(packet);
        let (Some(kind), Some(id)) = (f.u8(), f.u32()) else {
            return;
        };
        match kind {
            FXP_HANDLE => {
                if let (Some(path), Some(handle)) = (self.opening.remove(&id), f.bytes()) {
                    let file = OpenFile {
                        path,
                        read: 0,
                        written: 0,
                    };
                    track(&mut self.files, handle.to_vec(), file);
                }
            }
            FXP_DATA => {
                if let (Some(handle), Some(data)) = (self.reading.remove(&id), f.bytes())
                    && let Some(file) = self.files.get_mut(&handle)
                {
                    file.read += data.len() as u64;
                }
            }
            FXP_STATUS => {
                self.opening.remove(&id);
                self.reading.remove(&id);
            }
            _ => {}
        }
    }
}

impl From<AuditError> for crate::Error {
    fn from(error: AuditError) -> Self {
        crate::Error::AuditSftp(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    /// A packet: length, type, request id, fields.
    fn packet(kind: u8, id: u32, fields: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend(id.to_be_bytes());
        for f in fields {
            body.extend(f);
        }
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend(body);
        p
    }

    fn u32b(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn an_upload_and_a_download_are_audited_with_paths_flags_and_bytes() {
        let mut a = SftpAudit::new();
        let attrs = u32b(0);
        // put: open for write/create/truncate, two writes, close.
        let open = packet(3, 1, &[string(b"/tmp/up.txt"), u32b(0x1a), attrs.clone()]);
        assert_eq!(
            a.from_client(&open).unwrap(),
            [AuditEvent::Open {
                path: "/tmp/up.txt".into(),
                flags: "write,create,truncate".into()
            }]
        );
        a.from_server(&packet(102, 1, &[string(b"H1")])).unwrap();
        let write = |id, data: &[u8]| {
            packet(
                6,
                id,
                &[string(b"H1"), 0u64.to_be_bytes().to_vec(), string(data)],
            )
        };
        // Delivered in awkward pieces: one byte, then the rest with the next packet.
        let mut stream = write(2, &[b'x'; 1000]);
        stream.extend(write(3, &[b'y'; 24]));
        assert!(a.from_client(&stream[..1]).unwrap().is_empty());
        assert!(a.from_client(&stream[1..]).unwrap().is_empty());
        let events = a.from_client(&packet(4, 4, &[string(b"H1")])).unwrap();
        assert_eq!(
            events,
            [AuditEvent::Close {
                path: "/tmp/up.txt".into(),
                read: 0,
                written: 1024
            }]
        );
        // get: open for read, a read answered with 300 bytes, a read hitting EOF, close.
        a.from_client(&packet(3, 5, &[string(b"/etc/hosts"), u32b(1), attrs]))
            .unwrap();
        a.from_server(&packet(102, 5, &[string(b"H2")])).unwrap();
        a.from_client(&packet(5, 6, &[string(b"H2"), vec![0; 8], u32b(32768)]))
            .unwrap();
        a.from_server(&packet(103, 6, &[string(&[b'z'; 300])]))
            .unwrap();
        a.from_client(&packet(5, 7, &[string(b"H2"), vec![0; 8], u32b(32768)]))
            .unwrap();
        a.from_server(&packet(101, 7, &[u32b(1), string(b"EOF"), string(b"")]))
            .unwrap();
        let events = a.from_client(&packet(4, 8, &[string(b"H2")])).unwrap();
        assert_eq!(
            events[0].describe(),
            "sftp close /etc/hosts (read 300 bytes, wrote 0 bytes)"
        );
        assert!(a.files.is_empty() && a.reading.is_empty() && a.opening.is_empty());
    }

    #[test]
    fn namespace_changes_are_audited() {
        let mut a = SftpAudit::new();
        for (packet, want) in [
            (packet(13, 1, &[string(b"/tmp/a")]), "sftp remove /tmp/a"),
            (
                packet(18, 2, &[string(b"/tmp/a"), string(b"/tmp/b")]),
                "sftp rename /tmp/a -> /tmp/b",
            ),
            (
                packet(14, 3, &[string(b"/tmp/d"), u32b(0)]),
                "sftp mkdir /tmp/d",
            ),
            (packet(15, 4, &[string(b"/tmp/d")]), "sftp rmdir /tmp/d"),
            (
                packet(9, 5, &[string(b"/tmp/b"), u32b(4), u32b(0o600)]),
                "sftp setstat /tmp/b",
            ),
            (
                packet(20, 6, &[string(b"/etc/passwd"), string(b"/tmp/l")]),
                "sftp symlink /etc/passwd /tmp/l",
            ),
            (
                packet(
                    200,
                    7,
                    &[
                        string(b"posix-rename@openssh.com"),
                        string(b"/a"),
                        string(b"/b"),
                    ],
                ),
                "sftp rename /a -> /b",
            ),
            (
                packet(
                    200,
                    8,
                    &[
                        string(b"hardlink@openssh.com"),
                        string(b"/b"),
                        string(b"/c"),
                    ],
                ),
                "sftp hardlink /b -> /c",
            ),
            (
                packet(
                    200,
                    9,
                    &[string(b"lsetstat@openssh.com"), string(b"/c"), u32b(0)],
                ),
                "sftp setstat /c",
            ),
        ] {
            let events = a.from_client(&packet).unwrap();
            assert_eq!(events.len(), 1, "{want}");
            assert_eq!(events[0].describe(), want);
        }
        // Reads of directories and unknown packets say nothing.
        assert!(
            a.from_client(&packet(16, 7, &[string(b".")]))
                .unwrap()
                .is_empty()
        );
        assert!(a.from_client(&packet(201, 8, &[])).unwrap().is_empty());
        let statvfs = packet(200, 9, &[string(b"statvfs@openssh.com"), string(b"/")]);
        assert!(a.from_client(&statvfs).unwrap().is_empty());
    }

    #[test]
    fn a_failed_open_tracks_nothing_and_truncated_packets_are_ignored() {
        let mut a = SftpAudit::new();
        a.from_client(&packet(3, 1, &[string(b"/root/x"), u32b(1), u32b(0)]))
            .unwrap();
        a.from_server(&packet(101, 1, &[u32b(3), string(b"denied"), string(b"")]))
            .unwrap();
        assert!(a.opening.is_empty() && a.files.is_empty());
        // A packet whose string runs past its end is skipped, not trusted.
        let mut bad = vec![13];
        bad.extend(1u32.to_be_bytes());
        bad.extend(1000u32.to_be_bytes());
        bad.extend(b"short");
        let mut p = (bad.len() as u32).to_be_bytes().to_vec();
        p.extend(bad);
        assert!(a.from_client(&p).unwrap().is_empty());
    }

    #[test]
    fn oversized_packets_stop_the_audit_and_tracking_is_bounded() {
        let mut a = SftpAudit::new();
        let huge = ((MAX_PACKET + 1) as u32).to_be_bytes();
        assert!(a.from_client(&huge).is_err());
        assert!(a.from_client(&(u32::MAX).to_be_bytes()).is_err());
        // Only the packet in progress is buffered.
        let mut b = SftpAudit::new();
        let p = packet(6, 1, &[string(b"H"), vec![0; 8], string(&vec![0; 200_000])]);
        b.from_client(&p[..150_000]).unwrap();
        assert!(b.from_client.buf.len() <= MAX_PACKET + 4);
        b.from_client(&p[150_000..]).unwrap();
        assert!(b.from_client.buf.is_empty());

        let mut c = SftpAudit::new();
        for id in 0..(MAX_TRACKED as u32 + 100) {
            c.from_client(&packet(3, id, &[string(b"/f"), u32b(1), u32b(0)]))
                .unwrap();
        }
        assert_eq!(c.opening.len(), MAX_TRACKED);
    }
}
