//! The spool directory as the uploader finds it, also after a crash: the recordings in it
//! ([`scan`]: finished ones and those a stopped proxy left mid-session), what a killed process
//! left half-written ([`remove_leftovers`]), and removing a recording once it is stored. Data
//! comes from the `.json`/`.cast` pairs [`super::spool::Recorder`] writes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::SessionMeta;
use super::spool::SpoolMeta;
use crate::error::{Error, Result};

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

    use super::*;
    use crate::recording::{
        Recorder,
        tests::{events, lines, meta},
    };

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
}
