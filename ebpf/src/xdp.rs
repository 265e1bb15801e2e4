//! The XDP classifier. Same semantics as `mx6gate_common::classify`, which
//! the differential tests hold it to. The policy only: the header walk is
//! packet.rs, the lookup allow.rs, the reset writer rst.rs.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use mx6gate_common::{
    explain::{seen, Seen},
    proto::{TCP_ACK, TCP_SYN},
    report::Program,
    xdp::{decide, Action},
    Counter, Mode,
};

use crate::{
    allow::allowed,
    config::{config, defer_config},
    counters::{count, count_partner},
    explain::explained,
    packet::{locate_tcp, relocate, L4},
    rst::write_rst,
};

#[xdp]
pub fn mx6gate_xdp(ctx: XdpContext) -> u32 {
    let (ip, tcp) = match locate_tcp(&ctx) {
        L4::Other => return pass(Counter::PassedOther),
        L4::Unparsed => return pass(Counter::Unparsed),
        L4::Tcp { ip, tcp } => (ip, tcp),
    };
    let th = unsafe { &*tcp };
    let flags = th[13];
    if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
        return pass(Counter::PassedOther);
    }
    let Some(cfg) = config() else {
        return pass(Counter::PassedOther);
    };
    let dport = u16::from_be_bytes([th[2], th[3]]);
    if !cfg.protects(dport) {
        return pass(Counter::PassedOther);
    }
    // Everything the verdict needs is copied out of the packet before the
    // lookup: no packet pointer may stay live across it (see `reset`).
    let sport = u16::from_be_bytes([th[0], th[1]]);
    let mut src = [0u8; 16];
    src.copy_from_slice(&unsafe { &*ip }[8..24]);
    if let Some(id) = allowed(cfg, &src) {
        count_partner(id);
        return pass(Counter::PartnerAllowed);
    }
    let mode = Mode::from_u32(cfg.mode);
    // Defer mode: a source explained within the window gets the reset
    // (its SYN is a new attempt, not the explained connection's
    // retransmit). Only looked up when escalation is on.
    let escalate = mode == Mode::Defer && {
        let x = defer_config();
        // A miss (the common case) needs no clock read.
        x.escalates()
            && explained(&x.key(&src)).is_some_and(|r| {
                seen(&x, Some(&r), crate::clock::now_ns(), sport, dport) == Seen::Repeat
            })
    };
    let d = decide(mode, escalate);
    if let Some(action) = d.report {
        crate::report::syn(&src, sport, dport, action, Program::Xdp, || {
            ctx.ingress_ifindex() as u32
        });
    }
    match d.action {
        Action::Pass => pass(d.counter),
        Action::Drop => {
            count(d.counter);
            xdp_action::XDP_DROP
        }
        Action::Tx => reset(&ctx, d.counter),
    }
}

/// Answer the SYN with its RST+ACK (XDP_TX), counted as `c`.
#[inline(always)]
fn reset(ctx: &XdpContext, c: Counter) -> u32 {
    // The packet's headers are located again rather than kept across
    // the lookups: with nothing of the parse live there, the verifier
    // checks the lookups once instead of once per header layout (a
    // third of the load time instead of all of it).
    match relocate(ctx).and_then(|(ip, tcp)| write_rst(ctx, ip, tcp)) {
        Some(()) => {
            count(c);
            xdp_action::XDP_TX
        }
        // Cannot happen for a packet that parsed, but never send half a
        // rewrite: the frame is no longer the sender's SYN either.
        None => {
            count(Counter::Dropped);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn pass(c: Counter) -> u32 {
    count(c);
    xdp_action::XDP_PASS
}
