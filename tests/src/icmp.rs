//! ICMP echo ("ping") from inside a namespace, in Rust: no dependency on
//! iputils being installed.

use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

static SEQ: AtomicU16 = AtomicU16::new(1);

/// Send ICMP (v4 or v6, after `dst`) echo requests from `src` to `dst`
/// inside `ns`, one every 200 ms, until a matching reply arrives or
/// `timeout` passes. Returns the round-trip time of the answered request.
pub fn ping(ns: &Netns, src: IpAddr, dst: IpAddr, timeout: Duration) -> Result<Duration> {
    ns.enter(|| ping_here(src, dst, timeout))
        .with_context(|| format!("[netns {}] ping {src} -> {dst}", ns.name()))
}

/// [`ping`] in the calling thread's namespace.
pub fn ping_here(src: IpAddr, dst: IpAddr, timeout: Duration) -> Result<Duration> {
    if src.is_ipv4() != dst.is_ipv4() {
        bail!("address families differ");
    }
    let v6 = dst.is_ipv6();
    let sock = if v6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
    };
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    let id = (std::process::id() as u16) ^ 0x6d78;
    let dst_sa = SockAddr::from(SocketAddr::new(dst, 0));
    let deadline = Instant::now() + timeout;
    let mut sent: Vec<(u16, Instant)> = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    for _attempt in 0..1000 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pkt = echo_request(v6, id, seq);
        sock.send_to(&pkt, &dst_sa)
            .context("sending echo request")?;
        sent.push((seq, Instant::now()));
        let next = (Instant::now() + Duration::from_millis(200)).min(deadline);
        // Read replies until the next send is due.
        loop {
            let now = Instant::now();
            if now >= next {
                break;
            }
            sock.set_read_timeout(Some(next - now))?;
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("receiving"),
            };
            // SAFETY: recv_from initialised the first n bytes.
            let data: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            if from.as_socket().map(|s| s.ip()) != Some(dst) {
                continue;
            }
            if let Some(rseq) = parse_echo_reply(v6, data, id) {
                if let Some((_, t)) = sent.iter().find(|(s, _)| *s == rseq) {
                    return Ok(t.elapsed());
                }
            }
        }
    }
    Err(anyhow!(
        "no echo reply within {timeout:?} ({} requests sent)",
        sent.len()
    ))
}

fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"mx6gate-tests ping");
    if !v6 {
        // ICMPv6 checksums are filled in by the kernel; ICMPv4's are not.
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The sequence number of an echo reply with our id, or None.
fn parse_echo_reply(v6: bool, data: &[u8], id: u16) -> Option<u16> {
    let icmp = if v6 {
        data // raw ICMPv6 sockets deliver no IP header
    } else {
        let ihl = usize::from(*data.first()? & 0x0f) * 4;
        data.get(ihl..)?
    };
    let want_type = if v6 { 129 } else { 0 };
    if icmp.len() < 8 || icmp[0] != want_type || icmp[1] != 0 {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_request_verifies() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn parses_replies() {
        let mut r = echo_request(true, 9, 5);
        r[0] = 129;
        assert_eq!(parse_echo_reply(true, &r, 9), Some(5));
        assert_eq!(parse_echo_reply(true, &r, 8), None);
        let mut v4 = vec![0x45u8; 1];
        v4.extend_from_slice(&[0; 19]);
        let mut e = echo_request(false, 9, 6);
        e[0] = 0;
        v4.extend_from_slice(&e);
        assert_eq!(parse_echo_reply(false, &v4, 9), Some(6));
    }
}
