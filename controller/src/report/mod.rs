//! Who is being turned away: the non-partner SYN reports the programs send
//! through the REPORTS ring buffer, aggregated by source /48 and /64.
//!
//! - `reader`    — the ring buffer → the aggregate (tokio AsyncFd)
//! - `dedup`     — one count per connection attempt (SYN retransmits and
//!   stray segments are recognised)
//! - `aggregate` — counts, first/last seen and time buckets per prefix,
//!   memory-bounded
//! - `suggest`   — `top --suggest`: rows turned into `partner add` lines
//! - this module — the service the daemon runs: reader, periodic summary
//!   log line, and the answers `mx6gate top` gets over the control socket.
pub mod aggregate;
pub mod dedup;
pub mod reader;
pub mod suggest;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aggregate::{Aggregator, LEVELS, RETAIN_MINUTES};
use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use mx6gate_common::{map_names, Counter};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::gate::PinLayout;

/// How often the summary line is logged (when anything happened).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(300);
/// Prefixes named in the summary line.
const SUMMARY_TOP: usize = 5;
/// Most rows one `top` answer carries.
pub const MAX_LIMIT: usize = 10_000;

/// What `mx6gate top` asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopQuery {
    /// Prefix length to aggregate by: 48 or 64.
    pub by: u8,
    /// Minutes back from now, 1 to 1440.
    pub window_minutes: u32,
    /// Most rows to return.
    pub limit: usize,
}

