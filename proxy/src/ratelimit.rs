//! Failed-login rate limiting per source address and per presented key. Pure: the caller
//! passes the clock, so tests need no sleeping.
//!
//! Like OpenSSH's `PerSourcePenalties` and Teleport's login lockouts: `limit` failures within
//! `window` block the address (or the key) for `block`; every attempt while blocked is
//! refused without looking at the credentials.
//!
//! Failures are never counted per SSH user name: `ubuntu@db` is shared by every engineer, so
//! counting it would let anyone lock everyone out with ten bad certificates. The key counted
//! is the public key inside the presented certificate (its SHA-256 fingerprint), whose
//! possession the client has proven, so nobody can spend another engineer's budget.
//!
//! Both maps are bounded ([`Limits::capacity`] entries each): when one is full, stale entries
//! go first, then the least recently touched one (so a scan from many addresses costs memory
//! of at most `capacity` entries, and at worst makes the limiter forget an old attacker).

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
    /// Entries each map (addresses, keys) keeps at most.
    pub capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            failures: 10,
            window: Duration::from_secs(300),
            block: Duration::from_secs(300),
            capacity: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    first: Instant,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn stale(&self, now: Instant, limits: Limits) -> bool {
        match self.blocked_until {
            Some(until) => until <= now,
            None => now.duration_since(self.first) > limits.window,
        }
    }
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

    /// Make room for one more entry: drop stale ones, then the least recently touched one that
    /// is not blocked (a blocked one only when every entry is).
    fn make_room(&mut self, now: Instant, limits: Limits) {
        if self.entries.len() < limits.capacity {
            return;
        }
        self.entries.retain(|_, e| !e.stale(now, limits));
        while self.entries.len() >= limits.capacity.max(1) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.blocked_until.is_some(), e.last))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
    }

    /// Count one failure; returns true when this failure starts a block.
    fn fail(&mut self, key: &K, now: Instant, limits: Limits) -> bool {
        if !self.entries.contains_key(key) {
            self.make_room(now, limits);
        }
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            first: now,
            last: now,
            blocked_until: None,
        });
        if entry.stale(now, limits) {
            *entry = Entry {
                failures: 0,
                first: now,
                last: now,
                blocked_until: None,
            };
        }
        entry.last = now;
        entry.failures += 1;
        if entry.failures >= limits.failures && entry.blocked_until.is_none() {
            entry.blocked_until = Some(now + limits.block);
            return true;
        }
        false
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The address a failure is counted for: IPv4 as is, IPv6 by its /64 (one host usually holds
/// a whole /64, so counting single IPv6 addresses would count nothing).
pub fn source_bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

/// What the limiter says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead and check the credentials.
    Allowed,
    /// Refuse without checking: the source address is blocked until then.
    AddressBlocked(Instant),
    /// Refuse without checking: the presented key is blocked until then.
    KeyBlocked(Instant),
}

/// Failure counters for addresses and keys.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    addresses: Counter<IpAddr>,
    keys: Counter<String>,
}

