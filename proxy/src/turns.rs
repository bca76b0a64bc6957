//! Taking turns: one writer at a time per key (an AccessRequest's `status.sessions`), so
//! concurrent sessions of one request on this replica queue up instead of racing each other
//! into `409 Conflict`. Data comes from the writers (the key); what goes back is a guard held
//! while writing. Only keys someone holds or waits for are kept: the map is as large as the
//! writes in flight, whoever opens sessions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Per-key turns.
#[derive(Debug, Default)]
pub struct Turns {
    keys: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

/// The writer's turn; the next one waiting goes when it is dropped.
pub type Turn = OwnedMutexGuard<()>;

impl Turns {
    /// No key taken.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait for the turn on `key` (first come, first served).
    pub async fn take(&self, key: &str) -> Turn {
        let lock = {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.retain(|_, lock| lock.strong_count() > 0);
            match keys.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    keys.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// Keys someone holds or waits for (after the last [`take`](Self::take)'s clean-up).
    pub fn len(&self) -> usize {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.values().filter(|lock| lock.strong_count() > 0).count()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn writers_of_one_key_take_turns_and_other_keys_do_not_wait() {
        let turns = Arc::new(Turns::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (turns, inside, most) = (turns.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = turns.take("ns/req").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another request's writer is not held up by the queue on the first.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let other = tokio::time::timeout(Duration::from_millis(100), turns.take("ns/other"))
            .await
            .ok();
        assert!(other.is_some(), "another key waited");
        drop(other);
        for task in tasks {
            let _ = task.await;
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "two writers at once");
        // Nothing held: the map keeps nothing.
        assert!(turns.is_empty());
        let _turn = turns.take("ns/third").await;
        assert_eq!(turns.len(), 1);
        assert_eq!(turns.keys.lock().map(|k| k.len()).unwrap_or(0), 1);
    }
}
