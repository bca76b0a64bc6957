//! The upload loop. Data comes from the spool directory (recordings left by an earlier run,
//! found once at start) and from the [`UploadQueue`] (sessions that just finished); it goes to
//! the [`Store`], then to an [`UploadSink`] (the `recordingStored` audit event and the
//! AccessRequest's session record), and only then are the spool files deleted. Failures keep the spool and are retried with backoff.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::budget::SpoolBudget;
use super::live::Pieces;
use super::spool::{self, SpooledRecording};
use super::store::{Store, StoredRecording};
use crate::error::Result;
use crate::metrics::Metrics;

/// Told about every recording once it is safely stored.
pub trait UploadSink: Send + Sync + 'static {
    /// Called after a recording is stored, before its spool is deleted; an Err makes the
    /// uploader retry the sink (not the upload) later.
    fn uploaded(
        &self,
        recording: &SpooledRecording,
        stored: &StoredRecording,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Called once when a whole recording has just been stored (live pieces never get here),
    /// before [`UploadSink::uploaded`]; for the `recordingStored` audit event.
    fn stored(&self, _recording: &SpooledRecording, _stored: &StoredRecording) {}
}

/// Hands finished recordings to the [`Uploader`].
#[derive(Debug, Clone)]
pub struct UploadQueue(mpsc::UnboundedSender<SpooledRecording>);

impl UploadQueue {
    /// Queue a recording for upload. Never blocks; if the uploader has stopped, the recording
    /// stays in the spool and is uploaded by the next run.
    pub fn submit(&self, rec: SpooledRecording) {
        if let Err(mpsc::error::SendError(rec)) = self.0.send(rec) {
            tracing::warn!(
                path = %rec.cast_path.display(),
                "the uploader has stopped; the recording stays spooled until the next start",
            );
        }
    }
}

/// Copies spooled recordings to the store, one at a time, oldest first.
pub struct Uploader<S: UploadSink> {
    store: Store,
    sink: S,
    metrics: Metrics,
    queue: mpsc::UnboundedReceiver<SpooledRecording>,
    initial_backoff: Duration,
    max_backoff: Duration,
    budget: Arc<SpoolBudget>,
}

impl<S: UploadSink> fmt::Debug for Uploader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploader")
            .field("store", &self.store)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// One recording on its way; remembers how far it got so a retry doesn't redo earlier steps.
#[derive(Debug)]
struct Item {
    rec: SpooledRecording,
    stored: Option<StoredRecording>,
    notified: bool,
}

impl<S: UploadSink> Uploader<S> {
    /// An uploader for `store` that reports to `sink`, and the queue that feeds it.
    pub fn new(store: Store, sink: S, metrics: Metrics) -> (Self, UploadQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let uploader = Uploader {
            store,
            sink,
            metrics,
            queue: rx,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            budget: SpoolBudget::unlimited(),
        };
        (uploader, UploadQueue(tx))
    }

