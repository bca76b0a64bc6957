//! Live upload: while a session runs, what its recorder has spooled is copied to the store as
//! whole-object pieces (layout and decisions in [`super::segments`]), so a pod that is lost
//! with its spool loses at most the last piece. Data comes from the session's `.cast` file in
//! the spool (read by offset; the recorder writes whole lines and flushes them within 250 ms);
//! it goes to `KEY.parts/NNNNNN` in the [`Store`]. When the session ends the uploader stores
//! the whole recording as `KEY`, as without live upload, and then removes the pieces.

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::{Semaphore, oneshot},
    task::JoinHandle,
};

use super::{
    segments::{self, LiveSettings},
    store::Store,
};
use crate::{error::Result, metrics::Metrics};

/// How often a session's spool file is looked at (or the interval, when shorter).
const POLL: Duration = Duration::from_millis(500);
/// Pieces read and uploaded at once across all sessions: with 8 MiB pieces, 32 MiB of memory
/// at most, however many sessions flood at once.
const CONCURRENT_PIECES: usize = 4;
/// How long the end of a session waits for a piece on its way before going on without it.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Starts the live upload of each session; shared by all sessions of the proxy.
#[derive(Debug, Clone)]
pub struct LiveUploads {
    store: Store,
    settings: LiveSettings,
    metrics: Metrics,
    permits: Arc<Semaphore>,
}

/// One session's live upload; [`stop`](Self::stop) it before the session's recording is
/// handed to the uploader, so no piece lands after the pieces are removed.
#[derive(Debug)]
pub struct LiveUpload {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl LiveUploads {
    /// Live uploads to `store` as `settings` say (which may turn them off).
    pub fn new(store: Store, settings: LiveSettings, metrics: Metrics) -> Self {
        LiveUploads {
            store,
            settings,
            metrics,
            permits: Arc::new(Semaphore::new(CONCURRENT_PIECES)),
        }
    }

    /// Start uploading pieces of the recording spooled at `cast_path`, to be stored as `key`;
    /// None when live upload is off.
    pub fn start(&self, cast_path: PathBuf, key: String) -> Option<LiveUpload> {
        if !self.settings.enabled() {
            return None;
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(self.clone(), cast_path, key, stopped));
        Some(LiveUpload {
            stop: Some(stop),
            task,
        })
    }
}

impl LiveUpload {
    /// Stop after the piece on its way, if any (waiting at most 30 s for it).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_WAIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

async fn run(live: LiveUploads, cast_path: PathBuf, key: String, mut stop: oneshot::Receiver<()>) {
    let settings = live.settings;
    let poll = POLL.min(settings.interval);
    let mut stored = 0u64;
    let mut number = 1u32;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(poll) => {}
        }
        let Ok(written) = tokio::fs::metadata(&cast_path).await.map(|m| m.len()) else {
            continue;
        };
        if !segments::due(written, stored, last.elapsed(), &settings) {
            continue;
        }
        let permit = tokio::select! {
            _ = &mut stop => return,
            permit = live.permits.acquire() => permit,
        };
        let Ok(_permit) = permit else { return };
        let len = segments::read_len(written, stored, &settings);
        // The read and the upload are boxed: their futures (an S3 PUT's is ~10 KiB) would
        // otherwise be part of this task for the whole session, idle or not.
        let mut data = match Box::pin(read_range(&cast_path, stored, len)).await {
            Ok(data) => data,
            Err(error) => {
                tracing::warn!(%key, %error, "reading the spool for a live piece failed");
                last = Instant::now();
                continue;
            }
        };
        let take = segments::cut(&data, data.len() as u64 >= settings.piece_bytes);
        if take == 0 {
            continue;
        }
        data.truncate(take);
        let piece = segments::piece_key(&key, number);
        match Box::pin(live.store.put_piece(&piece, data)).await {
            Ok(()) => {
                tracing::debug!(%piece, bytes = take, "live piece stored");
                stored += take as u64;
                number += 1;
            }
            Err(error) => {
                live.metrics.upload_failures_total.inc();
                tracing::warn!(%piece, %error, "storing a live piece failed; will retry");
            }
        }
        last = Instant::now();
    }
}

/// `len` bytes of the file at `path` from `offset` (fewer if it is shorter).
async fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut data).await?;
    Ok(data)
}

