//! What the programs tell the controller about non-partner SYNs: one
//! [`SynEvent`] per SYN (or connection, for sk_lookup) through the REPORTS
//! ring buffer, rate-limited per CPU in the kernel so a flood costs the
//! controller nothing (what does not fit is only counted, as
//! `Counter::ReportSuppressed`).
//!
//! Who reports what, so one connection attempt is reported once:
//! - XDP reports in drop and reset modes, where its verdict is final, and
//!   the resets of explained sources in defer mode (`explain`);
//! - sk_lookup reports in every mode: in monitor and defer it is where the
//!   verdict is taken (XDP only passed the SYN on); in drop and reset it
//!   sees only what XDP did not stop (the backstop).

/// Events each CPU may send per second once its burst is spent.
pub const RATE_PER_SEC: u64 = 1000;
/// Events each CPU may send at once after a quiet spell.
pub const BURST: u64 = 100;
/// Cost of one event in the token bucket, in nanoseconds of credit: the
/// bucket gains one nanosecond of credit per nanosecond of time, so the
/// programs never divide.
pub const EVENT_COST_NS: u64 = 1_000_000_000 / RATE_PER_SEC;
/// The bucket's capacity (the burst) in the same unit.
pub const BUCKET_CAP_NS: u64 = BURST * EVENT_COST_NS;
/// Bytes of the REPORTS ring buffer (a power-of-2 multiple of the page
/// size): ~6,500 events of backlog while the controller is busy or down.
pub const RING_BYTES: u32 = 256 * 1024;

/// Which program saw the SYN.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Program {
    Xdp = 0,
    SkLookup = 1,
}

impl Program {
    pub const fn from_u8(v: u8) -> Option<Program> {
        match v {
            0 => Some(Program::Xdp),
            1 => Some(Program::SkLookup),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Program::Xdp => "xdp",
            Program::SkLookup => "sk_lookup",
        }
    }
}

/// What the gate did with the SYN.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportAction {
    /// Let through to the MTA in monitor mode ("would act").
    Monitor = 0,
    /// Dropped by XDP.
    Drop = 1,
    /// Answered with a RST by XDP.
    Reset = 2,
    /// Handed to the responder (421 banner).
    Defer = 3,
    /// Refused by sk_lookup in drop/reset mode (XDP did not stop it).
    Backstop = 4,
    /// Defer mode without a responder: passed or refused by down_policy.
    ResponderDown = 5,
    /// Defer mode, source explained within the window: reset by XDP or
    /// refused by sk_lookup (see `explain`).
    Escalated = 6,
}

impl ReportAction {
    pub const ALL: [ReportAction; 7] = [
        ReportAction::Monitor,
        ReportAction::Drop,
        ReportAction::Reset,
        ReportAction::Defer,
        ReportAction::Backstop,
        ReportAction::ResponderDown,
        ReportAction::Escalated,
    ];

    pub const fn from_u8(v: u8) -> Option<ReportAction> {
        match v {
            0 => Some(ReportAction::Monitor),
            1 => Some(ReportAction::Drop),
            2 => Some(ReportAction::Reset),
            3 => Some(ReportAction::Defer),
            4 => Some(ReportAction::Backstop),
            5 => Some(ReportAction::ResponderDown),
            6 => Some(ReportAction::Escalated),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ReportAction::Monitor => "monitor",
            ReportAction::Drop => "drop",
            ReportAction::Reset => "reset",
            ReportAction::Defer => "defer",
            ReportAction::Backstop => "backstop",
            ReportAction::ResponderDown => "responder_down",
            ReportAction::Escalated => "escalated",
        }
    }

