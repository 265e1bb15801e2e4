//! The XDP classifier. Same semantics as `mx6gate_common::classify`, which
//! the differential tests hold it to: parse helpers first, policy at the end.
use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_tail, macros::xdp, programs::XdpContext,
};
use mx6gate_common::{
    explain::{seen, Seen},
    proto::*,
    report::{Program, ReportAction},
    Counter, Mode,
};

use crate::{
    maps::{allowed, config, count, count_partner, defer_config, explained},
    packet::{be16, load, ptr_at},
};

enum L4 {
    Other,
    Unparsed,
    /// Bounds-checked pointers to the IPv6 and TCP headers. Fields are read
    /// at constant offsets from these, never from a recomputed
    /// `data + offset`: the verifier only trusts the pointer it saw checked.
    Tcp {
        ip: *mut [u8; IPV6_HLEN],
        tcp: *mut [u8; TCP_HLEN],
    },
}

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
    // Drop and reset are final here, so XDP reports them; what it passes
    // on (monitor, defer) sk_lookup reports, once per connection.
    if let Some(action) = match mode {
        Mode::Drop => Some(ReportAction::Drop),
        Mode::Reset => Some(ReportAction::Reset),
        Mode::Defer if escalate => Some(ReportAction::Escalated),
        Mode::Monitor | Mode::Defer => None,
    } {
        crate::report::syn(
            &src,
            sport,
            dport,
            action,
            Program::Xdp,
            ctx.ingress_ifindex() as u32,
        );
    }
    match mode {
        Mode::Monitor => pass(Counter::Monitored),
        Mode::Defer if escalate => reset(&ctx, Counter::Escalated),
        Mode::Defer => pass(Counter::Deferred),
        Mode::Drop => {
            count(Counter::Dropped);
            xdp_action::XDP_DROP
        }
        Mode::Reset => reset(&ctx, Counter::Reset),
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

/// The headers `locate_tcp` found (the same packet, parsed the same way).
#[inline(always)]
#[allow(clippy::type_complexity)]
fn relocate(ctx: &XdpContext) -> Option<(*mut [u8; IPV6_HLEN], *mut [u8; TCP_HLEN])> {
    match locate_tcp(ctx) {
        L4::Tcp { ip, tcp } => Some((ip, tcp)),
        _ => None,
    }
}

#[inline(always)]
fn pass(c: Counter) -> u32 {
    count(c);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn locate_tcp(ctx: &XdpContext) -> L4 {
    let Some(mut ethertype) = be16(ctx, 12) else {
        return L4::Other;
    };
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        match be16(ctx, off + 2) {
            Some(t) => ethertype = t,
            None => return L4::Other,
        }
        off += VLAN_HLEN;
    }
    if ethertype != ETH_P_IPV6 {
        return L4::Other;
    }
    let Some(ip) = ptr_at::<[u8; IPV6_HLEN]>(ctx, off) else {
        return L4::Unparsed;
    };
    let mut nexthdr = unsafe { (*ip)[6] };
    let mut cur = off + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        match nexthdr {
            IPPROTO_TCP => break,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some([nh, len]) = load::<[u8; 2]>(ctx, cur) else {
                    return L4::Unparsed;
                };
                nexthdr = nh;
                cur += (len as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(frag) = load::<[u8; 8]>(ctx, cur) else {
                    return L4::Unparsed;
                };
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    return L4::Unparsed;
                }
                nexthdr = frag[0];
                cur += 8;
            }
            IPPROTO_AH => {
                let Some([nh, len]) = load::<[u8; 2]>(ctx, cur) else {
                    return L4::Unparsed;
                };
                nexthdr = nh;
                cur += (len as usize + 2) * 4;
            }
            IPPROTO_ESP => return L4::Unparsed,
            _ => return L4::Other,
        }
    }
    if nexthdr != IPPROTO_TCP {
        return L4::Unparsed;
    }
    match ptr_at::<[u8; TCP_HLEN]>(ctx, cur) {
        Some(tcp) => L4::Tcp { ip, tcp },
        None => L4::Unparsed,
    }
}

/// Rewrite the SYN into its RST+ACK in place and trim the frame; see
/// `mx6gate_common::classify::write_rst` for the rules. The new IPv6+TCP
/// headers go right after the original IPv6 header's start, so extension
/// headers and options vanish with the trimmed tail.
#[inline(always)]
fn write_rst(ctx: &XdpContext, ip: *mut [u8; IPV6_HLEN], tcp: *mut [u8; TCP_HLEN]) -> Option<()> {
    let (ih, th) = unsafe { (&*ip, &*tcp) };
    let sport = [th[0], th[1]];
    let dport = [th[2], th[3]];
    let seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
    let ack = seq.wrapping_add(1);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ih[8..24]);
    dst.copy_from_slice(&ih[24..40]);

    // The RST's checksum from the values we are about to write; nothing is
    // read back from the packet.
    let mut sum: u32 = sum16(&src) + sum16(&dst);
    sum += TCP_HLEN as u32 + IPPROTO_TCP as u32;
    sum += u16::from_be_bytes(sport) as u32 + u16::from_be_bytes(dport) as u32;
    sum += (ack >> 16) + (ack & 0xffff);
    sum += (5u32 << 12) | (TCP_RST | TCP_ACK) as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let csum = !(sum as u16);

    let ip_off = ip as usize - ctx.data();
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    let hdr = ptr_at::<[u8; IPV6_HLEN + TCP_HLEN]>(ctx, ip_off)?;
    let mut out = [0u8; IPV6_HLEN + TCP_HLEN];
    out[0] = 0x60;
    out[5] = TCP_HLEN as u8;
    out[6] = IPPROTO_TCP;
    out[7] = RST_HOP_LIMIT;
    out[8..24].copy_from_slice(&dst);
    out[24..40].copy_from_slice(&src);
    out[40..42].copy_from_slice(&dport);
    out[42..44].copy_from_slice(&sport);
    out[48..52].copy_from_slice(&ack.to_be_bytes());
    out[52] = 5 << 4;
    out[53] = TCP_RST | TCP_ACK;
    out[56..58].copy_from_slice(&csum.to_be_bytes());
    unsafe {
        let macs = *eth;
        let mut swapped = [0u8; 12];
        swapped[0..6].copy_from_slice(&macs[6..12]);
        swapped[6..12].copy_from_slice(&macs[0..6]);
        core::ptr::write_unaligned(eth, swapped);
        core::ptr::write_unaligned(hdr, out);
    }

    let keep = ip_off + IPV6_HLEN + TCP_HLEN;
    // The frame's length as a plain number first: left to itself LLVM may
    // fold `- keep` into pkt_end, which the verifier refuses.
    let frame_len = unsafe { core::ptr::read_volatile(&(ctx.data_end() - ctx.data())) };
    let excess = frame_len - keep;
    if excess > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(excess as i32)) } != 0 {
        return None;
    }
    Some(())
}

#[inline(always)]
fn sum16(a: &[u8; 16]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < 16 {
        s += u16::from_be_bytes([a[i], a[i + 1]]) as u32;
        i += 2;
    }
    s
}
