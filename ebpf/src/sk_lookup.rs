//! The sk_lookup program: authoritative for every connection the kernel
//! is about to hand to a listener, after full parsing (extension headers,
//! fragments), so nothing XDP could not judge slips past. Steers deferred
//! connections to the responder and records the sources it explained to
//! (`mx6gate_common::explain`), refusing their repeats; refuses in
//! drop/reset modes.
use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use mx6gate_common::{
    explain::{seen, Explained},
    proto::IPPROTO_TCP,
    report::{Program, ReportAction},
    steer::{decide, defer, responder_down, Steer},
    Counter,
};

use crate::{
    allow::allowed,
    config::{config, defer_config},
    counters::count,
    explain::explained,
    maps::{EXPLAINED, RESPONDER},
};

const AF_INET6: u32 = 10;
/// lo is ifindex 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// 1 when the kernel's sk_lookup context has `ingress_ifindex` (Linux
/// 5.17), set by the controller after probing
/// (`mx6gate_common::load_consts::SK_LOOKUP_IFINDEX`). Frozen read-only at
/// load, so on older kernels the verifier never visits the read of that
/// field, which it would refuse. 0 here: the object as built works
/// everywhere.
#[no_mangle]
static MX6GATE_SK_LOOKUP_IFINDEX: u8 = 0;

/// Context fields must be read with 32-bit loads (the verifier rejects
/// wider ones); volatile keeps LLVM from merging them.
#[inline(always)]
fn field(p: *const u32) -> u32 {
    unsafe { core::ptr::read_volatile(p) }
}

/// An IPv6 address from the context as its four 32-bit words (each in
/// network byte order).
#[inline(always)]
fn ip6_words(a: *const [u32; 4]) -> [u32; 4] {
    let w = a as *const u32;
    unsafe { [field(w), field(w.add(1)), field(w.add(2)), field(w.add(3))] }
}

#[sk_lookup]
pub fn mx6gate_sk_lookup(ctx: SkLookupContext) -> u32 {
    let l: *const bpf_sk_lookup = ctx.lookup;
    unsafe {
        if field(&raw const (*l).family) != AF_INET6
            || field(&raw const (*l).protocol) != IPPROTO_TCP as u32
        {
            return sk_action::SK_PASS;
        }
    }
    let remote = ip6_words(unsafe { &raw const (*l).remote_ip6 });
    // Connections from the gateway itself are the operator's own, never a
    // remote MTA's: local submission and health checks stay as they are.
    // Two tests, either enough:
    // - the source is the destination: what the kernel picks for a local
    //   connection to one of its own addresses (::1 included), and what no
    //   remote peer can use to complete a handshake;
    // - it came over lo: a local client reaching an address configured on
    //   lo from another of its addresses. Only kernels whose sk_lookup
    //   context has the interface (5.17) say so; elsewhere such a client
    //   is gated like a remote one. (A connection to an address on any
    //   other interface reports that interface, even from the host itself:
    //   hence the first test on every kernel.)
    let local = ip6_words(unsafe { &raw const (*l).local_ip6 });
    // 0 in reports where the interface is unknown.
    let ifindex = if unsafe { core::ptr::read_volatile(&raw const MX6GATE_SK_LOOKUP_IFINDEX) } != 0
    {
        unsafe { field(&raw const (*l).ingress_ifindex) }
    } else {
        0
    };
    // Word by word: a slice compare could become a memcmp call.
    if ifindex == LOOPBACK_IFINDEX
        || (remote[0] == local[0]
            && remote[1] == local[1]
            && remote[2] == local[2]
            && remote[3] == local[3])
    {
        return sk_action::SK_PASS;
    }
    let Some(cfg) = config() else {
        return sk_action::SK_PASS;
    };
    let port = unsafe { field(&raw const (*l).local_port) } as u16;
    if !cfg.protects(port) {
        return sk_action::SK_PASS;
    }
    let mut src = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        src[i * 4..i * 4 + 4].copy_from_slice(&remote[i].to_ne_bytes());
        i += 1;
    }
    // remote_port is a __be16 followed by zero padding; the 32-bit load
    // older kernels need puts it in the low half.
    let sport = u16::from_be(unsafe { field(&raw const (*l).remote_port as *const u32) } as u16);
    let partner = allowed(cfg, &src);
    // Defer mode: where the source stands with its explanation decides
    // between the banner (and a record) and the refusal.
    let x = defer_config();
    let key = x.key(&src);
    let now = crate::clock::now_ns();
    let steer = match decide(cfg, port, partner.is_some()) {
        Steer::Defer => {
            let rec = if x.records() { explained(&key) } else { None };
            defer(&x, seen(&x, rec.as_ref(), now, sport, port))
        }
        s => s,
    };
    let steer = match steer {
        Steer::Responder { record } => match RESPONDER.redirect_sk_lookup(&ctx, 0, 0) {
            // Assigned: SK_PASS hands the connection to the responder.
            Ok(()) => {
                // Recorded only once the banner is sure to be given: a
                // source never gets the reset without having had it.
                if record {
                    let rec = Explained {
                        at_ns: now,
                        sport,
                        dport: port,
                        _pad: 0,
                    };
                    if EXPLAINED.insert(key, rec, 0).is_ok() {
                        count(Counter::Explained);
                    }
                }
                Steer::Pass(Counter::SkDeferred)
            }
            // The responder's socket leaves the SOCKMAP when it dies.
            Err(_) => responder_down(cfg),
        },
        s => s,
    };
    // Partner hits are XDP's to count (once per SYN); here only outcomes.
    let (outcome, verdict) = match steer {
        Steer::Pass(c) => (c, sk_action::SK_PASS),
        Steer::Refuse(c) => (c, sk_action::SK_DROP),
        // Resolved above; defer and responder_down never answer these.
        Steer::Defer | Steer::Responder { .. } => return sk_action::SK_PASS,
    };
    count(outcome);
    report(&src, sport, port, outcome, ifindex);
    verdict
}

/// Report a non-partner outcome (the counter names it); partners and
/// unprotected ports are not reported.
#[inline(always)]
fn report(src: &[u8; 16], sport: u16, port: u16, outcome: Counter, ifindex: u32) {
    let action = match outcome {
        Counter::SkMonitored => ReportAction::Monitor,
        Counter::SkDeferred => ReportAction::Defer,
        Counter::SkRefused => ReportAction::Backstop,
        Counter::SkResponderDownPassed | Counter::SkResponderDownRefused => {
            ReportAction::ResponderDown
        }
        Counter::SkEscalated => ReportAction::Escalated,
        _ => return,
    };
    crate::report::syn(src, sport, port, action, Program::SkLookup, || ifindex);
}
