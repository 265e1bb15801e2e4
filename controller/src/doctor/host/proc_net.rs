//! Listening sockets from /proc/net/tcp{,6}, parsed.
use super::*;
/// A listening TCP socket from /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: std::net::IpAddr,
    pub port: u16,
}

/// Parse /proc/net/tcp or tcp6 text: the sockets in LISTEN state.
pub fn parse_proc_listeners(text: &str, v6: bool) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((a, p)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(p, 16) else {
            continue;
        };
        // The kernel prints each 32-bit word of the address as the host
        // reads it: native byte order.
        let words: Option<Vec<[u8; 4]>> = (0..a.len() / 8)
            .map(|i| {
                u32::from_str_radix(&a[i * 8..i * 8 + 8], 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect();
        let Some(words) = words else { continue };
        let addr = match (v6, words.len()) {
            (false, 1) => std::net::IpAddr::V4(Ipv4Addr::from(words[0])),
            (true, 4) => {
                let mut b = [0u8; 16];
                for (i, w) in words.iter().enumerate() {
                    b[i * 4..i * 4 + 4].copy_from_slice(w);
                }
                std::net::IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => continue,
        };
        out.push(Listener { addr, port });
    }
    out
}
