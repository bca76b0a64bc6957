//! When a watch first saw each AccessRequest in each phase.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use gatehouse_crds::{AccessRequest, Phase};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

/// When the watch first saw each request in each phase.
#[derive(Default)]
pub struct Seen {
    pub at: HashMap<(String, String), Instant>,
}

/// Watch the AccessRequests of `ns` (as admin), recording when each reaches a phase.
pub fn watch_phases(client: Client, ns: &str) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let api: Api<AccessRequest> = Api::namespaced(client, ns);
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(request)) = stream.try_next().await {
            let now = Instant::now();
            if let Some(phase) = request.status.as_ref().and_then(|s| s.phase) {
                record
                    .lock()
                    .unwrap()
                    .at
                    .entry((request.name_any(), format!("{phase:?}")))
                    .or_insert(now);
            }
        }
    });
    seen
}

/// Wait until `count` requests named `prefix…` were seen in `phase`; returns when the last one was.
pub async fn all_in(
    seen: &Mutex<Seen>,
    phase: Phase,
    prefix: &str,
    count: usize,
    timeout: Duration,
) -> Instant {
    let started = Instant::now();
    loop {
        {
            let seen = seen.lock().unwrap();
            let times: Vec<Instant> = seen
                .at
                .iter()
                .filter(|((name, p), _)| name.starts_with(prefix) && *p == format!("{phase:?}"))
                .map(|(_, t)| *t)
                .collect();
            if times.len() >= count {
                return times.into_iter().max().unwrap_or_else(Instant::now);
            }
            assert!(
                started.elapsed() < timeout,
                "only {} of {count} requests {phase:?} after {timeout:?}",
                times.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
