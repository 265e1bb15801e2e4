//! Types shared by the eBPF programs and the controller, and the pure-Rust
//! reference classifier the XDP program is tested against.
//!
//! Everything the kernel side reads or writes is defined here once, so a
//! layout change is one edit (aya's template does the same).
//!
//! - `allow`    — the allowlist's layout (OCCUPIED, SLASH32, LONG_PREFIXES,
//!   the ALLOW trie) that the controller plans, and `walk`, the one
//!   lookup over it the programs, the controller and the tests all run
//! - `classify` — the reference classifier: the XDP program's semantics in
//!   plain Rust, which the differential tests hold the kernel program to
//! - `explain`  — defer mode's explain-then-reset rules (`seen`), shared
//!   by both programs and the reference classifier
//! - `proto`    — wire constants and header offsets both classifiers use
//! - `report`   — the non-partner SYN events sent through REPORTS
//! - `steer`    — sk_lookup's decision as pure functions (`decide`,
//!   `defer`, `responder_down`)
//! - `xdp`      — the XDP program's decision for a stranger's SYN by mode
//!   (`decide`: action, counter, report), shared with `classify` and
//!   `mx6gate check`
//! - here       — the map names (`map_names`), the load-time constants
//!   (`load_consts`), `Mode`, `GateConfig` (the CONFIG entry) and `Counter`
#![no_std]

pub mod allow;
pub mod classify;
pub mod explain;
pub mod proto;
pub mod report;
pub mod steer;
pub mod xdp;

/// Names of the maps in the eBPF object. The controller pins each one under
/// `<pin_path>/maps/<NAME>`; the names are also the kernel object names, so
/// they stay within BPF_OBJ_NAME_LEN (15 bytes).
pub mod map_names {
    pub const ALLOW: &str = "ALLOW";
    pub const CONFIG: &str = "CONFIG";
    pub const COUNTERS: &str = "COUNTERS";
    pub const PARTNER_HITS: &str = "PARTNER_HITS";
    /// SOCKMAP holding the responder's listening socket at index 0.
    pub const RESPONDER: &str = "RESPONDER";
    /// The /32 level of the allowlist (see `allow::TableHeader`).
    pub const SLASH32_TABLE: &str = "SLASH32_TABLE";
    /// The /32 level as releases before the table had it (a kernel hash of
    /// `allow::Slash32`). Not in this build's object: a load over such a
    /// gate copies it into SLASH32_TABLE and removes its pin (see
    /// `Gate::load`). Also the name the metrics give the /32 level.
    pub const SLASH32: &str = "SLASH32";
    /// Second level of the allowlist (see `allow`).
    pub const LONG_PREFIXES: &str = "LONG_PREFIXES";
    /// Ring buffer of non-partner SYN reports (see `report`). Pinned so a
    /// restarted controller reads on where the last one stopped.
    pub const REPORTS: &str = "REPORTS";
    /// Level 0 of the allowlist: the /28 bitmap of 2000::/3 (see `allow`).
    pub const OCCUPIED: &str = "OCCUPIED";
    /// Defer mode's record of explained sources (see `explain`), LRU.
    pub const EXPLAINED: &str = "EXPLAINED";
    /// Defer mode's settings, one `explain::DeferConfig`.
    pub const DEFER: &str = "DEFER";
    /// Counter slots from `COUNTER_SLOTS` on (see `Counter`).
    pub const COUNTERS_EXT: &str = "COUNTERS_EXT";
    /// Maps a gate pinned by an earlier release may lack: a load creates
    /// them (empty) instead of refusing to adopt the gate.
    pub const ADDED_LATER: [&str; 5] = [REPORTS, EXPLAINED, DEFER, COUNTERS_EXT, SLASH32_TABLE];
    pub const ALL: [&str; 12] = [
        ALLOW,
        CONFIG,
        COUNTERS,
        PARTNER_HITS,
        RESPONDER,
        SLASH32_TABLE,
        LONG_PREFIXES,
        REPORTS,
        OCCUPIED,
        EXPLAINED,
        DEFER,
        COUNTERS_EXT,
    ];
}

/// Load-time constants in the eBPF object (`.rodata`), set by the
/// controller from what it probed in the running kernel before loading
/// (aya's `EbpfLoader::override_global`). Each is a `u8`, 0 or 1; the
/// object's own value is the one that works on the oldest supported kernel.
/// The map holding them is frozen read-only, so the verifier knows each
/// value and never visits the branch not taken: a kernel that lacks a
/// newer helper or context field never sees the code that uses it.
pub mod load_consts {
    /// 1: read the clock with bpf_ktime_get_coarse_ns (Linux 5.11);
    /// 0: bpf_ktime_get_ns (every kernel).
    pub const COARSE_CLOCK: &str = "MX6GATE_COARSE_CLOCK";
    /// 1: sk_lookup also tells connections over lo by `ingress_ifindex`
    /// (Linux 5.17); 0: only by their addresses (source = destination).
    pub const SK_LOOKUP_IFINDEX: &str = "MX6GATE_SK_LOOKUP_IFINDEX";
}