    pub fn parse(s: &str) -> Option<ReportAction> {
        ReportAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One record in the REPORTS ring buffer (40 bytes, explicit padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynEvent {
    /// bpf_ktime_get_ns() when the program ran (CLOCK_MONOTONIC); the
    /// controller turns it into wall time, so a backlog read after a
    /// restart keeps its real times.
    pub ktime_ns: u64,
    /// Source address, network byte order.
    pub src: [u8; 16],
    /// Interface the SYN came in on.
    pub ifindex: u32,
    /// Source port, host byte order: with `src` and `dport` it tells a
    /// new attempt from a retransmitted SYN or a stray segment of one
    /// already reported (sk_lookup cannot see TCP flags).
    pub sport: u16,
    /// Destination (protected) port, host byte order.
    pub dport: u16,
    /// A [`ReportAction`] as u8.
    pub action: u8,
    /// A [`Program`] as u8.
    pub program: u8,
    pub _pad: [u8; 6],
}

impl SynEvent {
    /// Parse a ring-buffer record; None if it is not one of ours.
    pub fn from_bytes(b: &[u8]) -> Option<SynEvent> {
        if b.len() < core::mem::size_of::<SynEvent>() {
            return None;
        }
        // SAFETY: the length is checked; every bit pattern is a valid
        // SynEvent (plain integers), and read_unaligned needs no alignment.
        Some(unsafe { core::ptr::read_unaligned(b.as_ptr() as *const SynEvent) })
    }
}

/// Per-CPU token bucket state (REPORT_BUDGET map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Credit in nanoseconds, at most BUCKET_CAP_NS.
    pub credit: u64,
    /// ktime of the last refill.
    pub last: u64,
    /// After a refusal, the ktime at which the next event's credit will
    /// have come in; before it, [`Bucket::suppressed`] says no with one
    /// compare (0: no refusal yet).
    pub until: u64,
}

impl Bucket {
    /// Whether an event at `now` is over budget for certain: the flood
    /// path, one load and one compare before any other report work. The
    /// bucket needs no update then: a refusal before `until` would only
    /// have folded the elapsed time into the credit, and the next `take`
    /// adds the same time from `last` instead (the sum stays under the
    /// cap, being under one event's cost), so every later outcome is what
    /// it would have been.
    #[inline(always)]
    pub fn suppressed(&self, now: u64) -> bool {
        now < self.until
    }

    /// Refill for the time since the last call and take one event's cost
    /// if there is enough. The programs and the tests call this same code.
    #[inline(always)]
    pub fn take(&mut self, now: u64) -> bool {
        // A fresh bucket (last = 0) starts full: boot is long ago.
        let elapsed = now.saturating_sub(self.last);
        self.last = now;
        let credit = self.credit.saturating_add(elapsed);
        let credit = if credit > BUCKET_CAP_NS {
            BUCKET_CAP_NS
        } else {
            credit
        };
        if credit >= EVENT_COST_NS {
            self.credit = credit - EVENT_COST_NS;
            true
        } else {
            self.credit = credit;
            self.until = now + (EVENT_COST_NS - credit);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<SynEvent>(), 40);
        assert_eq!(core::mem::size_of::<Bucket>(), 24);
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = Bucket::default();
        let t0 = 10_000_000_000u64;
        let burst = (0..1000).filter(|_| b.take(t0)).count() as u64;
        assert_eq!(burst, BURST);
        // One second later: RATE_PER_SEC more (the cap is BURST, so a
        // second of credit is capped) — at most BURST at once.
        let later = (0..5000).filter(|_| b.take(t0 + 1_000_000_000)).count() as u64;
        assert_eq!(later, BURST);
        // Spread evenly: one event per EVENT_COST_NS.
        let mut t = t0 + 2_000_000_000;
        let mut sent = 0;
        for _ in 0..(BURST as usize) {
            b.take(t); // drain
        }
        for _ in 0..1000 {
            t += EVENT_COST_NS / 2;
            sent += u64::from(b.take(t));
        }
        assert!((499..=501).contains(&sent), "{sent}");
    }

    /// The programs check `suppressed` first and call `take` only when it
    /// says no: the same events go through as with `take` alone, whatever
    /// the arrival times (bursts, gaps, a flood at 1 ns apart).
    #[test]
    fn suppressed_check_changes_no_outcome() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut sent, mut refused) = (0u64, 0u64);
        for _ in 0..200 {
            let (mut plain, mut fast) = (Bucket::default(), Bucket::default());
            let mut t = 10_000_000_000u64;
            for _ in 0..5000 {
                // Mostly a flood (the bucket runs dry and refusals chain),
                // now and then a pause long enough to refill some or all.
                t += match next() % 16 {
                    0..=12 => next() % 1000,
                    13 => next() % EVENT_COST_NS,
                    14 => next() % (3 * EVENT_COST_NS),
                    _ => next() % (20 * EVENT_COST_NS),
                };
                let a = plain.take(t);
                let b = !fast.suppressed(t) && fast.take(t);
                assert_eq!(a, b, "at {t}");
                sent += u64::from(a);
                refused += u64::from(!a);
            }
        }
        // Both outcomes, many times over: the check had work to do.
        assert!(
            sent > 10_000 && refused > 10_000,
            "{sent} sent, {refused} refused"
        );
    }

    #[test]
    fn parse_roundtrip() {
        let e = SynEvent {
            ktime_ns: 7,
            src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ifindex: 3,
            sport: 41000,
            dport: 25,
            action: ReportAction::Drop as u8,
            program: Program::Xdp as u8,
            _pad: [0; 6],
        };
        let bytes: [u8; 40] = unsafe { core::mem::transmute(e) };
        assert_eq!(SynEvent::from_bytes(&bytes), Some(e));
        assert_eq!(SynEvent::from_bytes(&bytes[..39]), None);
    }
}
