//! Connection caps: in total and per source prefix (a /64, the unit an
//! IPv6 site is usually given, so one host cannot dodge the cap by
//! hopping addresses within its subnet). A connection holds a [`Slot`]
//! for its whole life; dropping the slot gives it back.
use std::{
    collections::HashMap,
    net::Ipv6Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use ipnet::Ipv6Net;

/// Prefix length sources are counted by.
pub const SOURCE_PREFIX_LEN: u8 = 64;

/// The prefix a peer is counted under: its /64, or the address itself for
/// an IPv4-mapped peer (which one IPv4 host is).
pub fn source_prefix(ip: Ipv6Addr) -> Ipv6Net {
    let len = if ip.to_ipv4_mapped().is_some() {
        128
    } else {
        SOURCE_PREFIX_LEN
    };
    match Ipv6Net::new(ip, len) {
        Ok(n) => n.trunc(),
        Err(_) => unreachable!("prefix length {len} is valid for IPv6"),
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_per_source` reached for this source prefix.
    PerSource,
}

#[derive(Debug, Default)]
struct State {
    total: u32,
    /// Only prefixes with a live connection: at most `max_total` entries.
    per_source: HashMap<Ipv6Net, u32>,
}

/// The caps and the live counts.
#[derive(Debug)]
pub struct Limiter {
    max_total: u32,
    max_per_source: u32,
    state: Mutex<State>,
}

impl Limiter {
    pub fn new(max_total: u32, max_per_source: u32) -> Arc<Limiter> {
        Arc::new(Limiter {
            max_total,
            max_per_source,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two counters: a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a slot for a connection from `prefix`, or say which cap is full.
    pub fn try_acquire(self: &Arc<Self>, prefix: Ipv6Net) -> Result<Slot, Refusal> {
        let mut st = self.lock();
        if st.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = st.per_source.get(&prefix).copied().unwrap_or(0);
        if n >= self.max_per_source {
            return Err(Refusal::PerSource);
        }
        st.total += 1;
        st.per_source.insert(prefix, n + 1);
        Ok(Slot {
            limiter: Arc::clone(self),
            prefix,
        })
    }

    /// Live connections in total.
    pub fn active(&self) -> u32 {
        self.lock().total
    }

    /// Live connections from `prefix`.
    pub fn active_for(&self, prefix: Ipv6Net) -> u32 {
        self.lock().per_source.get(&prefix).copied().unwrap_or(0)
    }

    /// Number of source prefixes with a live connection.
    pub fn sources(&self) -> usize {
        self.lock().per_source.len()
    }
}

/// One connection's place under the caps.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    prefix: Ipv6Net,
}

impl Slot {
    pub fn prefix(&self) -> Ipv6Net {
        self.prefix
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.limiter.lock();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_source.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                st.per_source.remove(&self.prefix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            source_prefix(ip("2001:db8:1:2:3:4:5:6")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            source_prefix(ip("2001:db8:1:2::1")),
            source_prefix(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            source_prefix(ip("2001:db8:1:2::1")),
            source_prefix(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_prefix(ip("::1")).to_string(), "::/64");
        assert_eq!(source_prefix(ip("::ffff:198.51.100.7")).prefix_len(), 128);
    }

    #[test]
    fn caps_hold_and_slots_come_back() {
        let l = Limiter::new(3, 2);
        let a = source_prefix(ip("2001:db8:a::1"));
        let b = source_prefix(ip("2001:db8:b::1"));
        let a1 = l.try_acquire(a).unwrap();
        let a2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Refusal::PerSource);
        let b1 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), Refusal::Total);
        assert_eq!((l.active(), l.active_for(a), l.sources()), (3, 2, 2));
        drop(a1);
        assert_eq!(l.active_for(a), 1);
        let b2 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), Refusal::Total);
        drop((a2, b1, b2));
        assert_eq!((l.active(), l.sources()), (0, 0));
    }
}
