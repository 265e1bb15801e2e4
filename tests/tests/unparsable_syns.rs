//! DESIGN.md invariant 7, end to end: a SYN that the XDP program cannot
//! parse within its bounds is counted (`unparsed`) and passed — never
//! dropped blind, never judged on a guess — and the kernel's own parse then
//! brings it to sk_lookup, which applies the policy XDP could not. So no
//! such SYN to a protected port reaches the MTA unless the policy lets it.
//!
//! The other half of the invariant (no out-of-bounds read, no unbounded
//! loop) is the verifier's to prove, at every load; xdp_differential runs
//! every truncation of every corpus packet through BPF_PROG_TEST_RUN
//! against the reference classifier. This suite sends real frames over a
//! veth into the gateway's namespace, in every mode, from strangers and
//! partners, and checks what comes back and what each program counted.
//!
//! The shapes are the ones a sender can make the kernel accept while XDP's
//! bounded walk gives up:
//! - more extension headers than XDP walks (`MAX_EXT_HEADERS`);
//! - a SYN in two fragments whose fragment header lies beyond that walk
//!   (the kernel reassembles it; XDP sees two unparsable fragments);
//! - a SYN whose first fragment holds only 8 bytes of the TCP header (the
//!   "tiny fragment" trick against filters that judge first fragments):
//!   the kernel discards it (RFC 8200 4.5) or, should it reassemble,
//!   sk_lookup judges it; either way the MTA never answers it in drop or
//!   reset mode.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use mx6gate::maps::GateMaps;
use mx6gate_common::{proto::*, Counter};
use mx6gate_tests::{
    gate::GateUnderTest, packets::*, require_root, Listener, Netns, Topology, GW_V6, PARTNER_NET,
    STRANGER_SRC,
};

/// How long a frame's answer may take (generous: slow or emulated machines).
const ANSWER: Duration = Duration::from_secs(5);
/// How long a frame that must get no answer is watched.
const SILENCE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// MAX_EXT_HEADERS + 1 destination-options headers, then the SYN.
    LongChain,
    /// MAX_EXT_HEADERS destination-options headers, a fragment header, and
    /// the SYN split in two fragments (24 + 16 bytes of TCP).
    FragmentBeyondWalk,
    /// A fragment header first, 8 bytes of TCP in the first fragment.
    TinyFirstFragment,
}

/// What came back to the sender for one connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    SynAck,
    Reset,
    Nothing,
}

/// The frames of one SYN from `src`:`sport` to the gateway's port 25.
fn frames(shape: Shape, topo: &Topology, src: Ipv6Addr, sport: u16) -> Vec<Vec<u8>> {
    let (s, d) = (src.octets(), GW_V6.octets());
    let seg = Tcp {
        sport,
        ..Tcp::syn(25)
    }
    .bytes(s, d);
    // A Linux SYN: 20 bytes of header, 20 of options.
    assert_eq!(seg.len(), 40);
    let dest_opts = |n: usize| -> Vec<Ext> { (0..n).map(|_| Ext::DestOpts(0)).collect() };
    let with = |mut exts: Vec<Ext>, last: Ext| {
        exts.push(last);
        exts
    };
    let mut out = match shape {
        Shape::LongChain => vec![ipv6_frame(
            &[],
            s,
            d,
            &dest_opts(MAX_EXT_HEADERS + 1),
            IPPROTO_TCP,
            &seg,
        )],
        Shape::FragmentBeyondWalk => vec![
            ipv6_frame(
                &[],
                s,
                d,
                &with(dest_opts(MAX_EXT_HEADERS), Ext::Fragment(0, true)),
                IPPROTO_TCP,
                &seg[..24],
            ),
            ipv6_frame(
                &[],
                s,
                d,
                &with(dest_opts(MAX_EXT_HEADERS), Ext::Fragment(3, false)),
                IPPROTO_TCP,
                &seg[24..],
            ),
        ],
        Shape::TinyFirstFragment => vec![
            ipv6_frame(&[], s, d, &[Ext::Fragment(0, true)], IPPROTO_TCP, &seg[..8]),
            ipv6_frame(
                &[],
                s,
                d,
                &[Ext::Fragment(1, false)],
                IPPROTO_TCP,
                &seg[8..],
            ),
        ],
    };
    let (gw_mac, sender_mac) = (
        mac_of(&topo.gw, &topo.gw_if),
        mac_of(&topo.sender, &topo.sender_if),
    );
    for f in &mut out {
        f[0..6].copy_from_slice(&gw_mac);
        f[6..12].copy_from_slice(&sender_mac);
    }
    out
}

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    // /sys/class/net is the host's under nsenter; ask iproute2 instead.
    let s = ns
        .run_stdout(&["ip", "-br", "link", "show", "dev", ifname])
        .unwrap();
    let addr = s.split_whitespace().nth(2).unwrap();
    let mut mac = [0u8; 6];
    for (i, b) in addr.split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

