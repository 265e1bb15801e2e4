//! Frame builders for the differential tests and the benchmarks: every
//! header form the XDP classifier must handle, and a proptest generator
//! that mixes them, truncates them and flips bytes.
use mx6gate_common::proto::*;
use proptest::prelude::*;

/// The allowlist the differential tests load: overlapping prefixes so
/// longest-match matters, a /128, short prefixes (expanded into their /32s,
/// and one too short to expand), and a /32 with more distinct lengths below
/// it than the lookup's probe budget (served by the trie); see
/// `mx6gate_common::allow`.
pub const PARTNERS: [(&str, u32); 9] = [
    ("2001:db8:1::/48", 1),
    ("2001:db8:1:5::/64", 2),
    ("2001:db8:2::25/128", 3),
    ("2001:db8:8000::/33", 4),
    ("2001:db0::/29", 5),
    ("2400::/12", 6),
    ("2400:cafe::/48", 7),
    ("2a00:1::/32", 8),
    ("2a00:1:8000::/33", 9),
];

/// The prefix lengths stacked under 2a00:1::/32 beyond PARTNERS, so that
/// /32 exceeds the probe budget.
pub fn partner_prefixes() -> Vec<(ipnet::Ipv6Net, u32)> {
    let mut v: Vec<(ipnet::Ipv6Net, u32)> = PARTNERS
        .iter()
        .map(|(p, id)| (p.parse().unwrap(), *id))
        .collect();
    // One length more than the probe budget besides the inline (longest)
    // prefix: this /32 takes the trie fallback.
    for (i, len) in (34..=35 + mx6gate_common::allow::MAX_PROBES as u8).enumerate() {
        v.push((format!("2a00:1::/{len}").parse().unwrap(), 20 + i as u32));
    }
    v
}

pub const MAC_GW: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

pub fn eth(tpids: &[u16], ethertype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&MAC_GW);
    p.extend_from_slice(&MAC_PEER);
    for (i, tpid) in tpids.iter().enumerate() {
        p.extend_from_slice(&tpid.to_be_bytes());
        p.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

pub fn ipv6_hdr(src: [u8; 16], dst: [u8; 16], nexthdr: u8, payload_len: u16) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&payload_len.to_be_bytes());
    h.push(nexthdr);
    h.push(64);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop(u8),
    Routing(u8),
    DestOpts(u8),
    /// Fragment header with this offset (in 8-byte units) and M flag.
    Fragment(u16, bool),
    /// AH with this payload-length field.
    Ah(u8),
}

impl Ext {
    pub fn proto(self) -> u8 {
        match self {
            Ext::HopByHop(_) => IPPROTO_HOPOPTS,
            Ext::Routing(_) => IPPROTO_ROUTING,
            Ext::DestOpts(_) => IPPROTO_DSTOPTS,
            Ext::Fragment(..) => IPPROTO_FRAGMENT,
            Ext::Ah(_) => IPPROTO_AH,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop(l) | Ext::Routing(l) | Ext::DestOpts(l) => {
                let mut b = vec![0u8; (l as usize + 1) * 8];
                b[0] = next;
                b[1] = l;
                if let Ext::Routing(_) = self {
                    b[2] = 4; // segment routing type, segments left 0
                } else {
                    b[2] = 1; // PadN
                    b[3] = (b.len() - 4) as u8;
                }
                b
            }
            Ext::Fragment(off, more) => {
                let v = (off << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&v.to_be_bytes());
                b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                b
            }
            Ext::Ah(l) => {
                let mut b = vec![0u8; (l as usize + 2) * 4];
                b[0] = next;
                b[1] = l;
                b
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    /// Bytes of TCP options (padded to 4).
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    pub fn syn(dport: u16) -> Tcp {
        Tcp {
            sport: 41000,
            dport,
            seq: 0x1000_0000,
            flags: TCP_SYN,
            // MSS 1440, SACK permitted, timestamps, window scale: a Linux SYN.
            options: vec![
                2, 4, 5, 160, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
            ],
            payload: Vec::new(),
        }
    }

    pub fn bytes(&self, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(1);
        }
        let mut t = Vec::new();
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.push((((TCP_HLEN + opts.len()) / 4) as u8) << 4);
        t.push(self.flags);
        t.extend_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(&opts);
        t.extend_from_slice(&self.payload);
        let c = tcp6_checksum(&src, &dst, &t);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }
}

/// Ethernet (+tags) / IPv6 / extension headers / upper layer.
pub fn ipv6_frame(
    tpids: &[u16],
    src: [u8; 16],
    dst: [u8; 16],
    exts: &[Ext],
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map(|n| n.proto()).unwrap_or(proto);
        chain.extend(e.bytes(next));
    }
    let first = exts.first().map(|e| e.proto()).unwrap_or(proto);
    let mut p = eth(tpids, ETH_P_IPV6);
    p.extend(ipv6_hdr(src, dst, first, (chain.len() + l4.len()) as u16));
    p.extend(chain);
    p.extend_from_slice(l4);
    p
}

pub fn tcp_frame(tpids: &[u16], src: [u8; 16], exts: &[Ext], tcp: &Tcp) -> Vec<u8> {
    let dst = v6("2001:db8:100::1");
    ipv6_frame(tpids, src, dst, exts, IPPROTO_TCP, &tcp.bytes(src, dst))
}

pub fn ipv4_syn(dport: u16) -> Vec<u8> {
    let mut p = eth(&[], ETH_P_IP);
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&[198, 51, 100, 2, 198, 51, 100, 1]);
    p.extend(ip);
    let t = Tcp {
        options: vec![],
        ..Tcp::syn(dport)
    };
    p.extend(t.bytes([0; 16], [0; 16]));
    p
}