/// Name of the XDP program in the object (its function name).
pub const XDP_PROGRAM: &str = "mx6gate_xdp";
/// Name of the sk_lookup program in the object.
pub const SK_LOOKUP_PROGRAM: &str = "mx6gate_sk_lookup";

/// What the gate does with a SYN from a source outside the allowlist.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Let it pass, count it as "would act".
    Monitor = 0,
    /// Let it pass; sk_lookup hands it to the reject-banner responder.
    Defer = 1,
    /// Answer with a TCP RST from XDP.
    Reset = 2,
    /// Drop it silently.
    Drop = 3,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Monitor, Mode::Defer, Mode::Reset, Mode::Drop];

    /// Unknown values read from the config map mean "monitor": a garbled
    /// config must fail open, never turn the gate into a black hole.
    pub const fn from_u32(v: u32) -> Mode {
        match v {
            1 => Mode::Defer,
            2 => Mode::Reset,
            3 => Mode::Drop,
            _ => Mode::Monitor,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Defer => "defer",
            Mode::Reset => "reset",
            Mode::Drop => "drop",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// How many protected ports the config map holds.
pub const MAX_PORTS: usize = 8;

/// The single entry of the CONFIG array map. The programs read it on every
/// SYN, so mode and ports change without reloading anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// A [`Mode`] as u32.
    pub mode: u32,
    /// Number of valid entries in `ports`.
    pub nports: u32,
    /// GateConfig::TRIE_ON_MISS and friends.
    pub flags: u32,
    /// What sk_lookup does in defer mode when no responder socket is
    /// registered: 0 = pass to the MTA (fail open), 1 = refuse (RST).
    pub responder_down_refuse: u32,
    /// Bumped by the controller around every allowlist update (odd while
    /// one is in progress); ties its snapshot of the prefix set to the
    /// maps. The programs ignore it.
    pub allow_generation: u32,
    /// Protected TCP destination ports (host byte order).
    pub ports: [u16; MAX_PORTS],
}

impl GateConfig {
    /// The allowlist has prefixes shorter than allow::MIN_EXPAND_LEN: a
    /// source whose /32 is not in the /32 table must still be looked up in the
    /// ALLOW trie.
    pub const TRIE_ON_MISS: u32 = 1;

    pub const fn new(mode: Mode, ports: &[u16]) -> GateConfig {
        let mut p = [0u16; MAX_PORTS];
        let mut i = 0;
        while i < ports.len() && i < MAX_PORTS {
            p[i] = ports[i];
            i += 1;
        }
        GateConfig {
            mode: mode as u32,
            nports: i as u32,
            flags: 0,
            responder_down_refuse: 0,
            allow_generation: 0,
            ports: p,
        }
    }

    /// Same loop shape as the XDP side: fixed bound, early exit.
    #[inline(always)]
    pub fn protects(&self, port: u16) -> bool {
        let mut i = 0;
        while i < MAX_PORTS {
            if (i as u32) < self.nports && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Indices into the per-CPU COUNTERS array: one per outcome.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not an IPv6 TCP SYN to a protected port (IPv4, ARP, ND, other ports…).
    PassedOther = 0,
    /// SYN from a source inside the allowlist.
    PartnerAllowed = 1,
    /// Non-partner SYN let through in monitor mode ("would act").
    Monitored = 2,
    /// Non-partner SYN dropped.
    Dropped = 3,
    /// Non-partner SYN answered with a RST.
    Reset = 4,
    /// Non-partner SYN passed on for sk_lookup to steer (defer mode).
    Deferred = 5,
    /// IPv6 packet whose TCP header XDP could not see within its bounds
    /// (truncated, non-first fragment, header chain too long, ESP): passed,
    /// the sk_lookup backstop judges it after the kernel has parsed it.
    Unparsed = 6,
    /// Defer mode: non-partner SYN from a source already explained within
    /// the window (a new attempt, not the explained connection's
    /// retransmit), answered with a RST (see `explain`).
    Escalated = 7,
    // sk_lookup outcomes: one per connection the kernel is about to hand to
    // a listener on a protected port (XDP already counted its SYN).
    /// Partner connection left to the MTA.
    SkAllowed = 8,
    /// Non-partner connection left to the MTA in monitor mode.
    SkMonitored = 9,
    /// Non-partner connection handed to the responder (defer).
    SkDeferred = 10,
    /// Non-partner connection refused (drop/reset: what XDP did not stop).
    SkRefused = 11,
    /// Defer mode with no responder socket: passed to the MTA (fail open).
    SkResponderDownPassed = 12,
    /// Defer mode with no responder socket: refused by policy.
    SkResponderDownRefused = 13,
    // Reports of non-partner SYNs to the controller (both programs).
    /// Report written to the REPORTS ring buffer.
    ReportSent = 14,
    /// Report not written: over the per-CPU rate budget, or the ring
    /// buffer was full (the controller is behind or not running).
    ReportSuppressed = 15,
    // Slots from COUNTER_SLOTS on live in COUNTERS_EXT: a pinned array
    // cannot grow, and a gate pinned before these existed is adopted.
    /// Defer mode: connection from an explained source refused by
    /// sk_lookup (what XDP did not reset).
    SkEscalated = 16,
    /// Defer mode: a source recorded as explained (its connection was
    /// handed to the responder and no window was running for it). Counts
    /// records, not an outcome: these connections are `SkDeferred` too.
    Explained = 17,
}

impl Counter {
    /// The XDP program's outcomes.
    pub const ALL: [Counter; 8] = [
        Counter::PassedOther,
        Counter::PartnerAllowed,
        Counter::Monitored,
        Counter::Dropped,
        Counter::Reset,
        Counter::Deferred,
        Counter::Unparsed,
        Counter::Escalated,
    ];

    /// The sk_lookup program's outcomes.
    pub const SK_ALL: [Counter; 7] = [
        Counter::SkAllowed,
        Counter::SkMonitored,
        Counter::SkDeferred,
        Counter::SkRefused,
        Counter::SkResponderDownPassed,
        Counter::SkResponderDownRefused,
        Counter::SkEscalated,
    ];

    /// Defer mode's explanation records (`explain`).
    pub const EXPLAIN_ALL: [Counter; 1] = [Counter::Explained];

    /// The reporting outcomes (`report`).
    pub const REPORT_ALL: [Counter; 2] = [Counter::ReportSent, Counter::ReportSuppressed];

    pub const fn as_str(self) -> &'static str {
        match self {
            Counter::PassedOther => "passed_other",
            Counter::PartnerAllowed => "partner_allowed",
            Counter::Monitored => "monitored",
            Counter::Dropped => "dropped",
            Counter::Reset => "reset",
            Counter::Deferred => "deferred",
            Counter::Unparsed => "unparsed",
            Counter::Escalated => "escalated",
            Counter::SkAllowed => "allowed",
            Counter::SkMonitored => "monitored",
            Counter::SkDeferred => "deferred",
            Counter::SkRefused => "refused",
            Counter::SkResponderDownPassed => "responder_down_passed",
            Counter::SkResponderDownRefused => "responder_down_refused",
            Counter::ReportSent => "reports_sent",
            Counter::ReportSuppressed => "reports_suppressed",
            Counter::SkEscalated => "escalated",
            Counter::Explained => "explained",
        }
    }
}

/// Slots in the COUNTERS map (room for the sk_lookup side's own outcomes).
pub const COUNTER_SLOTS: u32 = 16;
/// Slots in the COUNTERS_EXT map: counters COUNTER_SLOTS and up.
pub const COUNTER_EXT_SLOTS: u32 = 16;

/// Where a counter lives: (false, index) in COUNTERS, (true, index) in
/// COUNTERS_EXT.
#[inline(always)]
pub const fn counter_slot(c: Counter) -> (bool, u32) {
    let i = c as u32;
    if i < COUNTER_SLOTS {
        (false, i)
    } else {
        (true, i - COUNTER_SLOTS)
    }
}

/// Key of the ALLOW LPM trie: prefix length in bits, then the address in
/// network byte order (layout of `struct bpf_lpm_trie_key` with 16 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// Value of the ALLOW trie: the partner id, an index into PARTNER_HITS.
pub type PartnerId = u32;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data without padding-dependent invariants.
    unsafe impl aya::Pod for super::GateConfig {}
    unsafe impl aya::Pod for super::allow::Slash32 {}
    unsafe impl aya::Pod for super::allow::Slot {}
    unsafe impl aya::Pod for super::allow::TableHeader {}
    unsafe impl aya::Pod for super::allow::LongKey {}
    unsafe impl aya::Pod for super::explain::DeferConfig {}
    unsafe impl aya::Pod for super::explain::Explained {}
}
