//! The standard lab: a sender and a gateway joined by one veth pair.
//!
//! ```text
//!   sender netns                                   gateway netns
//!   ┌──────────────────────────────┐  veth   ┌──────────────────────────────┐
//!   │ sender_if                    ├─────────┤ gw_if                        │
//!   │  2001:db8:100::2/64          │         │  2001:db8:100::1/64          │
//!   │  198.51.100.2/24             │         │  198.51.100.1/24             │
//!   │  2001:db8:1::25/128 partner  │         │  route 2001:db8:1::/48 via ::2│
//!   │  2001:db8:2::25/128 stranger │         │  route 2001:db8:2::/48 via ::2│
//!   │  GRO on (XDP_TX: xdp_pass.rs)│         │  (XDP + sk_lookup go here)   │
//!   └──────────────────────────────┘         └──────────────────────────────┘
//! ```
//!
//! Only documentation addresses are used (2001:db8::/32, 198.51.100.0/24).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};

use crate::netns::{add_addr, add_route, set_gro, veth_pair, Netns};

/// Gateway's address on the link.
pub const GW_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// Sender's own address on the link.
pub const SENDER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
/// Gateway's IPv4 address on the link.
pub const GW_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Sender's IPv4 address on the link.
pub const SENDER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The "partner" source (inside [`PARTNER_NET`]), owned by the sender.
pub const PARTNER_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x25);
/// The "stranger" source (inside [`STRANGER_NET`]), owned by the sender.
pub const STRANGER_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x25);
/// An address on the link that nobody owns: neighbour discovery for it never
/// gets an answer, so a TCP connect to it times out (a "blackhole").
pub const UNUSED_LINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x99);
/// An IPv4 address on the link that nobody owns (ARP never answered).
pub const UNUSED_LINK_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);

/// The partner network (what a test would put in the allowlist).
pub const PARTNER_NET: &str = "2001:db8:1::/48";
/// The stranger network (never allowed).
pub const STRANGER_NET: &str = "2001:db8:2::/48";
/// The link's IPv6 prefix.
pub const LINK_V6_NET: &str = "2001:db8:100::/64";
/// The link's IPv4 prefix.
pub const LINK_V4_NET: &str = "198.51.100.0/24";

/// Mail domain the gateway's receiving MTA accepts in tests.
pub const MAIL_DOMAIN: &str = "example.test";
/// Host name of the gateway's receiving MTA in tests.
pub const GW_HOSTNAME: &str = "mx.example.test";

/// Sender and gateway namespaces joined by one veth pair; see the module
/// docs for the addresses. Dropping it removes both namespaces and
/// everything in them.
#[derive(Debug)]
pub struct Topology {
    /// The sending side (MTAs and clients connect from here).
    pub sender: Netns,
    /// The mail gateway (the gate and the real MTA live here).
    pub gw: Netns,
    /// The gateway's end of the veth (attach XDP here).
    pub gw_if: String,
    /// The sender's end of the veth (GRO on).
    pub sender_if: String,
}

impl Topology {
    /// Build the topology (≈ 20 `ip` calls, well under a second).
    pub fn new() -> Result<Topology> {
        let sender = Netns::new("sender")?;
        let gw = Netns::new("gw")?;
        let (gw_if, sender_if) = veth_pair(&gw, &sender)?;
        let t = Topology {
            sender,
            gw,
            gw_if,
            sender_if,
        };
        t.configure().context("configuring the lab topology")?;
        Ok(t)
    }

    fn configure(&self) -> Result<()> {
        let (gw, s) = (&self.gw, &self.sender);
        add_addr(gw, &self.gw_if, &format!("{GW_V6}/64"))?;
        add_addr(gw, &self.gw_if, &format!("{GW_V4}/24"))?;
        add_addr(s, &self.sender_if, &format!("{SENDER_V6}/64"))?;
        add_addr(s, &self.sender_if, &format!("{SENDER_V4}/24"))?;
        add_addr(s, &self.sender_if, &format!("{PARTNER_SRC}/128"))?;
        add_addr(s, &self.sender_if, &format!("{STRANGER_SRC}/128"))?;
        add_route(gw, PARTNER_NET, &SENDER_V6.to_string())?;
        add_route(gw, STRANGER_NET, &SENDER_V6.to_string())?;
        set_gro(s, &self.sender_if, true)?;
        Ok(())
    }

    /// Names of the two namespaces (sender, gateway).
    pub fn namespaces(&self) -> [&str; 2] {
        [self.sender.name(), self.gw.name()]
    }

    /// `[GW_V6]:port`.
    pub fn gw_v6(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(GW_V6), port)
    }

    /// `GW_V4:port`.
    pub fn gw_v4(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(GW_V4), port)
    }
}