pub fn arp_request() -> Vec<u8> {
    let mut p = eth(&[], 0x0806);
    p.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    p.extend_from_slice(&MAC_PEER);
    p.extend_from_slice(&[198, 51, 100, 2]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[198, 51, 100, 1]);
    p
}

/// ICMPv6 neighbour solicitation for the gateway (checksum not needed by
/// the classifier, but set to something plausible).
pub fn neighbour_solicitation() -> Vec<u8> {
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&v6("2001:db8:100::1"));
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&MAC_PEER);
    ipv6_frame(
        &[],
        v6("2001:db8:100::2"),
        v6("ff02::1:ff00:1"),
        &[],
        58,
        &icmp,
    )
}

pub const STRANGER: &str = "2001:db8:2::99";
pub const PARTNER: &str = "2001:db8:1::25";

/// Named frames covering every header form the classifier handles.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut c: Vec<(String, Vec<u8>)> = Vec::new();
    let s = v6(STRANGER);
    let p = v6(PARTNER);
    let syn = Tcp::syn(25);
    let mut add = |n: &str, f: Vec<u8>| c.push((n.to_string(), f));
    add("ipv4 syn :25", ipv4_syn(25));
    add("arp", arp_request());
    add("icmpv6 ns", neighbour_solicitation());
    add(
        "udp :25",
        ipv6_frame(
            &[],
            s,
            v6("2001:db8:100::1"),
            &[],
            17,
            &[0x30, 0x39, 0, 25, 0, 8, 0, 0],
        ),
    );
    add("syn stranger :25", tcp_frame(&[], s, &[], &syn));
    add("syn partner :25", tcp_frame(&[], p, &[], &syn));
    add(
        "syn partner /64 :25",
        tcp_frame(&[], v6("2001:db8:1:5::1"), &[], &syn),
    );
    add(
        "syn /128 partner",
        tcp_frame(&[], v6("2001:db8:2::25"), &[], &syn),
    );
    add(
        "syn /128 neighbour",
        tcp_frame(&[], v6("2001:db8:2::24"), &[], &syn),
    );
    add(
        "syn /33 partner",
        tcp_frame(&[], v6("2001:db8:ffff::1"), &[], &syn),
    );
    add(
        "syn /33 miss",
        tcp_frame(&[], v6("2001:db8:7fff::1"), &[], &syn),
    );
    add("syn stranger :587", tcp_frame(&[], s, &[], &Tcp::syn(587)));
    add("syn stranger :80", tcp_frame(&[], s, &[], &Tcp::syn(80)));
    add(
        "syn no options",
        tcp_frame(
            &[],
            s,
            &[],
            &Tcp {
                options: vec![],
                ..syn.clone()
            },
        ),
    );
    add(
        "syn with data (TFO)",
        tcp_frame(
            &[],
            s,
            &[],
            &Tcp {
                payload: b"EHLO x\r\n".to_vec(),
                ..syn.clone()
            },
        ),
    );
    add(
        "syn seq wraps",
        tcp_frame(
            &[],
            s,
            &[],
            &Tcp {
                seq: u32::MAX,
                ..syn.clone()
            },
        ),
    );
    for (n, f) in [
        ("syn+ack", TCP_SYN | TCP_ACK),
        ("ack", TCP_ACK),
        ("rst", TCP_RST),
        ("fin", TCP_FIN | TCP_ACK),
        ("syn+fin", TCP_SYN | TCP_FIN),
        ("syn+rst", TCP_SYN | TCP_RST),
        ("no flags", 0),
    ] {
        add(
            n,
            tcp_frame(
                &[],
                s,
                &[],
                &Tcp {
                    flags: f,
                    ..syn.clone()
                },
            ),
        );
    }
    add("vlan syn", tcp_frame(&[ETH_P_8021Q], s, &[], &syn));
    add(
        "qinq syn",
        tcp_frame(&[ETH_P_8021AD, ETH_P_8021Q], s, &[], &syn),
    );
    add(
        "qinq partner",
        tcp_frame(&[ETH_P_8021AD, ETH_P_8021Q], p, &[], &syn),
    );
    add(
        "three tags",
        tcp_frame(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q], s, &[], &syn),
    );
    add("vlan ipv4", {
        let mut f = ipv4_syn(25);
        f.splice(12..12, [0x81, 0x00, 0, 100]);
        f
    });
    add("hbh syn", tcp_frame(&[], s, &[Ext::HopByHop(0)], &syn));
    add("routing syn", tcp_frame(&[], s, &[Ext::Routing(2)], &syn));
    add("dstopts syn", tcp_frame(&[], s, &[Ext::DestOpts(1)], &syn));
    add(
        "first fragment syn",
        tcp_frame(&[], s, &[Ext::Fragment(0, true)], &syn),
    );
    add(
        "atomic fragment syn",
        tcp_frame(&[], s, &[Ext::Fragment(0, false)], &syn),
    );
    add(
        "non-first fragment",
        tcp_frame(&[], s, &[Ext::Fragment(8, false)], &syn),
    );
    add("ah syn", tcp_frame(&[], s, &[Ext::Ah(4)], &syn));
    add(
        "hbh+dstopts syn",
        tcp_frame(&[], s, &[Ext::HopByHop(0), Ext::DestOpts(0)], &syn),
    );
    add(
        "hbh+dstopts partner",
        tcp_frame(&[], p, &[Ext::HopByHop(0), Ext::DestOpts(0)], &syn),
    );
    let max: Vec<Ext> = (0..MAX_EXT_HEADERS)
        .map(|i| {
            if i % 2 == 0 {
                Ext::DestOpts(0)
            } else {
                Ext::Routing(0)
            }
        })
        .collect();
    add("ext chain at bound", tcp_frame(&[], s, &max, &syn));
    let mut over = max.clone();
    over.push(Ext::DestOpts(0));
    add("ext chain beyond bound", tcp_frame(&[], s, &over, &syn));
    add(
        "big ext header",
        tcp_frame(&[], s, &[Ext::DestOpts(40)], &syn),
    );
    add(
        "esp",
        ipv6_frame(&[], s, v6("2001:db8:100::1"), &[], IPPROTO_ESP, &[0u8; 40]),
    );
    add(
        "ext then udp",
        ipv6_frame(
            &[],
            s,
            v6("2001:db8:100::1"),
            &[Ext::HopByHop(0)],
            17,
            &[0u8; 8],
        ),
    );
    add(
        "no next header",
        ipv6_frame(&[], s, v6("2001:db8:100::1"), &[], 59, &[]),
    );
    add("bad version syn", {
        let mut f = tcp_frame(&[], s, &[], &syn);
        f[14] = 0x40;
        f
    });
    c
}

