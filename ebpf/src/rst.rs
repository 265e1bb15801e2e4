//! The reset writer: a SYN rewritten in place into the RST+ACK that
//! refuses it (`mx6gate_common::classify::write_rst` is its reference).
use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use mx6gate_common::proto::*;

use crate::packet::ptr_at;

/// Rewrite the SYN into its RST+ACK in place and trim the frame; see
/// `mx6gate_common::classify::write_rst` for the rules. The new IPv6+TCP
/// headers go right after the original IPv6 header's start, so extension
/// headers and options vanish with the trimmed tail.
#[inline(always)]
pub fn write_rst(
    ctx: &XdpContext,
    ip: *mut [u8; IPV6_HLEN],
    tcp: *mut [u8; TCP_HLEN],
) -> Option<()> {
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