/// A running recording's pieces, as whole objects in the [`Store`].
pub(crate) trait Pieces {
    /// Store one piece (a whole object) under `piece` (a key from [`segments::piece_key`]).
    async fn put_piece(&self, piece: &str, data: Vec<u8>) -> Result<()>;
    /// The pieces of the recording stored at `key`, in order (keys as given to
    /// [`put_piece`](Self::put_piece)).
    async fn pieces(&self, key: &str) -> Result<Vec<String>>;
    /// Remove the pieces of the recording stored at `key` (once `key` itself is stored);
    /// returns how many there were.
    async fn remove_pieces(&self, key: &str) -> Result<usize>;
}

impl Pieces for Store {
    async fn put_piece(&self, piece: &str, data: Vec<u8>) -> Result<()> {
        Ok(self.put_object(piece, data).await?)
    }

    async fn pieces(&self, key: &str) -> Result<Vec<String>> {
        Ok(self.list(&segments::parts_prefix(key)).await?)
    }

    async fn remove_pieces(&self, key: &str) -> Result<usize> {
        let pieces = self.pieces(key).await?;
        for piece in &pieces {
            self.delete(piece).await?;
        }
        Ok(pieces.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::recording::store::LocalStore;

    async fn wait_for_pieces(store: &Store, key: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pieces = store.pieces(key).await.unwrap();
            if pieces.len() >= count {
                return pieces;
            }
            assert!(Instant::now() < deadline, "only {pieces:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_growing_spool_file_goes_up_in_whole_line_pieces_that_join_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let cast = dir.path().join("s.cast");
        let store = Store::Local(LocalStore::new(dir.path().join("store")));
        let live = LiveUploads::new(
            store.clone(),
            LiveSettings {
                interval: Duration::from_millis(50),
                piece_bytes: 64,
            },
            Metrics::new().unwrap(),
        );
        let key = "recordings/2026-12-02/alice_db1_s.cast";
        std::fs::write(
            &cast,
            "{\"version\": 2}\n[0.1, \"o\", \"EVIDENCE\"]\n[0.2, \"o\", \"ha",
        )
        .unwrap();
        let upload = live.start(cast.clone(), key.to_owned()).unwrap();
        let first = wait_for_pieces(&store, key, 1).await;
        assert_eq!(first[0], segments::piece_key(key, 1));
        let text = String::from_utf8(store.get(&first[0]).await.unwrap()).unwrap();
        assert!(text.contains("EVIDENCE") && text.ends_with('\n'), "{text}");
        assert!(!text.contains("ha"), "a half line waits: {text}");

        // More than a piece arrives at once: several pieces, each at most 64 bytes.
        let mut more = String::from("lf\"]\n");
        for i in 0..10 {
            more.push_str(&format!("[1.{i}, \"o\", \"line {i}\"]\n"));
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&cast)
            .unwrap();
        std::io::Write::write_all(&mut file, more.as_bytes()).unwrap();
        let whole = std::fs::read(&cast).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let joined = loop {
            let mut joined = Vec::new();
            for piece in store.pieces(key).await.unwrap() {
                let data = store.get(&piece).await.unwrap();
                assert!(data.len() <= 64, "{piece}: {} bytes", data.len());
                joined.extend(data);
            }
            if joined.len() == whole.len() || Instant::now() > deadline {
                break joined;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            String::from_utf8_lossy(&joined),
            String::from_utf8_lossy(&whole)
        );
        upload.stop().await;

        let count = store.pieces(key).await.unwrap().len();
        assert!(count >= 3, "{count}");
        assert_eq!(store.remove_pieces(key).await.unwrap(), count);
        assert!(store.pieces(key).await.unwrap().is_empty());
        assert!(
            !dir.path()
                .join("store")
                .join(format!("{key}.parts"))
                .exists()
        );
        assert_eq!(store.remove_pieces(key).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn live_upload_off_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveUploads::new(
            Store::Local(LocalStore::new(dir.path())),
            LiveSettings {
                interval: Duration::ZERO,
                piece_bytes: 64,
            },
            Metrics::new().unwrap(),
        );
        assert!(
            live.start(dir.path().join("x.cast"), "k.cast".into())
                .is_none()
        );
    }
}
