//! The structured parts of an audit event that only some event types carry: what a session
//! carried, which file, which forward, which recording, which command. Readers (the audit API,
//! `kubectl gatehouse audit`) use these instead of parsing the message.

use serde::{Deserialize, Serialize};

use super::{MAX_FIELD_BYTES, MAX_MESSAGE_BYTES, truncate};

/// A session channel (on `sessionStarted` and `sessionEnded`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    /// `shell`, `exec`, `subsystem:sftp`…
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Bytes from the engineer to the target (on `sessionEnded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_target: Option<u64>,
    /// Bytes from the target to the engineer (on `sessionEnded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_client: Option<u64>,
    /// The target's exit status, when it sent one (on `sessionEnded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u32>,
    /// Who or what ended it: `client`, `target`, `revoked`, `expired`, `idle`, `shutdown`…
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ended_by: String,
    /// How long it lasted, in milliseconds (on `sessionEnded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_millis: Option<u64>,
}

/// A file operation (on `fileOperation`), from the SFTP audit of the recording.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileDetail {
    /// `open`, `read`, `write`, `close`, `remove`, `rename`, `mkdir`, `rmdir`, `setstat`…
    pub operation: String,
    /// The path as the client sent it.
    pub path: String,
    /// The second path of a rename or link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    /// Bytes read or written through the handle (on `close`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A port forward (on `forwardOpened` and `forwardClosed`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ForwardDetail {
    /// `local` (direct-tcpip, `ssh -L`) or `remote` (tcpip-forward, `ssh -R`).
    pub direction: String,
    /// The host the forward reaches (as the client named it).
    pub host: String,
    /// Its port.
    pub port: u32,
    /// Bytes carried each way (on `forwardClosed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_target: Option<u64>,
    /// Bytes carried back (on `forwardClosed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_client: Option<u64>,
}

/// A stored recording (on `recordingStored`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecordingDetail {
    /// Object key in the recording store (without the store's prefix).
    pub key: String,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A command (on `command`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CommandDetail {
    /// The command line.
    pub line: String,
    /// `true` for an exec request's command (exactly what the target ran); `false` for a line
    /// rebuilt from recorded keystrokes (best effort: the shell's editing is not replayed).
    pub exact: bool,
}

impl FileDetail {
    pub(super) fn bound(&mut self) {
        self.operation = truncate(std::mem::take(&mut self.operation), MAX_FIELD_BYTES);
        self.path = truncate(std::mem::take(&mut self.path), MAX_MESSAGE_BYTES);
        self.target_path = self
            .target_path
            .take()
            .map(|p| truncate(p, MAX_MESSAGE_BYTES));
    }
}

impl ForwardDetail {
    pub(super) fn bound(&mut self) {
        self.direction = truncate(std::mem::take(&mut self.direction), MAX_FIELD_BYTES);
        self.host = truncate(std::mem::take(&mut self.host), MAX_FIELD_BYTES);
    }
}

impl SessionDetail {
    pub(super) fn bound(&mut self) {
        self.kind = truncate(std::mem::take(&mut self.kind), MAX_FIELD_BYTES);
        self.ended_by = truncate(std::mem::take(&mut self.ended_by), MAX_FIELD_BYTES);
    }
}

impl RecordingDetail {
    pub(super) fn bound(&mut self) {
        self.key = truncate(std::mem::take(&mut self.key), MAX_MESSAGE_BYTES);
        self.sha256 = truncate(std::mem::take(&mut self.sha256), MAX_FIELD_BYTES);
    }
}

impl CommandDetail {
    pub(super) fn bound(&mut self) {
        self.line = truncate(std::mem::take(&mut self.line), MAX_MESSAGE_BYTES);
    }
}
