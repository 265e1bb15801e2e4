//! The reference classifier: the gate's packet semantics in plain, safe Rust.
//!
//! The XDP program implements exactly this with raw packet pointers; the
//! differential tests run both on the same packets and demand identical
//! verdicts, counters and output bytes. Keep this one obvious rather than fast.

use crate::{
    explain::{seen, DeferConfig, Explained, Seen},
    proto::*,
    xdp::decide,
    Counter, GateConfig, Mode, PartnerId,
};

/// Defer mode's record of explained sources as the XDP program sees it:
/// the DEFER entry, the programs' clock now, and the EXPLAINED lookup (by
/// the key `DeferConfig::key` makes).
pub struct Explanations<F: Fn(&[u8; 16]) -> Option<Explained>> {
    pub cfg: DeferConfig,
    pub now_ns: u64,
    pub lookup: F,
}

/// The lookup of [`NO_EXPLANATIONS`]: nothing is ever found.
pub type NoLookup = fn(&[u8; 16]) -> Option<Explained>;

/// No explanation records (a zeroed DEFER entry): plain defer.
pub const NO_EXPLANATIONS: Explanations<NoLookup> = Explanations {
    cfg: DeferConfig {
        window_ns: 0,
        grace_ns: 0,
        explain_by: 0,
        repeat: 0,
    },
    now_ns: 0,
    lookup: no_record,
};

fn no_record(_: &[u8; 16]) -> Option<Explained> {
    None
}

pub use crate::xdp::Action;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub counter: Counter,
    /// Set when the source matched the allowlist.
    pub partner: Option<PartnerId>,
    /// Length of the packet after the program ran (shorter for a RST).
    pub len: usize,
}

/// Where the TCP header of an IPv6 packet starts, or why it was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// Not IPv6 at all, or IPv6 carrying something other than TCP.
    Other,
    /// IPv6, but the TCP header is not visible within the bounds.
    Unparsed,
    /// `ip` is the offset of the IPv6 header, `tcp` of the TCP header, which
    /// is known to have at least TCP_HLEN bytes in the buffer.
    Tcp { ip: usize, tcp: usize },
}

fn be16(p: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([p[off], p[off + 1]])
}

/// Header walk: Ethernet, up to MAX_VLAN_TAGS tags, IPv6, up to
/// MAX_EXT_HEADERS extension headers.
pub fn locate_tcp(p: &[u8]) -> L4 {
    if p.len() < ETH_HLEN {
        return L4::Other;
    }
    let mut off = ETH_HLEN;
    let mut ethertype = be16(p, 12);
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        if p.len() < off + VLAN_HLEN {
            return L4::Other;
        }
        ethertype = be16(p, off + 2);
        off += VLAN_HLEN;
    }
    if ethertype != ETH_P_IPV6 {
        // IPv4, ARP, a third VLAN tag, …: not ours. A frame with a third tag
        // never reaches the kernel's IPv6 stack untagged either.
        return L4::Other;
    }
    let ip = off;
    if p.len() < ip + IPV6_HLEN {
        return L4::Unparsed;
    }
    let mut nexthdr = p[ip + 6];
    let mut cur = ip + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        match nexthdr {
            IPPROTO_TCP => break,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                if p.len() < cur + 2 {
                    return L4::Unparsed;
                }
                nexthdr = p[cur];
                cur += (p[cur + 1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                if p.len() < cur + 8 {
                    return L4::Unparsed;
                }
                if be16(p, cur + 2) & 0xfff8 != 0 {
                    // Non-first fragment: its TCP header is in another packet.
                    return L4::Unparsed;
                }
                nexthdr = p[cur];
                cur += 8;
            }
            IPPROTO_AH => {
                if p.len() < cur + 2 {
                    return L4::Unparsed;
                }
                nexthdr = p[cur];
                cur += (p[cur + 1] as usize + 2) * 4;
            }
            // ESP hides whatever follows.
            IPPROTO_ESP => return L4::Unparsed,
            _ => return L4::Other,
        }
    }
    if nexthdr != IPPROTO_TCP {
        // Still inside the header chain after MAX_EXT_HEADERS.
        return L4::Unparsed;
    }
    if p.len() < cur + TCP_HLEN {
        return L4::Unparsed;
    }
    L4::Tcp { ip, tcp: cur }
}

