//! The packet: bounds-checked access (every read goes through `load`,
//! whose comparison against data_end is what the verifier needs to see)
//! and the header walk to TCP (`mx6gate_common::classify::locate_tcp` is
//! its reference).
use aya_ebpf::programs::XdpContext;
use mx6gate_common::proto::*;

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    ptr_at::<T>(ctx, off).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
pub fn be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    load::<[u8; 2]>(ctx, off).map(u16::from_be_bytes)
}

/// Where the header walk ended.
pub enum L4 {
    /// Not IPv6, or IPv6 whose header chain ends before TCP: not ours.
    Other,
    /// IPv6 whose TCP header is not within reach (truncated, non-first
    /// fragment, chain too long, ESP): sk_lookup's to judge.
    Unparsed,
    /// Bounds-checked pointers to the IPv6 and TCP headers. Fields are read
    /// at constant offsets from these, never from a recomputed
    /// `data + offset`: the verifier only trusts the pointer it saw checked.
    Tcp {
        ip: *mut [u8; IPV6_HLEN],
        tcp: *mut [u8; TCP_HLEN],
    },
}

/// Walk Ethernet, VLAN tags and the IPv6 header chain to the TCP header.
#[inline(always)]
pub fn locate_tcp(ctx: &XdpContext) -> L4 {
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

/// The headers `locate_tcp` found (the same packet, parsed the same way).
#[inline(always)]
#[allow(clippy::type_complexity)]
pub fn relocate(ctx: &XdpContext) -> Option<(*mut [u8; IPV6_HLEN], *mut [u8; TCP_HLEN])> {
    match locate_tcp(ctx) {
        L4::Tcp { ip, tcp } => Some((ip, tcp)),
        _ => None,
    }
}