/// What a recorded failure caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewBlocks {
    /// The address is blocked from now on.
    pub address: bool,
    /// The key is blocked from now on.
    pub key: bool,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            addresses: Counter::new(),
            keys: Counter::new(),
        }
    }

    /// May this address try to log in (with this key, when one is presented) now?
    pub fn check(&self, address: IpAddr, key: Option<&str>, now: Instant) -> Verdict {
        if let Some(until) = self.addresses.blocked_until(&source_bucket(address), now) {
            return Verdict::AddressBlocked(until);
        }
        if let Some(until) = key.and_then(|k| self.keys.blocked_until(&k.to_owned(), now)) {
            return Verdict::KeyBlocked(until);
        }
        Verdict::Allowed
    }

    /// Count a failed login from `address`, with the key presented (if any).
    pub fn fail(&mut self, address: IpAddr, key: Option<&str>, now: Instant) -> NewBlocks {
        NewBlocks {
            address: self
                .addresses
                .fail(&source_bucket(address), now, self.limits),
            key: key.is_some_and(|k| self.keys.fail(&k.to_owned(), now, self.limits)),
        }
    }

    /// Entries held (addresses, keys): bounded by [`Limits::capacity`] each.
    pub fn sizes(&self) -> (usize, usize) {
        (self.addresses.len(), self.keys.len())
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
            // different keys: only the address accumulates
            let blocks = limiter.fail(ip(1), Some(&format!("k{i}")), t0);
            assert_eq!(blocks, NewBlocks::default());
            assert_eq!(limiter.check(ip(1), Some("good"), t0), Verdict::Allowed);
        }
        let blocks = limiter.fail(ip(1), Some("k9"), t0);
        assert!(blocks.address && !blocks.key);
        let until = t0 + Duration::from_secs(300);
        assert_eq!(
            limiter.check(ip(1), Some("good"), t0),
            Verdict::AddressBlocked(until)
        );
        assert_eq!(
            limiter.check(ip(1), None, t0),
            Verdict::AddressBlocked(until)
        );
        assert_eq!(limiter.check(ip(2), Some("good"), t0), Verdict::Allowed);
        assert_eq!(limiter.check(ip(1), Some("good"), until), Verdict::Allowed);
    }

    #[test]
    fn one_key_from_many_addresses_blocks_that_key_only() {
        let mut limiter = RateLimiter::new(Limits::default());
        let t0 = Instant::now();
        for i in 0..10 {
            limiter.fail(ip(i), Some("SHA256:attacker"), t0);
        }
        assert!(matches!(
            limiter.check(ip(200), Some("SHA256:attacker"), t0),
            Verdict::KeyBlocked(_)
        ));
        // Another engineer, same login@host, from the same addresses: not blocked.
        for i in 0..10 {
            assert_eq!(
                limiter.check(ip(i), Some("SHA256:engineer"), t0),
                Verdict::Allowed
            );
        }
    }

    #[test]
    fn ipv6_is_counted_per_slash_64() {
        let mut limiter = RateLimiter::new(Limits::default());
        let t0 = Instant::now();
        for i in 0..10u16 {
            let a: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap_or(ip(0));
            limiter.fail(a, None, t0);
        }
        let same: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap_or(ip(0));
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(ip(0));
        assert!(matches!(
            limiter.check(same, None, t0),
            Verdict::AddressBlocked(_)
        ));
        assert_eq!(limiter.check(other, None, t0), Verdict::Allowed);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut limiter = RateLimiter::new(Limits::default());
        let t0 = Instant::now();
        for _ in 0..9 {
            limiter.fail(ip(1), Some("a"), t0);
        }
        let later = t0 + Duration::from_secs(301);
        let blocks = limiter.fail(ip(1), Some("a"), later);
        assert_eq!(blocks, NewBlocks::default());
        assert_eq!(limiter.check(ip(1), Some("a"), later), Verdict::Allowed);
    }

    #[test]
    fn maps_stay_bounded_and_drop_the_least_recently_touched() {
        let limits = Limits {
            capacity: 100,
            ..Limits::default()
        };
        let mut limiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        // A blocked address, then a scan of 10 000 addresses and keys.
        for _ in 0..10 {
            limiter.fail(ip(1), None, t0);
        }
        for i in 0..10_000u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            limiter.fail(IpAddr::from(i.to_be_bytes()), Some(&format!("k{i}")), t);
            let (addresses, keys) = limiter.sizes();
            assert!(addresses <= 100 && keys <= 100, "{addresses} {keys}");
        }
        // The scan pushed out old failures, not the block.
        let t = t0 + Duration::from_secs(11);
        assert!(matches!(
            limiter.check(ip(1), None, t),
            Verdict::AddressBlocked(_)
        ));
    }
}
