//! Non-partner SYN reports aggregated by source /48 and /64: counts,
//! first and last seen, per-minute buckets for the last hour and hourly
//! ones for the day before. Memory is bounded: at most `max_prefixes`
//! prefixes per level; a new prefix past that evicts the least recently
//! seen one (counted), and prefixes quiet for longer than [`RETAIN_MINUTES`]
//! are forgotten on [`Aggregator::prune`].
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::Ipv6Addr,
};

use ipnet::Ipv6Net;
use mx6gate_common::report::{Program, ReportAction};

/// Minutes kept at one-minute resolution.
pub const MINUTE_SPAN: u32 = 60;
/// Minutes kept at all (one day): the longest `top --window`.
pub const RETAIN_MINUTES: u32 = 24 * 60;
/// Default bound on distinct prefixes per level (/48 and /64 each). A
/// prefix costs at most ~1 KiB (60 minute + 25 hour buckets).
pub const DEFAULT_MAX_PREFIXES: usize = 8192;

/// The prefix lengths aggregated.
pub const LEVELS: [u8; 2] = [48, 64];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Reports since first seen (all time, not just the retained buckets).
    pub total: u64,
    /// The most recent source address (for a PTR lookup).
    pub last_source: Ipv6Addr,
    /// Bit per ReportAction seen.
    actions: u8,
    /// Bit per Program seen.
    programs: u8,
    /// (minute, count), minutes ascending, the last MINUTE_SPAN minutes.
    minutes: VecDeque<(u32, u32)>,
    /// (hour, count), hours ascending, older minutes folded per hour.
    hours: VecDeque<(u32, u32)>,
    /// LRU sequence number of the last touch.
    touch: u64,
}

impl Entry {
    fn new(at: u64, src: Ipv6Addr) -> Entry {
        Entry {
            first_seen: at,
            last_seen: at,
            total: 0,
            last_source: src,
            actions: 0,
            programs: 0,
            minutes: VecDeque::new(),
            hours: VecDeque::new(),
            touch: 0,
        }
    }

    pub fn actions(&self) -> Vec<ReportAction> {
        ReportAction::ALL
            .into_iter()
            .filter(|a| self.actions & (1 << *a as u8) != 0)
            .collect()
    }

    pub fn programs(&self) -> Vec<Program> {
        [Program::Xdp, Program::SkLookup]
            .into_iter()
            .filter(|p| self.programs & (1 << *p as u8) != 0)
            .collect()
    }

    fn add(&mut self, minute: u32) {
        // Reports from different CPUs may come slightly out of order.
        match self.minutes.iter().rposition(|(m, _)| *m <= minute) {
            Some(i) if self.minutes[i].0 == minute => self.minutes[i].1 += 1,
            Some(i) => self.minutes.insert(i + 1, (minute, 1)),
            None => self.minutes.push_front((minute, 1)),
        }
    }

    /// Fold minutes older than MINUTE_SPAN into hours; drop what is older
    /// than RETAIN_MINUTES.
    fn roll(&mut self, now_min: u32) {
        while let Some(&(m, n)) = self.minutes.front() {
            if m + MINUTE_SPAN > now_min {
                break;
            }
            self.minutes.pop_front();
            let h = m / 60;
            match self.hours.iter().rposition(|(x, _)| *x <= h) {
                Some(i) if self.hours[i].0 == h => self.hours[i].1 += n,
                Some(i) => self.hours.insert(i + 1, (h, n)),
                None => self.hours.push_front((h, n)),
            }
        }
        while let Some(&(h, _)) = self.hours.front() {
            if (h + 1) * 60 + RETAIN_MINUTES > now_min {
                break;
            }
            self.hours.pop_front();
        }
    }

