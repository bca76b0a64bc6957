//! A policy's `session` limits, as the proxy enforces them: `idleTimeout` (a session where
//! nothing crossed for that long ends) and `maxSessions` (session channels one request may have
//! open at once on this replica). Each ends or refuses the session with a message naming the
//! rule, shown on the engineer's terminal. Decisions are pure; [`RequestSessions`] and
//! [`Activity`] are the shared counters the session tasks update.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// When a session last carried a byte either way.
#[derive(Debug, Clone)]
pub struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    /// Active now.
    pub fn new(now: Instant) -> Self {
        Self(Arc::new(Mutex::new(now)))
    }

    /// Something crossed the session at `now`.
    pub fn touch(&self, now: Instant) {
        if let Ok(mut last) = self.0.lock() {
            *last = now;
        }
    }

    /// The message ending the session when it has been idle longer than `timeout`.
    pub fn expired(&self, timeout: Option<Duration>, now: Instant) -> Option<String> {
        let last = self.0.lock().map(|l| *l).unwrap_or(now);
        idle_expired(last, timeout, now)
    }
}

/// Pure: the message ending a session last active at `last`, if `timeout` has passed.
pub fn idle_expired(last: Instant, timeout: Option<Duration>, now: Instant) -> Option<String> {
    let timeout = timeout?;
    (now.saturating_duration_since(last) >= timeout).then(|| {
        format!(
            "session idle for {}; the policy's session.idleTimeout is {}",
            seconds(timeout),
            seconds(timeout)
        )
    })
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Open session channels per request (by UID) on this replica. Entries go when their count
/// reaches zero, so the map holds only requests with sessions open.
#[derive(Debug, Clone, Default)]
pub struct RequestSessions(Arc<Mutex<HashMap<String, usize>>>);

/// One session channel's place under its request's `maxSessions` (given back on drop).
#[derive(Debug)]
pub struct RequestSession {
    request: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl RequestSessions {
    /// Take a place for a session of request `uid` (`name` for the message) allowed `max` at
    /// once; Err: the message refusing it.
    pub fn try_take(
        &self,
        uid: &str,
        name: &str,
        max: Option<u32>,
    ) -> Result<RequestSession, String> {
        let Ok(mut counts) = self.0.lock() else {
            return Err("session limits unavailable".to_owned());
        };
        let open = counts.get(uid).copied().unwrap_or(0);
        if let Some(refusal) = max_sessions_refusal(open, max, name) {
            return Err(refusal);
        }
        counts.insert(uid.to_owned(), open + 1);
        Ok(RequestSession {
            request: uid.to_owned(),
            counts: self.0.clone(),
        })
    }
}

/// Pure: the message refusing one more session when `open` are open and `max` are allowed.
pub fn max_sessions_refusal(open: usize, max: Option<u32>, request: &str) -> Option<String> {
    let max = max?;
    (open >= max as usize).then(|| {
        format!(
            "gatehouse: AccessRequest {request} has {open} session(s) open; the policy's session.maxSessions is {max}"
        )
    })
}

impl Drop for RequestSession {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock() {
            let left = counts
                .get(&self.request)
                .copied()
                .unwrap_or(0)
                .saturating_sub(1);
            if left == 0 {
                counts.remove(&self.request);
            } else {
                counts.insert(self.request.clone(), left);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_names_the_rule_and_is_off_by_default() {
        let t0 = Instant::now();
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            idle_expired(t0, None, t0 + Duration::from_secs(86_400)),
            None
        );
        assert_eq!(idle_expired(t0, five, t0 + Duration::from_secs(4)), None);
        let message = idle_expired(t0, five, t0 + Duration::from_secs(5)).unwrap_or_default();
        assert!(message.contains("session.idleTimeout is 5s"), "{message}");
        let activity = Activity::new(t0);
        activity.touch(t0 + Duration::from_secs(3));
        assert_eq!(activity.expired(five, t0 + Duration::from_secs(7)), None);
    }

    #[test]
    fn max_sessions_counts_per_request_and_frees_on_drop() {
        let sessions = RequestSessions::default();
        let first = sessions.try_take("uid-a", "team/a", Some(1));
        assert!(first.is_ok());
        let refused = sessions
            .try_take("uid-a", "team/a", Some(1))
            .err()
            .unwrap_or_default();
        assert!(refused.contains("session.maxSessions is 1"), "{refused}");
        assert!(sessions.try_take("uid-b", "team/b", Some(1)).is_ok());
        assert!(sessions.try_take("uid-a", "team/a", None).is_ok());
        drop(first);
        assert!(sessions.try_take("uid-a", "team/a", Some(1)).is_ok());
        assert!(sessions.0.lock().map(|m| m.is_empty()).unwrap_or(false));
    }
}
