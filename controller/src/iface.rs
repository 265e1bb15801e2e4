//! What the host's interfaces hold: their IPv4 addresses, read with
//! getifaddrs(3) in the calling process's network namespace.
//!
//! Deferring IPv6 only helps a sender that can come back over IPv4, so
//! `run`, `status` and `doctor` all ask the same question: does each
//! protected interface have an IPv4 address a sender on the Internet can
//! reach?
use std::{collections::BTreeMap, ffi::CStr, net::Ipv4Addr};

use anyhow::{bail, Result};

/// Every interface's IPv4 addresses, by name (interfaces without one are
/// absent).
pub fn ipv4_addresses() -> Result<BTreeMap<String, Vec<Ipv4Addr>>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: non-null, and sa_family says which sockaddr it is.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.entry(name).or_default().push(addr);
    }
    // SAFETY: the list came from getifaddrs and is not used after this.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// How far an IPv4 address reaches, as far as a sender's retry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Routable on the Internet.
    Public,
    /// RFC 1918 or shared (100.64/10) space: works only behind NAT or a
    /// load balancer that forwards the port.
    Private,
    /// Loopback, link-local, unspecified, multicast: no sender reaches it.
    Local,
}

pub fn reach(a: Ipv4Addr) -> Reach {
    let o = a.octets();
    if a.is_loopback()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_multicast()
        || a.is_broadcast()
        || o[0] == 0
    {
        Reach::Local
    } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// The protected interfaces that have no IPv4 address a sender could retry
/// on (none at all, or only loopback/link-local ones).
pub fn without_ipv4(interfaces: &[String], addrs: &BTreeMap<String, Vec<Ipv4Addr>>) -> Vec<String> {
    interfaces
        .iter()
        .filter(|i| {
            !addrs
                .get(*i)
                .is_some_and(|v| v.iter().any(|a| reach(*a) != Reach::Local))
        })
        .cloned()
        .collect()
}

/// The one-line warning `run` and `status` print for [`without_ipv4`].
pub fn stranding_warning(missing: &[String]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "no usable IPv4 address on {}: senders turned away over IPv6 cannot retry over IPv4 here, \
         so enforcing (defer/reset/drop) would leave their mail queued until it bounces unless \
         another MX takes it; add an IPv4 address or keep the mode at monitor (`mx6gate doctor` explains)",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_classes() {
        for (a, r) in [
            ("198.51.100.7", Reach::Public),
            ("8.8.8.8", Reach::Public),
            ("10.1.2.3", Reach::Private),
            ("172.16.0.1", Reach::Private),
            ("192.168.1.1", Reach::Private),
            ("100.64.0.1", Reach::Private),
            ("100.128.0.1", Reach::Public),
            ("127.0.0.1", Reach::Local),
            ("169.254.1.1", Reach::Local),
            ("0.1.2.3", Reach::Local),
        ] {
            assert_eq!(reach(a.parse().unwrap()), r, "{a}");
        }
    }

    #[test]
    fn interfaces_without_ipv4() {
        let mut m = BTreeMap::new();
        m.insert("eth0".to_string(), vec!["198.51.100.1".parse().unwrap()]);
        m.insert("eth1".to_string(), vec!["169.254.3.3".parse().unwrap()]);
        m.insert("lo".to_string(), vec!["127.0.0.1".parse().unwrap()]);
        let ifs: Vec<String> = ["eth0", "eth1", "eth2"].map(String::from).to_vec();
        assert_eq!(without_ipv4(&ifs, &m), vec!["eth1", "eth2"]);
        assert!(stranding_warning(&[]).is_none());
        assert!(stranding_warning(&["eth1".into()])
            .unwrap()
            .contains("eth1"));
    }

    #[test]
    fn loopback_is_listed() {
        let all = ipv4_addresses().unwrap();
        assert!(all
            .get("lo")
            .is_some_and(|v| v.contains(&Ipv4Addr::LOCALHOST)));
    }
}