    /// Change the retry wait (1 s doubling up to 30 s by default); for tests and demos.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Give back to `budget` the bytes of every spool deleted after its upload.
    pub fn with_budget(mut self, budget: Arc<SpoolBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Upload everything [`spool::scan`] finds in `spool_dir` (left by an earlier run), then
    /// whatever arrives on the queue. Each recording: store → sink → delete the spool files.
    /// A failure is counted and logged, the spool is kept, and the recording goes to the back
    /// of the line; the next attempt waits 1 s, 2 s, 4 s … up to 30 s. The wait is shared
    /// because a failing store usually fails for everything, and resets after any success.
    /// Never gives up; returns only once every [`UploadQueue`] is dropped and nothing is left.
    pub async fn run(self, spool_dir: PathBuf) {
        let Uploader {
            store,
            sink,
            metrics,
            queue,
            initial_backoff,
            max_backoff,
            budget,
        } = self;
        let mut pending = VecDeque::new();
        // Before anything from the queue, so a recording both found here and submitted is
        // recognised as a duplicate when it arrives.
        match spool::scan(&spool_dir) {
            Ok(found) => {
                if !found.is_empty() {
                    tracing::info!(
                        count = found.len(),
                        "uploading recordings left in the spool by an earlier run",
                    );
                }
                for rec in found {
                    add(&mut pending, rec);
                }
            }
            Err(error) => tracing::warn!(%error, "looking for leftover recordings failed"),
        }
        let mut inbox = Inbox { queue, open: true };
        let mut backoff = initial_backoff;
        let mut arrived = Vec::new();
        loop {
            while let Ok(rec) = inbox.queue.try_recv() {
                add(&mut pending, rec);
            }
            set_pending(&metrics, &pending);
            let Some(item) = pending.front_mut() else {
                match inbox.queue.recv().await {
                    Some(rec) => add(&mut pending, rec),
                    None => return, // nothing left and nothing more can come
                }
                continue;
            };
            // Keep taking submissions during a long upload so the pending gauge is honest.
            let outcome = inbox
                .during(
                    attempt(&store, &sink, &metrics, &budget, item),
                    &mut arrived,
                )
                .await;
            // Added while the finished item is still at the front, so a duplicate of it is
            // recognised.
            for rec in arrived.drain(..) {
                add(&mut pending, rec);
            }
            if outcome.is_ok() {
                pending.pop_front();
                backoff = initial_backoff;
                continue;
            }
            // Let the others have a turn before this one is tried again.
            pending.rotate_left(1);
            set_pending(&metrics, &pending);
            inbox
                .during(tokio::time::sleep(backoff), &mut arrived)
                .await;
            for rec in arrived.drain(..) {
                add(&mut pending, rec);
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }
}

/// The receiving end of the queue, remembering whether every sender is gone.
struct Inbox {
    queue: mpsc::UnboundedReceiver<SpooledRecording>,
    open: bool,
}

impl Inbox {
    /// Run `work` to completion, collecting submissions into `arrived` meanwhile.
    async fn during<T>(
        &mut self,
        work: impl Future<Output = T>,
        arrived: &mut Vec<SpooledRecording>,
    ) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                rec = self.queue.recv(), if self.open => match rec {
                    Some(rec) => arrived.push(rec),
                    None => self.open = false,
                },
            }
        }
    }
}

/// Take on a recording unless it is already in line.
fn add(pending: &mut VecDeque<Item>, rec: SpooledRecording) {
    if pending
        .iter()
        .any(|item| item.rec.meta_path == rec.meta_path)
    {
        tracing::debug!(path = %rec.meta_path.display(), "recording already queued");
        return;
    }
    pending.push_back(Item {
        rec,
        stored: None,
        notified: false,
    });
}

fn set_pending(metrics: &Metrics, pending: &VecDeque<Item>) {
    metrics
        .recordings_pending
        .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
}