impl TopQuery {
    pub fn validate(&self) -> Result<()> {
        if !LEVELS.contains(&self.by) {
            bail!("--by {}: the daemon aggregates by /48 or /64 only", self.by);
        }
        if self.window_minutes == 0 || self.window_minutes > RETAIN_MINUTES {
            bail!(
                "window of {} minutes: must be 1 minute to {} hours (what the daemon keeps)",
                self.window_minutes,
                RETAIN_MINUTES / 60
            );
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            bail!("--limit {}: must be 1 to {MAX_LIMIT}", self.limit);
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopRow {
    pub prefix: String,
    /// Reports in the window.
    pub count: u64,
    /// Reports since first seen.
    pub total: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub last_source: String,
    pub actions: Vec<String>,
    pub programs: Vec<String>,
    /// PTR name of `last_source` (filled by the CLI with --resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptr: Option<String>,
    /// Partner whose prefix covers this one now (filled by the CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_partner: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Unix second the daemon started aggregating.
    pub since: u64,
    /// Connection attempts counted since then.
    pub events: u64,
    /// Reports that repeated an attempt already counted (retransmitted
    /// SYNs, stray segments).
    pub repeats: u64,
    pub malformed: u64,
    /// Prefixes evicted to stay within the memory bound.
    pub evicted: u64,
    pub tracked_48: usize,
    pub tracked_64: usize,
    /// The kernel's counters since the gate was loaded.
    pub reports_sent: u64,
    pub reports_suppressed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopReport {
    pub by: u8,
    pub window_minutes: u32,
    /// Unix second of the answer.
    pub now: u64,
    pub rows: Vec<TopRow>,
    pub stats: Stats,
}

/// Shared by the reader, the summary and the control socket.
#[derive(Clone)]
pub struct Handle {
    agg: Arc<Mutex<Aggregator>>,
    counters: Arc<PerCpuArray<MapData, u64>>,
    since: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Handle {
    fn kernel_counters(&self) -> (u64, u64) {
        let read = |c: Counter| {
            self.counters
                .get(&(c as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        (read(Counter::ReportSent), read(Counter::ReportSuppressed))
    }

    pub fn top(&self, q: &TopQuery) -> Result<TopReport> {
        q.validate()?;
        let now = unix_now();
        let (reports_sent, reports_suppressed) = self.kernel_counters();
        let g = self.agg.lock().unwrap_or_else(|p| p.into_inner());
        let rows = g
            .top(q.by, q.window_minutes, now, q.limit)
            .into_iter()
            .map(|r| TopRow {
                prefix: r.prefix.to_string(),
                count: r.count,
                total: r.entry.total,
                first_seen: r.entry.first_seen,
                last_seen: r.entry.last_seen,
                last_source: r.entry.last_source.to_string(),
                actions: r
                    .entry
                    .actions()
                    .iter()
                    .map(|a| a.as_str().into())
                    .collect(),
                programs: r
                    .entry
                    .programs()
                    .iter()
                    .map(|p| p.as_str().into())
                    .collect(),
                ptr: None,
                now_partner: None,
            })
            .collect();
        Ok(TopReport {
            by: q.by,
            window_minutes: q.window_minutes,
            now,
            rows,
            stats: Stats {
                since: self.since,
                events: g.events,
                repeats: g.repeats,
                malformed: g.malformed,
                evicted: g.evicted,
                tracked_48: g.tracked(48),
                tracked_64: g.tracked(64),
                reports_sent,
                reports_suppressed,
            },
        })
    }

    /// Log the summary line of the last interval, if anything happened.
    fn summarize(&self, last: &mut (u64, u64)) {
        let (_, suppressed) = self.kernel_counters();
        let mut g = self.agg.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = summary(&mut g, last, suppressed, unix_now()) {
            info!(
                events = s.events,
                suppressed = s.suppressed,
                prefixes_48 = s.prefixes_48,
                prefixes_64 = s.prefixes_64,
                evicted = s.evicted,
                top_48 = s.top_48,
                "non-partner SYN sources in the last {} min (`mx6gate top` for more)",
                SUMMARY_EVERY.as_secs() / 60
            );
        }
    }
}

/// What one summary line says.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// Reports read in the interval.
    pub events: u64,
    /// Reports the kernel suppressed in the interval.
    pub suppressed: u64,
    pub prefixes_48: usize,
    pub prefixes_64: usize,
    pub evicted: u64,
    /// "PREFIX COUNT, …" for the busiest /48s of the interval.
    pub top_48: String,
}

/// The summary for the interval since `last` (events read, suppressed
/// total), which it advances; None when nothing happened. Also prunes.
pub fn summary(
    g: &mut Aggregator,
    last: &mut (u64, u64),
    suppressed_total: u64,
    now: u64,
) -> Option<Summary> {
    g.prune(now);
    let events = g.events - last.0;
    let suppressed = suppressed_total.saturating_sub(last.1);
    *last = (g.events, suppressed_total);
    if events == 0 && suppressed == 0 {
        return None;
    }
    let minutes = (SUMMARY_EVERY.as_secs() / 60) as u32;
    let top: Vec<String> = g
        .top(48, minutes, now, SUMMARY_TOP)
        .iter()
        .map(|r| format!("{} {}", r.prefix, r.count))
        .collect();
    Some(Summary {
        events,
        suppressed,
        prefixes_48: g.tracked(48),
        prefixes_64: g.tracked(64),
        evicted: g.evicted,
        top_48: top.join(", "),
    })
}

/// The running service: its tasks end when it is dropped.
pub struct Service {
    pub handle: Handle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Start reading the pinned REPORTS buffer of the gate at `pin_path`.
    pub fn start(pin_path: &Path) -> Result<Service> {
        let reader = reader::Reader::open(pin_path)?;
        let path = PinLayout::new(pin_path).map(map_names::COUNTERS);
        let counters: PerCpuArray<MapData, u64> = Map::from_map_data(
            MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?,
        )?
        .try_into()?;
        let handle = Handle {
            agg: Arc::new(Mutex::new(Aggregator::default())),
            counters: Arc::new(counters),
            since: unix_now(),
        };
        let agg = handle.agg.clone();
        let read = tokio::spawn(async move {
            if let Err(e) = reader.run(agg).await {
                error!(
                    error = format!("{e:#}"),
                    "reading non-partner SYN reports failed; `mx6gate top` stops updating"
                );
            }
        });
        let h = handle.clone();
        let summary = tokio::spawn(async move {
            let mut last = (0, h.kernel_counters().1);
            let mut tick = tokio::time::interval(SUMMARY_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                h.summarize(&mut last);
            }
        });
        Ok(Service {
            handle,
            tasks: vec![read, summary],
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use mx6gate_common::report::{Program, ReportAction};

    use super::*;

    #[test]
    fn summary_only_when_something_happened() {
        let mut g = Aggregator::new(100);
        let mut last = (0, 0);
        let now = 1_800_000_000;
        assert_eq!(summary(&mut g, &mut last, 0, now), None);
        for (src, n) in [
            ("2001:db8:2::1", 3),
            ("2001:db8:3::1", 1),
            ("2001:db8:2:1::1", 1),
        ] {
            for _ in 0..n {
                g.record(
                    src.parse().unwrap(),
                    ReportAction::Monitor,
                    Program::SkLookup,
                    now - 10,
                );
            }
        }
        let s = summary(&mut g, &mut last, 7, now).unwrap();
        assert_eq!(
            s,
            Summary {
                events: 5,
                suppressed: 7,
                prefixes_48: 2,
                prefixes_64: 3,
                evicted: 0,
                top_48: "2001:db8:2::/48 4, 2001:db8:3::/48 1".into(),
            }
        );
        // Nothing new: no line. Only suppressed reports: a line.
        assert_eq!(summary(&mut g, &mut last, 7, now + 300), None);
        let s = summary(&mut g, &mut last, 9, now + 600).unwrap();
        assert_eq!((s.events, s.suppressed, s.top_48.as_str()), (0, 2, ""));
    }
}
