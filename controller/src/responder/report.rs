//! The responder's counters, and the aggregated log: one line per source
//! /64 per report interval instead of one line per connection. The
//! aggregate is bounded: past [`MAX_REPORTED_SOURCES`] prefixes in one
//! interval, further sources are only counted together.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex, MutexGuard,
    },
    time::SystemTime,
};

use ipnet::Ipv6Net;
use tracing::info;

/// Most source prefixes kept (and logged) per report interval.
pub const MAX_REPORTED_SOURCES: usize = 4096;

/// Counters, readable at any time without a lock (for `status` and the
/// metrics). All count since the responder was created.
#[derive(Debug, Default)]
pub struct ResponderStats {
    /// Connections accepted, including those refused over a cap.
    pub connections: AtomicU64,
    /// Connections being served now.
    pub active: AtomicU64,
    /// Connections that were sent the whole greeting (the 4xx deferral).
    pub deferred: AtomicU64,
    /// Connections refused with the short 421 because a cap was full.
    pub refused_over_cap: AtomicU64,
    /// ... of which because of `max_per_source`.
    pub refused_per_source: AtomicU64,
    /// Sessions closed by the idle or the session timeout.
    pub timeouts: AtomicU64,
    /// Command lines answered (converse mode).
    pub commands: AtomicU64,
    /// Sessions closed because a line was too long.
    pub lines_too_long: AtomicU64,
    /// Accept errors (out of file descriptors, ...).
    pub accept_errors: AtomicU64,
    /// The per-source aggregate of the current report interval.
    pub sources: SourceAggregator,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub active: u64,
    pub deferred: u64,
    pub refused_over_cap: u64,
    pub refused_per_source: u64,
    pub timeouts: u64,
    pub commands: u64,
    pub lines_too_long: u64,
    pub accept_errors: u64,
}

impl ResponderStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Relaxed),
            active: self.active.load(Relaxed),
            deferred: self.deferred.load(Relaxed),
            refused_over_cap: self.refused_over_cap.load(Relaxed),
            refused_per_source: self.refused_per_source.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            commands: self.commands.load(Relaxed),
            lines_too_long: self.lines_too_long.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// What one source prefix did in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    pub prefix: Ipv6Net,
    /// Connections from the prefix (served or refused).
    pub connections: u64,
    /// ... of which refused over a cap.
    pub refused: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

/// One interval's aggregate, busiest source first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalReport {
    pub sources: Vec<SourceEntry>,
    /// Connections from prefixes beyond the first [`MAX_REPORTED_SOURCES`].
    pub overflow_connections: u64,
    pub overflow_refused: u64,
}

#[derive(Debug, Default)]
struct Interval {
    sources: HashMap<Ipv6Net, SourceEntry>,
    overflow_connections: u64,
    overflow_refused: u64,
}

/// Per-source counts of the current interval.
#[derive(Debug, Default)]
pub struct SourceAggregator {
    inner: Mutex<Interval>,
}

impl SourceAggregator {
    fn lock(&self) -> MutexGuard<'_, Interval> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one connection from `prefix`.
    pub fn record(&self, prefix: Ipv6Net, refused: bool) {
        let now = SystemTime::now();
        let mut iv = self.lock();
        let full = iv.sources.len() >= MAX_REPORTED_SOURCES;
        match iv.sources.get_mut(&prefix) {
            Some(e) => {
                e.connections += 1;
                e.refused += u64::from(refused);
                e.last_seen = now;
            }
            None if full => {
                iv.overflow_connections += 1;
                iv.overflow_refused += u64::from(refused);
            }
            None => {
                iv.sources.insert(
                    prefix,
                    SourceEntry {
                        prefix,
                        connections: 1,
                        refused: u64::from(refused),
                        first_seen: now,
                        last_seen: now,
                    },
                );
            }
        }
    }

    /// Take the interval's aggregate and start a new one.
    pub fn take(&self) -> IntervalReport {
        let iv = std::mem::take(&mut *self.lock());
        let mut sources: Vec<SourceEntry> = iv.sources.into_values().collect();
        sources.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        IntervalReport {
            sources,
            overflow_connections: iv.overflow_connections,
            overflow_refused: iv.overflow_refused,
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl IntervalReport {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.overflow_connections == 0
    }

    /// Log the report: one line per source prefix, and one for the
    /// overflow if there was any.
    pub fn log(&self) {
        for e in &self.sources {
            info!(
                prefix = %e.prefix,
                connections = e.connections,
                refused_over_cap = e.refused,
                first_seen = %rfc3339(e.first_seen),
                last_seen = %rfc3339(e.last_seen),
                "responder deferred IPv6 SMTP source"
            );
        }
        if self.overflow_connections > 0 {
            info!(
                connections = self.overflow_connections,
                refused_over_cap = self.overflow_refused,
                max_sources = MAX_REPORTED_SOURCES,
                "responder: more source prefixes than one report holds; the rest counted together"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn aggregates_and_resets() {
        let agg = SourceAggregator::default();
        let a = net("2001:db8:a::/64");
        let b = net("2001:db8:b::/64");
        agg.record(a, false);
        agg.record(b, false);
        agg.record(b, true);
        agg.record(b, false);
        let r = agg.take();
        assert_eq!(r.sources.len(), 2);
        assert_eq!(
            (
                r.sources[0].prefix,
                r.sources[0].connections,
                r.sources[0].refused
            ),
            (b, 3, 1)
        );
        assert_eq!((r.sources[1].prefix, r.sources[1].connections), (a, 1));
        assert!(r.sources[0].first_seen <= r.sources[0].last_seen);
        assert!(agg.take().is_empty());
        r.log();
    }

    #[test]
    fn bounded() {
        let agg = SourceAggregator::default();
        for i in 0..(MAX_REPORTED_SOURCES as u128 + 10) {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64));
            agg.record(Ipv6Net::new(ip, 64).unwrap(), i % 2 == 0);
        }
        let r = agg.take();
        assert_eq!(r.sources.len(), MAX_REPORTED_SOURCES);
        assert_eq!(r.overflow_connections, 10);
        assert_eq!(r.overflow_refused, 5);
    }
}
