//! The bounded queue of webhook events: at most [`QUEUE_CAPACITY`] waiting, each event (request
//! uid, stage, target) at most once, so passes that plan it again while it waits add nothing.

use std::{collections::HashSet, sync::Mutex};

use gatehouse_crds::{AccessRequest, notify::WebhookTarget};
use tokio::sync::mpsc;

/// Events waiting for delivery, at most.
pub const QUEUE_CAPACITY: usize = 1024;

/// One event to deliver.
#[derive(Debug, Clone)]
pub struct Job {
    /// The request (for the record).
    pub request: AccessRequest,
    /// Record key.
    pub target: String,
    /// The stage this event reports.
    pub stage: String,
    /// Where and with which key.
    pub webhook: WebhookTarget,
    /// `<uid>/<stage>`.
    pub id: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The bounded queue and what is in it.
#[derive(Debug)]
pub struct Queue {
    sender: mpsc::Sender<Job>,
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    queued: Mutex<HashSet<String>>,
}

impl Default for Queue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            queued: Mutex::new(HashSet::new()),
        }
    }
}

fn queue_key(job: &Job) -> String {
    format!("{}|{}", job.id, job.target)
}

impl Queue {
    /// Queue `job` unless the same event is already queued; false when the queue is full.
    pub fn enqueue(&self, job: Job) -> bool {
        let key = queue_key(&job);
        let Ok(mut queued) = self.queued.lock() else {
            return false;
        };
        if queued.contains(&key) {
            return true;
        }
        if self.sender.try_send(job).is_err() {
            return false;
        }
        queued.insert(key);
        true
    }

    /// The receiving end, once (for the delivery task).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Job>> {
        self.receiver.lock().ok().and_then(|mut r| r.take())
    }

    /// `job` left the queue (delivered or dropped).
    pub fn done(&self, job: &Job) {
        if let Ok(mut queued) = self.queued.lock() {
            queued.remove(&queue_key(job));
        }
    }
}