    /// Reports in the `window` minutes ending with minute `now_min`.
    /// Windows up to MINUTE_SPAN are exact; longer ones round up to whole
    /// hours at their start.
    pub fn count_in(&self, now_min: u32, window: u32) -> u64 {
        let start = (now_min + 1).saturating_sub(window);
        let mut n: u64 = self
            .minutes
            .iter()
            .filter(|(m, _)| *m >= start && *m <= now_min)
            .map(|(_, c)| u64::from(*c))
            .sum();
        if window > MINUTE_SPAN {
            n += self
                .hours
                .iter()
                .filter(|(h, _)| h * 60 + 59 >= start)
                .map(|(_, c)| u64::from(*c))
                .sum::<u64>();
        }
        n
    }
}

/// One level (/48 or /64): entries by masked prefix, plus an LRU index.
#[derive(Debug, Default)]
struct Level {
    entries: HashMap<u128, Entry>,
    lru: BTreeMap<u64, u128>,
}

#[derive(Debug)]
pub struct Aggregator {
    levels: [Level; 2],
    max_prefixes: usize,
    seq: u64,
    /// Reports recorded.
    pub events: u64,
    /// Prefixes dropped to stay within the bound (both levels).
    pub evicted: u64,
    /// Ring-buffer records that could not be read as reports.
    pub malformed: u64,
    /// Reports not recorded: repeats of an attempt already recorded.
    pub repeats: u64,
}

/// One row of a `top` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub prefix: Ipv6Net,
    pub count: u64,
    pub entry: Entry,
}

fn level_index(len: u8) -> Option<usize> {
    LEVELS.iter().position(|l| *l == len)
}

fn mask(addr: Ipv6Addr, len: u8) -> u128 {
    let bits = u128::from(addr);
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

pub fn minute_of(secs: u64) -> u32 {
    (secs / 60) as u32
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator::new(DEFAULT_MAX_PREFIXES)
    }
}

impl Aggregator {
    pub fn new(max_prefixes: usize) -> Aggregator {
        Aggregator {
            levels: Default::default(),
            max_prefixes: max_prefixes.max(1),
            seq: 0,
            events: 0,
            evicted: 0,
            malformed: 0,
            repeats: 0,
        }
    }

    /// Record one report from `src` at unix second `at`.
    pub fn record(&mut self, src: Ipv6Addr, action: ReportAction, program: Program, at: u64) {
        self.events += 1;
        let minute = minute_of(at);
        for (i, len) in LEVELS.iter().enumerate() {
            self.seq += 1;
            let seq = self.seq;
            let key = mask(src, *len);
            let level = &mut self.levels[i];
            if !level.entries.contains_key(&key) && level.entries.len() >= self.max_prefixes {
                if let Some((_, old)) = level.lru.pop_first() {
                    level.entries.remove(&old);
                    self.evicted += 1;
                }
            }
            let e = level
                .entries
                .entry(key)
                .or_insert_with(|| Entry::new(at, src));
            level.lru.remove(&e.touch);
            e.touch = seq;
            level.lru.insert(seq, key);
            e.total += 1;
            e.first_seen = e.first_seen.min(at);
            if at >= e.last_seen {
                e.last_seen = at;
                e.last_source = src;
            }
            e.actions |= 1 << action as u8;
            e.programs |= 1 << program as u8;
            e.add(minute);
            e.roll(minute.max(minute_of(e.last_seen)));
        }
    }

    /// Fold old buckets and forget prefixes quiet for RETAIN_MINUTES.
    pub fn prune(&mut self, now: u64) {
        let now_min = minute_of(now);
        for level in &mut self.levels {
            let mut gone = Vec::new();
            for (k, e) in level.entries.iter_mut() {
                e.roll(now_min);
                if minute_of(e.last_seen) + RETAIN_MINUTES <= now_min {
                    gone.push((*k, e.touch));
                }
            }
            for (k, touch) in gone {
                level.entries.remove(&k);
                level.lru.remove(&touch);
            }
        }
    }

