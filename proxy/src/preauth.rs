//! Connections that have not logged in yet: capped per source address and in total, and
//! given a login grace time, like OpenSSH's `MaxStartups`, `PerSourceMaxStartups` and
//! `LoginGraceTime`. The accept loop ([`crate::listener`]) takes a [`PreauthSlot`] for each
//! connection before any SSH byte is read; the handler drops it when the login succeeds. Pure
//! bookkeeping: no I/O, no clock.
//!
//! Without these, anyone who can reach the port can hold thousands of half-open SSH
//! handshakes (each with its buffers and a task) and starve real engineers.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::ratelimit::source_bucket;

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreauthLimits {
    /// Unauthenticated connections from one address (an IPv6 /64).
    pub per_address: usize,
    /// Unauthenticated connections in all.
    pub total: usize,
    /// How long a connection may take to log in.
    pub grace: Duration,
}

impl Default for PreauthLimits {
    fn default() -> Self {
        Self {
            per_address: 16,
            total: 256,
            grace: Duration::from_secs(60),
        }
    }
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This address holds [`PreauthLimits::per_address`] unauthenticated connections.
    Address,
    /// [`PreauthLimits::total`] unauthenticated connections are open.
    Total,
}

#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// The unauthenticated connections open now.
#[derive(Debug, Clone)]
pub struct PreauthSlots {
    limits: PreauthLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One connection's place until it logs in or closes (dropping it gives the place back).
#[derive(Debug)]
pub struct PreauthSlot {
    address: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl PreauthSlots {
    /// No connections yet, these caps.
    pub fn new(limits: PreauthLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// The caps.
    pub fn limits(&self) -> PreauthLimits {
        self.limits
    }

    /// A place for a new connection from `address`, unless a cap is reached. The address map
    /// holds only addresses with open connections, so it is bounded by `total`.
    pub fn try_take(&self, address: IpAddr) -> Result<PreauthSlot, Full> {
        let address = source_bucket(address);
        let Ok(mut counts) = self.counts.lock() else {
            return Err(Full::Total);
        };
        if counts.total >= self.limits.total {
            return Err(Full::Total);
        }
        let open = counts.by_address.get(&address).copied().unwrap_or(0);
        if open >= self.limits.per_address {
            return Err(Full::Address);
        }
        counts.by_address.insert(address, open + 1);
        counts.total += 1;
        Ok(PreauthSlot {
            address,
            counts: self.counts.clone(),
        })
    }

    /// Unauthenticated connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.total = counts.total.saturating_sub(1);
            let left = counts
                .by_address
                .get(&self.address)
                .copied()
                .unwrap_or(0)
                .saturating_sub(1);
            if left == 0 {
                counts.by_address.remove(&self.address);
            } else {
                counts.by_address.insert(self.address, left);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn slots(per_address: usize, total: usize) -> PreauthSlots {
        PreauthSlots::new(PreauthLimits {
            per_address,
            total,
            ..PreauthLimits::default()
        })
    }

    #[test]
    fn per_address_cap_leaves_room_for_others() {
        let slots = slots(2, 10);
        let a = slots.try_take(ip(1));
        let b = slots.try_take(ip(1));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(slots.try_take(ip(1)).err(), Some(Full::Address));
        assert!(slots.try_take(ip(2)).is_ok());
        drop(a);
        assert!(slots.try_take(ip(1)).is_ok());
    }

    #[test]
    fn total_cap_and_release_on_drop() {
        let slots = slots(16, 3);
        let held: Vec<_> = (1..=3).filter_map(|i| slots.try_take(ip(i)).ok()).collect();
        assert_eq!(held.len(), 3);
        assert_eq!(slots.try_take(ip(9)).err(), Some(Full::Total));
        drop(held);
        assert_eq!(slots.open(), 0);
        assert!(
            slots
                .counts
                .lock()
                .map(|c| c.by_address.is_empty())
                .unwrap_or(false)
        );
        assert!(slots.try_take(ip(9)).is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_cap() {
        let slots = slots(1, 10);
        let first: IpAddr = "2001:db8::1".parse().unwrap_or(ip(0));
        let second: IpAddr = "2001:db8::2".parse().unwrap_or(ip(0));
        let _held = slots.try_take(first);
        assert_eq!(slots.try_take(second).err(), Some(Full::Address));
    }
}