/// Send `frames` out of the sender's veth with AF_PACKET and watch for the
/// gateway's answer from port 25 to `src`:`sport`, for at most `wait`.
fn exchange(
    topo: &Topology,
    frames: Vec<Vec<u8>>,
    src: Ipv6Addr,
    sport: u16,
    wait: Duration,
) -> Answer {
    let ifname = topo.sender_if.clone();
    topo.sender.enter(move || unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let c = std::ffi::CString::new(ifname).unwrap();
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
        let bound = libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sll) as u32,
        );
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of_val(&tv) as u32,
        );
        for f in &frames {
            let n = libc::send(fd, f.as_ptr() as *const libc::c_void, f.len(), 0);
            assert_eq!(
                n,
                f.len() as isize,
                "send: {}",
                std::io::Error::last_os_error()
            );
        }
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        let mut answer = Answer::Nothing;
        while Instant::now() < deadline {
            let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            let mx6gate_common::classify::L4::Tcp { ip, tcp } =
                mx6gate_common::classify::locate_tcp(p)
            else {
                continue;
            };
            let to = Ipv6Addr::from(<[u8; 16]>::try_from(&p[ip + 24..ip + 40]).unwrap());
            let ports = (
                u16::from_be_bytes([p[tcp], p[tcp + 1]]),
                u16::from_be_bytes([p[tcp + 2], p[tcp + 3]]),
            );
            if to != src || ports != (25, sport) {
                continue;
            }
            let flags = p[tcp + 13];
            answer = if flags & TCP_RST != 0 {
                Answer::Reset
            } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                Answer::SynAck
            } else {
                panic!("unexpected answer to {src}:{sport}: TCP flags {flags:#04x}");
            };
            break;
        }
        libc::close(fd);
        answer
    })
}

/// A counter's name with its program: `xdp.unparsed`, `sk.refused`, …
/// (the two programs share some outcome names).
fn name(c: Counter) -> String {
    if Counter::ALL.contains(&c) {
        format!("xdp.{}", c.as_str())
    } else if Counter::SK_ALL.contains(&c) {
        format!("sk.{}", c.as_str())
    } else {
        c.as_str().to_string()
    }
}

type Counts = BTreeMap<String, u64>;

/// Every counter of both programs, read from the pinned maps.
fn counters(g: &GateUnderTest) -> Counts {
    let maps = GateMaps::open(&g.pin_path).unwrap();
    Counter::ALL
        .iter()
        .chain(&Counter::SK_ALL)
        .chain(&Counter::EXPLAIN_ALL)
        .map(|c| (name(*c), maps.counter(*c).unwrap()))
        .collect()
}

/// `after - before`, only the counters that moved, leaving out XDP's
/// `passed_other` (neighbour discovery between the two ends comes and goes
/// as it likes).
fn moved(before: &Counts, after: &Counts) -> Counts {
    let background = name(Counter::PassedOther);
    after
        .iter()
        .filter(|(c, _)| **c != background)
        .filter_map(|(c, n)| {
            let d = n - before[c];
            (d > 0).then(|| (c.clone(), d))
        })
        .collect()
}

/// Expected moves, by counter.
fn counts(of: &[(Counter, usize)]) -> Counts {
    of.iter().map(|(c, n)| (name(*c), *n as u64)).collect()
}

/// A source of its own per attempt (its own /64, so defer mode's
/// explanations never carry over): stranger or partner network, `k`th.
fn source(partner: bool, k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, if partner { 1 } else { 2 }, k, 0, 0, 0, 0x25)
}

struct Lab {
    topo: Topology,
    gate: GateUnderTest,
    _mta: Listener,
    next: u16,
}

impl Lab {
    fn new() -> Lab {
        let topo = Topology::new().unwrap();
        let mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
        let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", "").unwrap();
        gate.ok(&["partner", "add", "p", PARTNER_NET]).unwrap();
        gate.start().unwrap();
        // The gateway's route to the test sources goes via the sender's
        // link address: resolve it, so the first answer is not lost to ND.
        mx6gate_tests::ping(
            &topo.sender,
            IpAddr::V6(STRANGER_SRC),
            IpAddr::V6(GW_V6),
            Duration::from_secs(2),
        )
        .unwrap();
        Lab {
            topo,
            gate,
            _mta: mta,
            next: 1,
        }
    }

