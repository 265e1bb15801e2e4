//! Defer mode's "explain once, then reset".
//!
//! Some senders do not fall back to IPv4 on a 4xx greeting: sendmail takes
//! it as a temporary failure of the whole MX host *name*, defers the
//! message without trying the host's IPv4 address, and meets the same
//! banner at every queue run until the message bounces. Every sender falls
//! back on a connection refused. So in defer mode the first connection
//! from a source gets the responder's banner (which tells the sender's
//! admin why), and further SYNs from that source within the explain window
//! get a TCP RST: from XDP where it sees the SYN, otherwise sk_lookup's
//! refusal (the client sees a connection refused either way).
//!
//! The record of explained sources lives in the kernel: the EXPLAINED LRU
//! hash, keyed by the source masked to `explain_by` bits, which sk_lookup
//! writes when it has handed a connection to the responder and XDP reads.
//! The settings are the one entry of the DEFER array map.
//!
//! Rules (the programs and the reference classifier both call [`seen`]):
//! - The window runs from the first explanation. While it runs a record
//!   is never refreshed, so after the window the source gets the banner
//!   once more (and a new window starts): senders' admins are reminded
//!   now and then, and a sender that was turned away in between by the
//!   reset has long fallen back.
//! - The explained connection's own retransmitted SYN (its SYN-ACK was
//!   lost) is not a new attempt: same source and destination ports within
//!   the grace ([`RETRANSMIT_GRACE_NS`]) of the record are let through, or
//!   the banner would be lost under packet loss. (A later connection that happens to
//!   reuse the port within the grace gets the banner again: harmless.)
//! - An all-zero DEFER entry (a gate whose controller has not written it
//!   yet) means no records and no resets: today's plain defer, never a
//!   surprise RST.

/// A retransmitted SYN of the explained connection arrives within the
/// TCP connect timeout (Linux: 6 retries, the last 63 s after the first,
/// given up at 127 s); three minutes cover it, as the daemon's report
/// dedup does for the same question.
pub const RETRANSMIT_GRACE_NS: u64 = 180 * 1_000_000_000;

/// How far in the future a record may lie and still count as just made:
/// the programs read CLOCK_MONOTONIC at jiffy resolution (or, on kernels
/// without the coarse read, precisely), so a record written by one read
/// can be a few milliseconds ahead of another program's.
pub const CLOCK_SLACK_NS: u64 = 1_000_000_000;

/// What a repeat connection from an explained source gets.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// A TCP RST (connection refused): every sender falls back on it.
    Reset = 0,
    /// The banner again (plain defer, for operators who insist).
    Defer = 1,
}

impl Repeat {
    pub const ALL: [Repeat; 2] = [Repeat::Reset, Repeat::Defer];

    pub const fn as_str(self) -> &'static str {
        match self {
            Repeat::Reset => "reset",
            Repeat::Defer => "defer",
        }
    }

    pub fn parse(s: &str) -> Option<Repeat> {
        Repeat::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The one entry of the DEFER array map: the `[defer]` config table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeferConfig {
    /// How long a source stays explained, from its first banner. 0: no
    /// records at all (see the module docs).
    pub window_ns: u64,
    /// How long after the record a SYN with the explained connection's
    /// ports counts as its retransmit: the controller writes
    /// [`RETRANSMIT_GRACE_NS`] (a field so tests can shorten it).
    pub grace_ns: u64,
    /// Source prefix length a record covers: 64 or 128.
    pub explain_by: u32,
    /// A [`Repeat`] as u32; unknown values mean `Defer` (fail soft:
    /// never reset on a garbled entry).
    pub repeat: u32,
}

impl DeferConfig {
    /// Whether sk_lookup records explanations.
    #[inline(always)]
    pub fn records(&self) -> bool {
        self.window_ns != 0
    }

    /// Whether a repeat from an explained source is reset.
    #[inline(always)]
    pub fn escalates(&self) -> bool {
        self.records() && self.repeat == Repeat::Reset as u32
    }

    /// The EXPLAINED key of `src`: the source masked to `explain_by` bits
    /// (anything but 128 is taken as 64).
    #[inline(always)]
    pub fn key(&self, src: &[u8; 16]) -> [u8; 16] {
        let mut k = *src;
        if self.explain_by != 128 {
            let mut i = 8;
            while i < 16 {
                k[i] = 0;
                i += 1;
            }
        }
        k
    }
}

/// Value of the EXPLAINED map: when and by which connection the source
/// was explained.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Explained {
    /// The programs' clock (CLOCK_MONOTONIC, ns) at the first banner.
    pub at_ns: u64,
    /// Source port of the explained connection (host byte order).
    pub sport: u16,
    /// Its destination (protected) port.
    pub dport: u16,
    pub _pad: u32,
}