/// The next steps for one recording; Ok once its spool is gone. Failures are logged here.
async fn attempt<S: UploadSink>(
    store: &Store,
    sink: &S,
    metrics: &Metrics,
    budget: &SpoolBudget,
    item: &mut Item,
) -> Result<()> {
    let key = item.rec.meta.object_key();
    let stored = match &item.stored {
        Some(stored) => stored.clone(),
        None => {
            // A recording both found at start and submitted may already be done.
            if let Ok(false) = tokio::fs::try_exists(&item.rec.meta_path).await {
                tracing::info!(
                    path = %item.rec.meta_path.display(),
                    "spooled recording is gone; nothing to upload",
                );
                return Ok(());
            }
            let started = Instant::now();
            match store.put(&key, &item.rec.cast_path).await {
                Ok(stored) => {
                    metrics
                        .upload_duration_seconds
                        .observe(started.elapsed().as_secs_f64());
                    tracing::info!(
                        %key,
                        location = %stored.location,
                        bytes = stored.bytes,
                        sha256 = %stored.sha256,
                        "recording uploaded",
                    );
                    item.stored = Some(stored.clone());
                    sink.stored(&item.rec, &stored);
                    stored
                }
                Err(error) => {
                    metrics.upload_failures_total.inc();
                    tracing::warn!(%key, %error, "uploading recording failed; will retry");
                    return Err(error.into());
                }
            }
        }
    };
    if !item.notified {
        if let Err(error) = sink.uploaded(&item.rec, &stored).await {
            tracing::warn!(%key, %error, "recording the upload failed; will retry");
            return Err(error);
        }
        item.notified = true;
        // The whole recording is stored and named in status: the pieces the session stored
        // while it ran are redundant now. Left behind on failure (the object is what counts).
        match store.remove_pieces(&key).await {
            Ok(0) => {}
            Ok(count) => tracing::debug!(%key, count, "removed the live pieces"),
            Err(error) => tracing::warn!(%key, %error, "removing the live pieces failed"),
        }
    }
    if let Err(error) = item.rec.remove() {
        tracing::warn!(%key, %error, "deleting the uploaded spool failed; will retry");
        return Err(error);
    }
    budget.release(stored.bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::recording::SessionMeta;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::error::Error;
    use crate::recording::store::LocalStore;
    use crate::recording::tests::{record, sha256_hex};

    /// One call of the sink, with whether the spool still existed at that moment.
    #[derive(Debug, Clone)]
    struct Call {
        meta: SessionMeta,
        stored: StoredRecording,
        spool_present: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct TestSink {
        calls: Arc<Mutex<Vec<Call>>>,
        /// How many calls fail before they start succeeding.
        failures: Arc<AtomicUsize>,
        spool_dir: PathBuf,
        /// Keys [`UploadSink::stored`] was told about, in order.
        stored: Arc<Mutex<Vec<String>>>,
    }

    impl UploadSink for TestSink {
        fn stored(&self, _recording: &SpooledRecording, stored: &StoredRecording) {
            self.stored.lock().unwrap().push(stored.key.clone());
        }

        async fn uploaded(
            &self,
            recording: &SpooledRecording,
            stored: &StoredRecording,
        ) -> Result<()> {
            let meta = &recording.meta;
            let spool_present = self
                .spool_dir
                .join(format!("{}.cast", meta.session_id))
                .exists();
            self.calls.lock().unwrap().push(Call {
                meta: meta.clone(),
                stored: stored.clone(),
                spool_present,
            });
            match self
                .failures
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => Err(Error::Upload {
                    key: stored.key.clone(),
                    message: "sink unavailable".to_owned(),
                }),
                Err(_) => Ok(()),
            }
        }
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn gone(rec: &SpooledRecording) -> bool {
        !rec.cast_path.exists() && !rec.meta_path.exists()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        spool: PathBuf,
        store_dir: PathBuf,
        sink: TestSink,
        metrics: Metrics,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let store_dir = dir.path().join("store");
        let sink = TestSink {
            spool_dir: spool.clone(),
            ..TestSink::default()
        };
        Fixture {
            _dir: dir,
            spool,
            store_dir,
            sink,
            metrics: Metrics::new().unwrap(),
        }
    }

    fn start(f: &Fixture) -> (tokio::task::JoinHandle<()>, UploadQueue) {
        let store = Store::Local(LocalStore::new(&f.store_dir));
        let (uploader, queue) = Uploader::new(store, f.sink.clone(), f.metrics.clone());
        let uploader = uploader.with_backoff(Duration::from_millis(10), Duration::from_millis(40));
        (tokio::spawn(uploader.run(f.spool.clone())), queue)
    }

    async fn stop(handle: tokio::task::JoinHandle<()>, queue: UploadQueue) {
        drop(queue);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("uploader stops once the queue is dropped and nothing is pending")
            .unwrap();
    }

    /// The stored object equals the spool content, and the sink heard the same hash.
    fn assert_stored(f: &Fixture, call: &Call, content: &[u8]) {
        let key = call.meta.object_key();
        let object = std::fs::read(f.store_dir.join(&key)).unwrap();
        assert_eq!(object, content);
        assert_eq!(call.stored.key, key);
        assert_eq!(call.stored.sha256, sha256_hex(content));
        assert_eq!(call.stored.bytes, content.len() as u64);
    }

    #[tokio::test]
    async fn submitted_recording_is_stored_reported_and_removed() {
        let f = fixture();
        let (handle, queue) = start(&f);
        let rec = record(
            &f.spool,
            "eeee000000000001",
            "2024-03-09T10:00:00Z",
            "hello\r\n",
            true,
        );
        let content = std::fs::read(&rec.cast_path).unwrap();
        queue.submit(rec.clone());
        wait_until("spool removed", || gone(&rec)).await;

        let calls = f.sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].meta, rec.meta);
        assert!(
            calls[0].spool_present,
            "sink must run before the spool is deleted"
        );
        assert_stored(&f, &calls[0], &content);
        assert_eq!(
            *f.sink.stored.lock().unwrap(),
            vec![calls[0].stored.key.clone()]
        );
        assert_eq!(f.metrics.upload_failures_total.get(), 0);
        assert_eq!(f.metrics.upload_duration_seconds.get_sample_count(), 1);
        stop(handle, queue).await;
        assert_eq!(f.metrics.recordings_pending.get(), 0);
    }

    #[tokio::test]
    async fn leftovers_are_uploaded_on_start_oldest_first_and_once() {
        let f = fixture();
        let newer = record(
            &f.spool,
            "eeee000000000002",
            "2024-03-09T12:00:00Z",
            "done",
            true,
        );
        let older = record(
            &f.spool,
            "eeee000000000003",
            "2024-03-09T11:00:00Z",
            "crash",
            false,
        );
        let newer_content = std::fs::read(&newer.cast_path).unwrap();
        let older_content = std::fs::read(&older.cast_path).unwrap();

        let store = Store::Local(LocalStore::new(&f.store_dir));
        let (uploader, queue) = Uploader::new(store, f.sink.clone(), f.metrics.clone());
        // Submitted before the start-up scan also finds it: must not be uploaded twice.
        queue.submit(newer.clone());
        let handle = tokio::spawn(uploader.run(f.spool.clone()));
        wait_until("both spools removed", || gone(&newer) && gone(&older)).await;
        stop(handle, queue).await;

        let calls = f.sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].meta, older.meta);
        assert_stored(&f, &calls[0], &older_content);
        assert_eq!(calls[1].meta, newer.meta);
        assert_stored(&f, &calls[1], &newer_content);
        assert_eq!(f.metrics.upload_duration_seconds.get_sample_count(), 2);
    }

    #[tokio::test]
    async fn failing_sink_is_retried_and_spool_kept_until_it_succeeds() {
        let f = fixture();
        f.sink.failures.store(2, SeqCst);
        let (handle, queue) = start(&f);
        let rec = record(
            &f.spool,
            "eeee000000000004",
            "2024-03-09T10:00:00Z",
            "ls\r\n",
            true,
        );
        let content = std::fs::read(&rec.cast_path).unwrap();
        queue.submit(rec.clone());
        wait_until("spool removed", || gone(&rec)).await;

        let calls = f.sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "two failures, then success: {calls:?}");
        for call in &calls {
            assert!(
                call.spool_present,
                "spool deleted before the sink succeeded"
            );
            // The upload was not repeated: every call reports the one stored object.
            assert_eq!(call.stored, calls[0].stored);
        }
        assert_stored(&f, &calls[2], &content);
        // One store, one recordingStored, however often the sink was retried.
        assert_eq!(*f.sink.stored.lock().unwrap(), vec![rec.meta.object_key()]);
        assert_eq!(f.metrics.upload_duration_seconds.get_sample_count(), 1);
        assert_eq!(f.metrics.upload_failures_total.get(), 0);
        stop(handle, queue).await;
    }

    #[tokio::test]
    async fn failing_store_keeps_the_spool_and_retries() {
        let f = fixture();
        // A file where the store's directory should be: every put fails.
        std::fs::write(&f.store_dir, b"in the way").unwrap();
        let (handle, queue) = start(&f);
        let rec = record(
            &f.spool,
            "eeee000000000005",
            "2024-03-09T10:00:00Z",
            "top\r\n",
            true,
        );
        let content = std::fs::read(&rec.cast_path).unwrap();
        queue.submit(rec.clone());
        wait_until("two failed attempts", || {
            f.metrics.upload_failures_total.get() >= 2
        })
        .await;
        assert!(rec.cast_path.exists() && rec.meta_path.exists());
        assert!(f.sink.calls.lock().unwrap().clone().is_empty());
        assert_eq!(f.metrics.recordings_pending.get(), 1);

        std::fs::remove_file(&f.store_dir).unwrap();
        wait_until("spool removed", || gone(&rec)).await;
        let calls = f.sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_stored(&f, &calls[0], &content);
        stop(handle, queue).await;
        assert_eq!(f.metrics.recordings_pending.get(), 0);
    }
}
