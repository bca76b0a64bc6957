//! Failed-login rate limiting per source address and per user name. Pure: the caller passes
//! the clock, so tests need no sleeping.
//!
//! Like OpenSSH's `PerSourcePenalties` and Teleport's login lockouts: `limit` failures within
//! `window` block the address (or user name) for `block`; every attempt while blocked is
//! refused without looking at the credentials.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Limits and their durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures that trigger a block.
    pub failures: u32,
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// How long a block lasts.
    pub block: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            failures: 10,
            window: Duration::from_secs(300),
            block: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    first: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
struct Counter<K> {
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn blocked_until(&self, key: &K, now: Instant) -> Option<Instant> {
        self.entries
            .get(key)
            .and_then(|e| e.blocked_until)
            .filter(|until| *until > now)
    }

    /// Count one failure; returns true when this failure starts a block.
    fn fail(&mut self, key: &K, now: Instant, limits: Limits) -> bool {
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            first: now,
            blocked_until: None,
        });
        if entry.blocked_until.is_some_and(|until| until <= now)
            || now.duration_since(entry.first) > limits.window
        {
            *entry = Entry {
                failures: 0,
                first: now,
                blocked_until: None,
            };
        }
        entry.failures += 1;
        if entry.failures >= limits.failures && entry.blocked_until.is_none() {
            entry.blocked_until = Some(now + limits.block);
            return true;
        }
        false
    }

    fn forget_stale(&mut self, now: Instant, limits: Limits) {
        self.entries.retain(|_, e| match e.blocked_until {
            Some(until) => until > now,
            None => now.duration_since(e.first) <= limits.window,
        });
    }
}

/// What the limiter says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead and check the credentials.
    Allowed,
    /// Refuse without checking: the source address is blocked until then.
    AddressBlocked(Instant),
    /// Refuse without checking: the user name is blocked until then.
    UserBlocked(Instant),
}

/// Failure counters for addresses and user names.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    addresses: Counter<IpAddr>,
    users: Counter<String>,
    calls: u64,
}

/// What a recorded failure caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewBlocks {
    /// The address is blocked from now on.
    pub address: bool,
    /// The user name is blocked from now on.
    pub user: bool,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            addresses: Counter::new(),
            users: Counter::new(),
            calls: 0,
        }
    }

    /// May this address try to log in as this user now?
    pub fn check(&self, address: IpAddr, user: &str, now: Instant) -> Verdict {
        if let Some(until) = self.addresses.blocked_until(&address, now) {
            return Verdict::AddressBlocked(until);
        }
        if let Some(until) = self.users.blocked_until(&user.to_owned(), now) {
            return Verdict::UserBlocked(until);
        }
        Verdict::Allowed
    }

    /// Count a failed login.
    pub fn fail(&mut self, address: IpAddr, user: &str, now: Instant) -> NewBlocks {
        // Drop stale entries now and then so a scan of many addresses cannot grow memory forever.
        self.calls += 1;
        if self.calls.is_multiple_of(1024) {
            self.addresses.forget_stale(now, self.limits);
            self.users.forget_stale(now, self.limits);
        }
        NewBlocks {
            address: self.addresses.fail(&address, now, self.limits),
            user: self.users.fail(&user.to_owned(), now, self.limits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn tenth_failure_blocks_the_address_for_five_minutes() {
        let mut limiter = RateLimiter::new(Limits::default());
        let t0 = Instant::now();
        for i in 0..9 {
            // different user names: only the address accumulates
            let blocks = limiter.fail(ip(1), &format!("u{i}"), t0);
            assert_eq!(blocks, NewBlocks::default());
            assert_eq!(limiter.check(ip(1), "ubuntu", t0), Verdict::Allowed);
        }
        let blocks = limiter.fail(ip(1), "u9", t0);
        assert!(blocks.address && !blocks.user);
        let until = t0 + Duration::from_secs(300);
        assert_eq!(
            limiter.check(ip(1), "ubuntu", t0),
            Verdict::AddressBlocked(until)
        );
        assert_eq!(limiter.check(ip(2), "ubuntu", t0), Verdict::Allowed);
        assert_eq!(limiter.check(ip(1), "ubuntu", until), Verdict::Allowed);
    }

    #[test]
    fn failures_for_one_user_from_many_addresses_block_the_user() {
        let mut limiter = RateLimiter::new(Limits::default());
        let t0 = Instant::now();
        for i in 0..10 {
            limiter.fail(ip(i), "root@db", t0);
        }
        assert!(matches!(
            limiter.check(ip(200), "root@db", t0),
            Verdict::UserBlocked(_)
        ));
        assert_eq!(limiter.check(ip(200), "ubuntu@db", t0), Verdict::Allowed);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut limiter = RateLimiter::new(Limits::default());
        let t0 = Instant::now();
        for _ in 0..9 {
            limiter.fail(ip(1), "a", t0);
        }
        let later = t0 + Duration::from_secs(301);
        let blocks = limiter.fail(ip(1), "a", later);
        assert_eq!(blocks, NewBlocks::default());
        assert_eq!(limiter.check(ip(1), "a", later), Verdict::Allowed);
    }
}