/// Where a source stands, for a SYN from `sport` to `dport` at `now_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// No record, or its window is over: it gets the banner (and a record).
    Fresh,
    /// The explained connection's SYN again (SYN-ACK lost): let through to
    /// the connection being explained, no new record.
    Retransmit,
    /// Explained within the window: a new attempt.
    Repeat,
}

#[inline(always)]
pub fn seen(
    cfg: &DeferConfig,
    rec: Option<&Explained>,
    now_ns: u64,
    sport: u16,
    dport: u16,
) -> Seen {
    let Some(r) = rec else {
        return Seen::Fresh;
    };
    if !cfg.records() {
        return Seen::Fresh;
    }
    let age = match now_ns.checked_sub(r.at_ns) {
        Some(age) => age,
        // Ahead by less than the clocks can differ: just made.
        None if r.at_ns - now_ns < CLOCK_SLACK_NS => 0,
        // Further in the future is nonsense (the clock only runs
        // forward): treat it as no record rather than reset on it.
        None => return Seen::Fresh,
    };
    if age >= cfg.window_ns {
        return Seen::Fresh;
    }
    if r.sport == sport && r.dport == dport && age < cfg.grace_ns {
        return Seen::Retransmit;
    }
    Seen::Repeat
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const H: u64 = 3600 * S;

    fn cfg(repeat: Repeat) -> DeferConfig {
        DeferConfig {
            window_ns: 24 * H,
            grace_ns: RETRANSMIT_GRACE_NS,
            explain_by: 64,
            repeat: repeat as u32,
        }
    }

    fn rec(at_ns: u64, sport: u16) -> Explained {
        Explained {
            at_ns,
            sport,
            dport: 25,
            _pad: 0,
        }
    }

    #[test]
    fn states() {
        let c = cfg(Repeat::Reset);
        let now = 100 * H;
        assert_eq!(seen(&c, None, now, 40000, 25), Seen::Fresh);
        let r = rec(now - 10 * S, 40000);
        assert_eq!(seen(&c, Some(&r), now, 40000, 25), Seen::Retransmit);
        assert_eq!(seen(&c, Some(&r), now, 40001, 25), Seen::Repeat);
        assert_eq!(seen(&c, Some(&r), now, 40000, 587), Seen::Repeat);
        // Same port after the grace: a new attempt.
        let r = rec(now - RETRANSMIT_GRACE_NS, 40000);
        assert_eq!(seen(&c, Some(&r), now, 40000, 25), Seen::Repeat);
        // The window is half-open: at its end the source is fresh again.
        let r = rec(now - 24 * H + 1, 1);
        assert_eq!(seen(&c, Some(&r), now, 2, 25), Seen::Repeat);
        let r = rec(now - 24 * H, 1);
        assert_eq!(seen(&c, Some(&r), now, 2, 25), Seen::Fresh);
        // A hair ahead (another clock read): just made. Further: ignored.
        let r = rec(now + CLOCK_SLACK_NS - 1, 1);
        assert_eq!(seen(&c, Some(&r), now, 2, 25), Seen::Repeat);
        let r = rec(now + CLOCK_SLACK_NS - 1, 40000);
        assert_eq!(seen(&c, Some(&r), now, 40000, 25), Seen::Retransmit);
        let r = rec(now + CLOCK_SLACK_NS, 1);
        assert_eq!(seen(&c, Some(&r), now, 2, 25), Seen::Fresh);
        // Zeroed settings: nothing is ever explained.
        let off = DeferConfig::default();
        assert!(!off.records() && !off.escalates());
        let r = rec(now - S, 1);
        assert_eq!(seen(&off, Some(&r), now, 2, 25), Seen::Fresh);
    }

    #[test]
    fn escalation_and_keys() {
        assert!(cfg(Repeat::Reset).escalates());
        assert!(!cfg(Repeat::Defer).escalates());
        assert!(cfg(Repeat::Defer).records());
        // Unknown repeat values never reset.
        let odd = DeferConfig {
            repeat: 7,
            ..cfg(Repeat::Reset)
        };
        assert!(!odd.escalates());
        let src: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let k64 = cfg(Repeat::Reset).key(&src);
        assert_eq!(&k64[..8], &src[..8]);
        assert_eq!(&k64[8..], &[0; 8]);
        let c128 = DeferConfig {
            explain_by: 128,
            ..cfg(Repeat::Reset)
        };
        assert_eq!(c128.key(&src), src);
        assert_eq!(core::mem::size_of::<DeferConfig>(), 24);
        assert_eq!(core::mem::size_of::<Explained>(), 16);
        for r in Repeat::ALL {
            assert_eq!(Repeat::parse(r.as_str()), Some(r));
        }
    }
}