/// Classify `p` as the XDP program would, rewriting it in place into a RST
/// when the verdict is [`Action::Tx`]. `allow` is the ALLOW lookup,
/// `explained` defer mode's record of explained sources.
pub fn classify<F: Fn(&[u8; 16]) -> Option<Explained>>(
    p: &mut [u8],
    cfg: &GateConfig,
    allow: impl Fn(&[u8; 16]) -> Option<PartnerId>,
    explained: &Explanations<F>,
) -> Verdict {
    let len = p.len();
    let pass = |counter| Verdict {
        action: Action::Pass,
        counter,
        partner: None,
        len,
    };
    let (ip, tcp) = match locate_tcp(p) {
        L4::Other => return pass(Counter::PassedOther),
        L4::Unparsed => return pass(Counter::Unparsed),
        L4::Tcp { ip, tcp } => (ip, tcp),
    };
    let flags = p[tcp + 13];
    if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 || !cfg.protects(be16(p, tcp + 2)) {
        return pass(Counter::PassedOther);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&p[ip + 8..ip + 24]);
    if let Some(id) = allow(&src) {
        return Verdict {
            partner: Some(id),
            ..pass(Counter::PartnerAllowed)
        };
    }
    let mode = Mode::from_u32(cfg.mode);
    let x = &explained.cfg;
    let escalate = mode == Mode::Defer && x.escalates() && {
        let rec = (explained.lookup)(&x.key(&src));
        let (sport, dport) = (be16(p, tcp), be16(p, tcp + 2));
        seen(x, rec.as_ref(), explained.now_ns, sport, dport) == Seen::Repeat
    };
    let d = decide(mode, escalate);
    match d.action {
        Action::Tx => Verdict {
            action: Action::Tx,
            counter: d.counter,
            partner: None,
            len: write_rst(p, ip, tcp),
        },
        action => Verdict {
            action,
            ..pass(d.counter)
        },
    }
}

/// Turn the SYN in `p` into the RST+ACK that refuses it (RFC 9293 3.10.7.1:
/// no ACK on the SYN, so seq 0, ack = SYN's seq + 1). Extension headers and
/// TCP options are dropped; the Ethernet header and VLAN tags are kept with
/// the MACs swapped so the frame goes back the way it came. Returns the new
/// frame length.
pub fn write_rst(p: &mut [u8], ip: usize, tcp: usize) -> usize {
    let sport = be16(p, tcp);
    let dport = be16(p, tcp + 2);
    let seq = u32::from_be_bytes([p[tcp + 4], p[tcp + 5], p[tcp + 6], p[tcp + 7]]);

    let mut mac = [0u8; 6];
    mac.copy_from_slice(&p[0..6]);
    p.copy_within(6..12, 0);
    p[6..12].copy_from_slice(&mac);

    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&p[ip + 8..ip + 24]);
    dst.copy_from_slice(&p[ip + 24..ip + 40]);
    p[ip..ip + 4].copy_from_slice(&[0x60, 0, 0, 0]);
    p[ip + 4..ip + 6].copy_from_slice(&(TCP_HLEN as u16).to_be_bytes());
    p[ip + 6] = IPPROTO_TCP;
    p[ip + 7] = RST_HOP_LIMIT;
    p[ip + 8..ip + 24].copy_from_slice(&dst);
    p[ip + 24..ip + 40].copy_from_slice(&src);

    let t = ip + IPV6_HLEN;
    p[t..t + 2].copy_from_slice(&dport.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&sport.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&0u32.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    p[t + 12] = 5 << 4;
    p[t + 13] = TCP_RST | TCP_ACK;
    p[t + 14..t + 20].copy_from_slice(&[0; 6]);
    let csum = tcp6_checksum(&dst, &src, &p[t..t + TCP_HLEN]);
    p[t + 16..t + 18].copy_from_slice(&csum.to_be_bytes());
    t + TCP_HLEN
}

#[cfg(test)]
mod tests {
    use super::*;

