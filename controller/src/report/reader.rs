//! Reads the pinned REPORTS ring buffer as the kernel fills it (aya's
//! RingBuf behind tokio's AsyncFd) and feeds the aggregate. The buffer is
//! pinned, so a restarted daemon reads on from where the last one stopped,
//! with the events' own times.
use std::{
    net::Ipv6Addr,
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, RingBuf};
use mx6gate_common::{
    map_names,
    report::{Program, ReportAction, SynEvent},
};
use tokio::io::{unix::AsyncFd, Interest};

use super::{aggregate::Aggregator, dedup::Attempts};
use crate::gate::PinLayout;

/// Most records taken per wakeup before yielding to the other tasks (the
/// daemon runs on one thread).
const BATCH: usize = 1024;

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl Reader {
    pub fn open(pin_path: &Path) -> Result<Reader> {
        let path = PinLayout::new(pin_path).map(map_names::REPORTS);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        let ring = RingBuf::try_from(Map::from_map_data(data)?)
            .with_context(|| format!("{} is not a ring buffer", path.display()))?;
        // SAFETY: the RingBuf owns the map's fd, keeps it open and
        // returns the same one for as long as the AsyncFd holds it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)
            .context("polling the REPORTS ring buffer")?;
        Ok(Reader { ring })
    }

    /// Read until the task is dropped.
    pub async fn run(mut self, agg: Arc<Mutex<Aggregator>>) -> Result<()> {
        let mut batch: Vec<SynEvent> = Vec::with_capacity(BATCH);
        // Records that are not SynEvents (never, unless the object and
        // this build disagree); counted, not fatal.
        let mut malformed = 0u64;
        let mut attempts = Attempts::default();
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while batch.len() < BATCH {
                let Some(item) = ring.next() else { break };
                match SynEvent::from_bytes(&item) {
                    Some(e) => batch.push(e),
                    None => malformed += 1,
                }
            }
            let full = batch.len() == BATCH;
            if !full {
                // Drained: wait for the kernel's next wakeup.
                guard.clear_ready();
            }
            drop(guard);
            if !batch.is_empty() || malformed > 0 {
                let clock = Clock::now();
                let mut g = agg.lock().unwrap_or_else(|p| p.into_inner());
                g.malformed += std::mem::take(&mut malformed);
                for e in batch.drain(..) {
                    let (Some(action), Some(program)) =
                        (ReportAction::from_u8(e.action), Program::from_u8(e.program))
                    else {
                        g.malformed += 1;
                        continue;
                    };
                    if !attempts.is_new(u128::from_be_bytes(e.src), e.sport, e.dport, e.ktime_ns) {
                        g.repeats += 1;
                        continue;
                    }
                    g.record(
                        Ipv6Addr::from(e.src),
                        action,
                        program,
                        clock.wall_secs(e.ktime_ns),
                    );
                }
            }
            if full {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Wall clock and CLOCK_MONOTONIC (what bpf_ktime_get_ns reads) at one
/// moment, to date events by their kernel time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_ns: u128,
    mono_ns: u64,
}

impl Clock {
    pub fn now() -> Clock {
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Clock {
            wall_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            mono_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        }
    }

    /// Unix seconds of an event stamped `ktime_ns`.
    pub fn wall_secs(&self, ktime_ns: u64) -> u64 {
        let ago = self.mono_ns.saturating_sub(ktime_ns);
        (self.wall_ns.saturating_sub(u128::from(ago)) / 1_000_000_000) as u64
    }
}
