//! Wire constants and the few header offsets both classifiers use.

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const VLAN_HLEN: usize = 4;
/// 802.1Q inside 802.1ad is the deepest stack we look through.
pub const MAX_VLAN_TAGS: usize = 2;

pub const IPV6_HLEN: usize = 40;
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up; real SYNs carry none or one.
pub const MAX_EXT_HEADERS: usize = 6;

pub const TCP_HLEN: usize = 20;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Hop limit of the RSTs we send (Linux's default).
pub const RST_HOP_LIMIT: u8 = 64;

/// One's-complement sum folding used for the TCP checksum over the IPv6
/// pseudo-header (RFC 8200 section 8.1).
pub fn tcp6_checksum(src: &[u8; 16], dst: &[u8; 16], tcp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        let mut i = 0;
        while i + 1 < b.len() {
            sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
            i += 2;
        }
        if i < b.len() {
            sum += (b[i] as u32) << 8;
        }
    };
    add(src);
    add(dst);
    add(&(tcp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_TCP]);
    add(tcp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