    // A minimal IPv6 TCP SYN: Ethernet, IPv6, 20-byte TCP header.
    fn syn(dport: u16) -> [u8; 74] {
        let mut p = [0u8; 74];
        p[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        p[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        p[14] = 0x60;
        p[18..20].copy_from_slice(&20u16.to_be_bytes());
        p[20] = IPPROTO_TCP;
        p[21] = 64;
        p[22..24].copy_from_slice(&[0x20, 0x01]);
        p[24..26].copy_from_slice(&[0x0d, 0xb8]);
        p[37] = 1;
        p[38..40].copy_from_slice(&[0x20, 0x01]);
        p[40..42].copy_from_slice(&[0x0d, 0xb8]);
        p[53] = 2;
        p[54..56].copy_from_slice(&40000u16.to_be_bytes());
        p[56..58].copy_from_slice(&dport.to_be_bytes());
        p[58..62].copy_from_slice(&0x01020304u32.to_be_bytes());
        p[66] = 5 << 4;
        p[67] = TCP_SYN;
        p
    }

    #[test]
    fn non_partner_syn_by_mode() {
        for (mode, action, counter) in [
            (Mode::Monitor, Action::Pass, Counter::Monitored),
            (Mode::Defer, Action::Pass, Counter::Deferred),
            (Mode::Drop, Action::Drop, Counter::Dropped),
            (Mode::Reset, Action::Tx, Counter::Reset),
        ] {
            let mut p = syn(25);
            let v = classify(
                &mut p,
                &GateConfig::new(mode, &[25]),
                |_| None,
                &NO_EXPLANATIONS,
            );
            assert_eq!((v.action, v.counter), (action, counter), "{mode:?}");
        }
    }

    #[test]
    fn partner_passes_and_other_ports_untouched() {
        let cfg = GateConfig::new(Mode::Drop, &[25, 587]);
        let mut p = syn(25);
        let v = classify(&mut p, &cfg, |_| Some(7), &NO_EXPLANATIONS);
        assert_eq!((v.action, v.partner), (Action::Pass, Some(7)));
        let mut p = syn(80);
        assert_eq!(
            classify(&mut p, &cfg, |_| None, &NO_EXPLANATIONS).counter,
            Counter::PassedOther
        );
        let mut p = syn(587);
        assert_eq!(
            classify(&mut p, &cfg, |_| None, &NO_EXPLANATIONS).action,
            Action::Drop
        );
    }

    #[test]
    fn defer_escalates_repeats_of_explained_sources() {
        use crate::explain::{Repeat, RETRANSMIT_GRACE_NS};
        const S: u64 = 1_000_000_000;
        let now = 1000 * 3600 * S;
        let cfg = GateConfig::new(Mode::Defer, &[25]);
        let x = |repeat: Repeat, at_ns: u64, sport: u16| Explanations {
            cfg: DeferConfig {
                window_ns: 24 * 3600 * S,
                grace_ns: RETRANSMIT_GRACE_NS,
                explain_by: 64,
                repeat: repeat as u32,
            },
            now_ns: now,
            // The SYN's source is 2001:db8::1; its /64 key is 2001:db8::.
            lookup: move |k: &[u8; 16]| {
                (k[..8] == [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0] && k[8..] == [0; 8]).then_some(
                    Explained {
                        at_ns,
                        sport,
                        dport: 25,
                        _pad: 0,
                    },
                )
            },
        };
        let run = |e| {
            let mut p = syn(25);
            let v = classify(&mut p, &cfg, |_| None, &e);
            (v.action, v.counter)
        };
        let escalated = (Action::Tx, Counter::Escalated);
        let deferred = (Action::Pass, Counter::Deferred);
        assert_eq!(run(x(Repeat::Reset, now - 60 * S, 1234)), escalated);
        // The explained connection's retransmit (same port, within grace).
        assert_eq!(run(x(Repeat::Reset, now - 60 * S, 40000)), deferred);
        assert_eq!(
            run(x(Repeat::Reset, now - RETRANSMIT_GRACE_NS, 40000)),
            escalated
        );
        // Expired, or repeat = defer: the banner again.
        assert_eq!(run(x(Repeat::Reset, now - 25 * 3600 * S, 1234)), deferred);
        assert_eq!(run(x(Repeat::Defer, now - 60 * S, 1234)), deferred);
        // Partners are never escalated.
        let mut p = syn(25);
        let v = classify(&mut p, &cfg, |_| Some(3), &x(Repeat::Reset, now - S, 1));
        assert_eq!(v.counter, Counter::PartnerAllowed);
        // Other modes ignore the record.
        let mut p = syn(25);
        let v = classify(
            &mut p,
            &GateConfig::new(Mode::Monitor, &[25]),
            |_| None,
            &x(Repeat::Reset, now - S, 1),
        );
        assert_eq!(v.counter, Counter::Monitored);
        // The escalation RST is the reset mode's RST.
        let mut a = syn(25);
        classify(&mut a, &cfg, |_| None, &x(Repeat::Reset, now - S, 1));
        let mut b = syn(25);
        classify(
            &mut b,
            &GateConfig::new(Mode::Reset, &[25]),
            |_| None,
            &NO_EXPLANATIONS,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn rst_is_well_formed() {
        let mut p = syn(25);
        let v = classify(
            &mut p,
            &GateConfig::new(Mode::Reset, &[25]),
            |_| None,
            &NO_EXPLANATIONS,
        );
        assert_eq!(v.len, 74);
        assert_eq!(&p[0..6], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(p[53], 1, "destination is the SYN's source");
        assert_eq!(be16(&p, 54), 25);
        assert_eq!(be16(&p, 56), 40000);
        assert_eq!(&p[62..66], &0x01020305u32.to_be_bytes());
        assert_eq!(p[67], TCP_RST | TCP_ACK);
        let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
        s.copy_from_slice(&p[22..38]);
        d.copy_from_slice(&p[38..54]);
        assert_eq!(tcp6_checksum(&s, &d, &p[54..74]), 0, "checksum verifies");
    }
}