    fn mode(&self, mode: &str) {
        self.gate.ok(&["mode", mode]).unwrap();
    }

    /// One attempt from `src` in `shape`: what came back, what moved.
    fn attempt(&mut self, shape: Shape, src: Ipv6Addr, wait: Duration) -> (Answer, Counts, usize) {
        let sport = 40000 + self.next;
        self.next += 1;
        let frames = frames(shape, &self.topo, src, sport);
        let n = frames.len();
        let before = counters(&self.gate);
        let answer = exchange(&self.topo, frames, src, sport, wait);
        (answer, moved(&before, &counters(&self.gate)), n)
    }

    fn fresh(&mut self, partner: bool) -> Ipv6Addr {
        let k = self.next;
        self.next += 1;
        source(partner, k)
    }
}

/// What sk_lookup must do with a whole (reassembled) SYN from a stranger
/// in `mode`, and what the sender sees.
fn stranger_verdict(mode: &str) -> (Answer, Counter) {
    match mode {
        "monitor" => (Answer::SynAck, Counter::SkMonitored),
        // The responder's socket answers the handshake.
        "defer" => (Answer::SynAck, Counter::SkDeferred),
        "reset" | "drop" => (Answer::Reset, Counter::SkRefused),
        _ => unreachable!(),
    }
}

#[test]
fn inv7_unparsable_syns_are_counted_and_meet_sk_lookup_in_every_mode() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    for mode in ["monitor", "defer", "reset", "drop"] {
        lab.mode(mode);
        for shape in [Shape::LongChain, Shape::FragmentBeyondWalk] {
            // A stranger: XDP counts every frame unparsed and judges
            // nothing; sk_lookup gives the mode's verdict.
            let src = lab.fresh(false);
            let (answer, moved, frames) = lab.attempt(shape, src, ANSWER);
            let (want, outcome) = stranger_verdict(mode);
            let mut expect = vec![(Counter::Unparsed, frames), (outcome, 1)];
            if mode == "defer" {
                // Handed to the responder, so recorded as explained.
                expect.push((Counter::Explained, 1));
            }
            assert_eq!(
                (answer, &moved),
                (want, &counts(&expect)),
                "{mode}, {shape:?}, stranger {src}: answer and counters"
            );
            if mode == "defer" {
                // Explained now: its next attempt, as unparsable to XDP,
                // is refused by sk_lookup (explain, then reset).
                let (answer, moved, frames) = lab.attempt(shape, src, ANSWER);
                assert_eq!(
                    (answer, moved),
                    (
                        Answer::Reset,
                        counts(&[(Counter::Unparsed, frames), (Counter::SkEscalated, 1)])
                    ),
                    "defer, {shape:?}, explained stranger {src}: the repeat is reset"
                );
            }
            // A partner reaches the MTA in every mode (invariant 2 for
            // what XDP cannot parse).
            let src = lab.fresh(true);
            let (answer, moved, frames) = lab.attempt(shape, src, ANSWER);
            assert_eq!(
                (answer, moved),
                (
                    Answer::SynAck,
                    counts(&[(Counter::Unparsed, frames), (Counter::SkAllowed, 1)])
                ),
                "{mode}, {shape:?}, partner {src}: answer and counters"
            );
        }
    }
}

#[test]
fn inv7_tiny_first_fragments_never_reach_the_mta_when_enforcing() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    for mode in ["reset", "drop"] {
        lab.mode(mode);
        let src = lab.fresh(false);
        let (answer, moved, frames) = lab.attempt(Shape::TinyFirstFragment, src, SILENCE);
        assert_eq!(
            moved.get(&name(Counter::Unparsed)),
            Some(&(frames as u64)),
            "{mode}: XDP counts both fragments unparsed: {moved:?}"
        );
        // Discarded by the kernel (nothing reaches sk_lookup), or refused
        // by sk_lookup after reassembly: never the MTA's SYN-ACK.
        let discarded =
            answer == Answer::Nothing && moved == counts(&[(Counter::Unparsed, frames)]);
        let refused = answer == Answer::Reset
            && moved == counts(&[(Counter::Unparsed, frames), (Counter::SkRefused, 1)]);
        assert!(
            discarded || refused,
            "{mode}: a tiny-fragment SYN from {src} got {answer:?}, counters moved {moved:?}"
        );
        eprintln!(
            "{mode}: tiny first fragment {}",
            if discarded {
                "discarded by the kernel"
            } else {
                "reassembled and refused by sk_lookup"
            }
        );
    }
}