    /// Prefixes tracked at `len` (48 or 64).
    pub fn tracked(&self, len: u8) -> usize {
        level_index(len).map_or(0, |i| self.levels[i].entries.len())
    }

    /// The busiest prefixes of length `by` (48 or 64) in the `window`
    /// minutes up to `now`: by count, then most recent, then prefix.
    pub fn top(&self, by: u8, window: u32, now: u64, limit: usize) -> Vec<Row> {
        let Some(i) = level_index(by) else {
            return Vec::new();
        };
        let now_min = minute_of(now);
        let mut rows: Vec<Row> = self.levels[i]
            .entries
            .iter()
            .filter_map(|(k, e)| {
                let count = e.count_in(now_min, window);
                (count > 0).then(|| Row {
                    prefix: Ipv6Net::new(Ipv6Addr::from(*k), by).expect("48 and 64 are valid"),
                    count,
                    entry: e.clone(),
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(b.entry.last_seen.cmp(&a.entry.last_seen))
                .then(a.prefix.cmp(&b.prefix))
        });
        rows.truncate(limit);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000; // a minute boundary: 30,000,000 minutes
    const M: ReportAction = ReportAction::Monitor;
    const X: Program = Program::SkLookup;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn prefixes(rows: &[Row]) -> Vec<(String, u64)> {
        rows.iter()
            .map(|r| (r.prefix.to_string(), r.count))
            .collect()
    }

    #[test]
    fn by_48_and_by_64() {
        let mut g = Aggregator::new(100);
        for (src, n) in [
            ("2001:db8:2::25", 3),
            ("2001:db8:2::26", 1),
            ("2001:db8:2:1::25", 1),
            ("2001:db8:3::25", 3),
            ("2001:db8:4:5::25", 1),
        ] {
            for _ in 0..n {
                g.record(a(src), M, X, T0 + 5);
            }
        }
        assert_eq!(
            prefixes(&g.top(48, 10, T0 + 10, 20)),
            [
                ("2001:db8:2::/48".into(), 5),
                ("2001:db8:3::/48".into(), 3),
                ("2001:db8:4::/48".into(), 1)
            ]
        );
        let by64 = g.top(64, 10, T0 + 10, 20);
        assert_eq!(by64.len(), 4);
        assert_eq!(
            prefixes(&by64[..2]),
            [("2001:db8:2::/64".into(), 4), ("2001:db8:3::/64".into(), 3)]
        );
        assert_eq!(g.tracked(48), 3);
        assert_eq!(g.tracked(64), 4);
        assert_eq!(g.events, 9);
        // limit, and an unknown length answers nothing.
        assert_eq!(g.top(48, 10, T0 + 10, 1).len(), 1);
        assert!(g.top(56, 10, T0 + 10, 20).is_empty());
        let e = &g.top(48, 10, T0 + 10, 1)[0].entry;
        assert_eq!(e.actions(), [M]);
        assert_eq!(e.programs(), [X]);
    }

    #[test]
    fn first_last_seen_and_last_source() {
        let mut g = Aggregator::new(100);
        g.record(
            a("2001:db8:2::1"),
            ReportAction::Drop,
            Program::Xdp,
            T0 + 100,
        );
        g.record(a("2001:db8:2::2"), M, X, T0 + 200);
        // Out of order (another CPU): first_seen moves back, last_* stay.
        g.record(a("2001:db8:2::3"), M, X, T0 + 50);
        let r = &g.top(48, 60, T0 + 300, 1)[0];
        assert_eq!(r.count, 3);
        assert_eq!(r.entry.first_seen, T0 + 50);
        assert_eq!(r.entry.last_seen, T0 + 200);
        assert_eq!(r.entry.last_source, a("2001:db8:2::2"));
        assert_eq!(r.entry.actions(), [M, ReportAction::Drop]);
        assert_eq!(r.entry.programs(), [Program::Xdp, X]);
    }

    #[test]
    fn windows() {
        let mut g = Aggregator::new(100);
        let p = a("2001:db8:2::25");
        // One report 3 h ago, two 30 min ago, four 2 min ago.
        g.record(p, M, X, T0 - 3 * 3600);
        for _ in 0..2 {
            g.record(p, M, X, T0 - 30 * 60);
        }
        for _ in 0..4 {
            g.record(p, M, X, T0 - 120);
        }
        let now = T0 + 1;
        let count = |w| g.top(48, w, now, 1).first().map_or(0, |r| r.count);
        assert_eq!(count(1), 0);
        assert_eq!(count(3), 4);
        assert_eq!(count(10), 4);
        assert_eq!(count(31), 6);
        assert_eq!(count(60), 6);
        assert_eq!(count(4 * 60), 7);
        assert_eq!(count(24 * 60), 7);
        // The total counts everything, whatever the window.
        assert_eq!(g.top(48, 1440, now, 1)[0].entry.total, 7);
    }

    #[test]
    fn hours_fold_and_exact_windows_stay_exact() {
        let mut g = Aggregator::new(100);
        let p = a("2001:db8:2::25");
        // 90 minutes of one report a minute.
        for i in 0..90u64 {
            g.record(p, M, X, T0 + i * 60);
        }
        let now = T0 + 89 * 60 + 30;
        let count = |w| g.top(64, w, now, 1)[0].count;
        assert_eq!(count(10), 10);
        assert_eq!(count(60), 60);
        // Longer than an hour: rounds up to whole hours, never below exact.
        let two_h = count(120);
        assert_eq!(two_h, 90);
        // Bounded buckets: at most MINUTE_SPAN minutes, then hours.
        let e = &g.levels[1].entries.values().next().unwrap();
        assert!(e.minutes.len() <= MINUTE_SPAN as usize);
        assert!(!e.hours.is_empty());
    }

    #[test]
    fn eviction_keeps_most_recent_and_counts() {
        let mut g = Aggregator::new(3);
        for (i, src) in ["2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1"]
            .iter()
            .enumerate()
        {
            g.record(a(src), M, X, T0 + i as u64);
        }
        // Touch the oldest, so 2001:db8:2:: is now the least recent.
        g.record(a("2001:db8:1::2"), M, X, T0 + 10);
        g.record(a("2001:db8:4::1"), M, X, T0 + 11);
        assert_eq!(g.tracked(48), 3);
        assert_eq!(g.tracked(64), 3);
        let top: Vec<String> = g
            .top(48, 10, T0 + 20, 10)
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        assert_eq!(
            top,
            ["2001:db8:1::/48", "2001:db8:4::/48", "2001:db8:3::/48"]
        );
        // One /48 and one /64 evicted.
        assert_eq!(g.evicted, 2);
    }

    #[test]
    fn prune_forgets_prefixes_quiet_for_a_day() {
        let mut g = Aggregator::new(100);
        g.record(a("2001:db8:1::1"), M, X, T0);
        g.record(a("2001:db8:2::1"), M, X, T0 + 23 * 3600);
        g.prune(T0 + 24 * 3600 + 60);
        assert_eq!(g.tracked(48), 1);
        assert_eq!(g.tracked(64), 1);
        assert_eq!(g.evicted, 0);
        assert_eq!(
            g.top(48, 1440, T0 + 24 * 3600 + 60, 10)[0]
                .prefix
                .to_string(),
            "2001:db8:2::/48"
        );
        // Its LRU index went with it: filling up evicts only live entries.
        let mut g2 = Aggregator::new(1);
        g2.record(a("2001:db8:1::1"), M, X, T0);
        g2.prune(T0 + 25 * 3600);
        g2.record(a("2001:db8:2::1"), M, X, T0 + 25 * 3600);
        assert_eq!(g2.evicted, 0);
        assert_eq!(g2.tracked(48), 1);
    }
}