/// Offset of the IPv6 header in a frame with up to two tags.
pub fn l3_offset(p: &[u8]) -> Option<usize> {
    let mut off = ETH_HLEN;
    let mut t = u16::from_be_bytes([*p.get(12)?, *p.get(13)?]);
    for _ in 0..MAX_VLAN_TAGS {
        if t != ETH_P_8021Q && t != ETH_P_8021AD {
            break;
        }
        t = u16::from_be_bytes([*p.get(off + 2)?, *p.get(off + 3)?]);
        off += VLAN_HLEN;
    }
    (t == ETH_P_IPV6).then_some(off)
}

fn arb_src() -> impl Strategy<Value = [u8; 16]> {
    let partner_bases: Vec<[u8; 16]> = PARTNERS
        .iter()
        .map(|(p, _)| v6(p.split('/').next().unwrap()))
        .collect();
    prop_oneof![
        // Inside or next to a partner prefix: keep the prefix's high bytes.
        (
            prop::sample::select(partner_bases),
            any::<[u8; 16]>(),
            2usize..16
        )
            .prop_map(|(base, rnd, keep)| {
                let mut a = base;
                a[keep..].copy_from_slice(&rnd[keep..]);
                a
            }),
        any::<[u8; 16]>(),
        Just(v6(STRANGER)),
    ]
}

