//! Reports of non-partner SYNs to the controller through the REPORTS ring
//! buffer (`mx6gate_common::report` says who reports what). Each CPU has
//! a token bucket, so under a flood a SYN costs one per-CPU array lookup,
//! a coarse clock read and one compare against the bucket's "suppressed
//! until" (clock.rs; jiffy resolution is plenty for a 1000/s budget
//! and second-scale first/last seen, and it spares the ~20 ns of a precise
//! clock on every SYN of a flood), and what does not fit is only counted.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use mx6gate_common::{
    report::{Bucket, Program, ReportAction, SynEvent, RING_BYTES},
    Counter,
};

use crate::counters::count;

/// Pinned with the other maps (`map_names::REPORTS`).
#[map]
pub static REPORTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Each CPU's token bucket. Not pinned: scratch state of this program.
#[map]
pub static REPORT_BUDGET: PerCpuArray<Bucket> = PerCpuArray::with_max_entries(1, 0);

/// Report one non-partner SYN from `src`:`sport` to `dport`. `ifindex` is
/// read only for a report that goes out (in XDP it is two dependent loads
/// the flood path need not pay).
#[inline(always)]
pub fn syn(
    src: &[u8; 16],
    sport: u16,
    dport: u16,
    action: ReportAction,
    program: Program,
    ifindex: impl FnOnce() -> u32,
) {
    let Some(b) = REPORT_BUDGET.get_ptr_mut(0) else {
        return;
    };
    let now = crate::clock::now_ns();
    // Per-CPU slot: no other writer while this program runs here. Under a
    // flood almost every SYN ends at the first test: one compare, no
    // refill arithmetic, no stores to the bucket.
    if unsafe { (*b).suppressed(now) || !(*b).take(now) } {
        count(Counter::ReportSuppressed);
        return;
    }
    match REPORTS.reserve::<SynEvent>(0) {
        Some(mut e) => {
            e.write(SynEvent {
                ktime_ns: now,
                src: *src,
                ifindex: ifindex(),
                sport,
                dport,
                action: action as u8,
                program: program as u8,
                _pad: [0; 6],
            });
            e.submit(0);
            count(Counter::ReportSent);
        }
        None => count(Counter::ReportSuppressed),
    }
}
