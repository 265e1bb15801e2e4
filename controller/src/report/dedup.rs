//! One report per connection attempt. The programs report SYNs (XDP) and
//! listener lookups (sk_lookup); a client retransmitting its SYN, or a
//! stray segment of a connection whose socket is gone (sk_lookup cannot
//! see TCP flags), would count again. An attempt is (source address,
//! source port, destination port): repeats of one within [`TTL_NS`] are
//! recognised here and only counted.
use std::collections::{HashMap, VecDeque};

/// Longer than a SYN's retransmissions last (Linux: ~127 s by default).
pub const TTL_NS: u64 = 180 * 1_000_000_000;
/// Most attempts remembered; the oldest is forgotten first.
pub const DEFAULT_CAPACITY: usize = 65_536;

type Key = (u128, u16, u16);

#[derive(Debug)]
pub struct Attempts {
    /// Attempt → kernel time it was first reported.
    seen: HashMap<Key, u64>,
    /// Insertion order, for expiry and the bound.
    order: VecDeque<(u64, Key)>,
    capacity: usize,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts::new(DEFAULT_CAPACITY)
    }
}

impl Attempts {
    pub fn new(capacity: usize) -> Attempts {
        Attempts {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether this report starts a new attempt (and remember it).
    /// `ktime_ns` is the event's kernel time.
    pub fn is_new(&mut self, src: u128, sport: u16, dport: u16, ktime_ns: u64) -> bool {
        while let Some(&(t, k)) = self.order.front() {
            if t.saturating_add(TTL_NS) > ktime_ns && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&t) {
                self.seen.remove(&k);
            }
        }
        let key = (src, sport, dport);
        match self.seen.get(&key) {
            Some(&t) if t.saturating_add(TTL_NS) > ktime_ns => false,
            _ => {
                self.seen.insert(key, ktime_ns);
                self.order.push_back((ktime_ns, key));
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn repeats_within_ttl_are_not_new() {
        let mut a = Attempts::new(100);
        assert!(a.is_new(1, 40000, 25, 10 * S));
        // Retransmitted SYNs / stray segments of the same attempt.
        assert!(!a.is_new(1, 40000, 25, 11 * S));
        assert!(!a.is_new(1, 40000, 25, 10 * S + TTL_NS - 1));
        // Another port, source or destination port: another attempt.
        assert!(a.is_new(1, 40001, 25, 11 * S));
        assert!(a.is_new(2, 40000, 25, 11 * S));
        assert!(a.is_new(1, 40000, 587, 11 * S));
        // Past the TTL the same tuple is a new attempt.
        assert!(a.is_new(1, 40000, 25, 10 * S + TTL_NS));
    }

    #[test]
    fn bounded() {
        let mut a = Attempts::new(3);
        for p in 0..10u16 {
            assert!(a.is_new(1, p, 25, S));
        }
        assert!(a.len() <= 3, "{}", a.len());
        // The most recent are remembered, the oldest forgotten.
        assert!(!a.is_new(1, 9, 25, S));
        assert!(a.is_new(1, 0, 25, S));
    }
}