fn arb_ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        (0u8..4).prop_map(Ext::HopByHop),
        (0u8..4).prop_map(Ext::Routing),
        (0u8..4).prop_map(Ext::DestOpts),
        (prop_oneof![3 => Just(0u16), 1 => 1u16..8192], any::<bool>())
            .prop_map(|(o, m)| Ext::Fragment(o, m)),
        (1u8..6).prop_map(Ext::Ah),
    ]
}

fn arb_tcp() -> impl Strategy<Value = Tcp> {
    (
        any::<u16>(),
        prop_oneof![4 => Just(25u16), 2 => Just(587u16), 1 => any::<u16>()],
        any::<u32>(),
        prop_oneof![4 => Just(TCP_SYN), 1 => any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(sport, dport, seq, flags, options, payload)| Tcp {
            sport,
            dport,
            seq,
            flags,
            options,
            payload,
        })
}

/// Frames that are mostly well-formed SYNs in every header form, with a
/// fraction truncated, byte-flipped or not IPv6 at all.
pub fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    let tags = prop_oneof![
        6 => Just(vec![]),
        2 => Just(vec![ETH_P_8021Q]),
        1 => Just(vec![ETH_P_8021AD, ETH_P_8021Q]),
        1 => prop::collection::vec(prop::sample::select(vec![ETH_P_8021Q, ETH_P_8021AD]), 0..4),
    ];
    let exts = prop_oneof![
        4 => Just(vec![]),
        3 => prop::collection::vec(arb_ext(), 1..4),
        1 => prop::collection::vec(arb_ext(), 4..9),
    ];
    let l4 = prop_oneof![
        8 => arb_tcp().prop_map(Some),
        1 => Just(None),
    ];
    let frame = (
        tags,
        arb_src(),
        exts,
        l4,
        prop_oneof![9 => Just(IPPROTO_TCP), 1 => any::<u8>()],
    )
        .prop_map(|(tags, src, exts, l4, proto)| match l4 {
            Some(t) if proto == IPPROTO_TCP => {
                let dst = v6("2001:db8:100::1");
                ipv6_frame(&tags, src, dst, &exts, IPPROTO_TCP, &t.bytes(src, dst))
            }
            _ => ipv6_frame(&tags, src, v6("2001:db8:100::1"), &exts, proto, &[0u8; 24]),
        });
    let other = prop_oneof![
        Just(ipv4_syn(25)),
        Just(arp_request()),
        Just(neighbour_solicitation())
    ];
    let base = prop_oneof![12 => frame, 1 => other];
    // Damage: none, truncate, or flip a byte.
    (base, 0u8..10, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut f, dmg, at, val)| {
        match dmg {
            0 => {
                let n = ETH_HLEN + at.index(f.len() - ETH_HLEN + 1);
                f.truncate(n.max(ETH_HLEN));
            }
            1 => {
                let i = at.index(f.len());
                f[i] = val;
            }
            _ => {}
        }
        f
    })
}
