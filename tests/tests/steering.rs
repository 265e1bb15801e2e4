//! sk_lookup in the kernel: the backstop for SYNs XDP cannot parse, the
//! enforcer where XDP is not attached, and fail-open when defer mode has no
//! responder (invariant 9). Real frames, real TCP, two namespaces.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mx6gate_common::proto::*;
use mx6gate_tests::{
    connect_from,
    gate::{lookups_fit, GateUnderTest},
    packets::*,
    require_root, Listener, Netns, Topology, PARTNER_NET, PARTNER_SRC, STRANGER_SRC,
};

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

/// Send `frame` out of `ifname` in `ns` with AF_PACKET and wait for a TCP
/// segment from port 25 back to `sport`; its flags.
fn send_and_wait_tcp(
    ns: &Netns,
    ifname: &str,
    frame: Vec<u8>,
    sport: u16,
    timeout: Duration,
) -> Option<u8> {
    let ifname = ifname.to_string();
    ns.enter(move || unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let c = std::ffi::CString::new(ifname).unwrap();
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
        assert_eq!(
            libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sll) as u32
            ),
            0
        );
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
        assert_eq!(
            libc::send(fd, frame.as_ptr() as *const libc::c_void, frame.len(), 0),
            frame.len() as isize
        );
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        let mut got = None;
        while Instant::now() < deadline {
            let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            if let mx6gate_common::classify::L4::Tcp { tcp, .. } =
                mx6gate_common::classify::locate_tcp(p)
            {
                let from = u16::from_be_bytes([p[tcp], p[tcp + 1]]);
                let to = u16::from_be_bytes([p[tcp + 2], p[tcp + 3]]);
                if from == 25 && to == sport {
                    got = Some(p[tcp + 13]);
                    break;
                }
            }
        }
        libc::close(fd);
        got
    })
}

/// A SYN from STRANGER_SRC to the gateway with more extension headers than
/// XDP walks: XDP must pass it (counted unparsed), the kernel parses it,
/// and sk_lookup decides.
fn unparseable_syn(topo: &Topology, sport: u16) -> Vec<u8> {
    let exts: Vec<Ext> = (0..=MAX_EXT_HEADERS).map(|_| Ext::DestOpts(0)).collect();
    let src = STRANGER_SRC.octets();
    let dst = mx6gate_tests::GW_V6.octets();
    let tcp = Tcp {
        sport,
        ..Tcp::syn(25)
    };
    let mut f = ipv6_frame(&[], src, dst, &exts, IPPROTO_TCP, &tcp.bytes(src, dst));
    f[0..6].copy_from_slice(&mac_of(&topo.gw, &topo.gw_if));
    f[6..12].copy_from_slice(&mac_of(&topo.sender, &topo.sender_if));
    f
}

#[test]
fn sk_lookup_backstops_syns_xdp_cannot_parse() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", "").unwrap();
    gate.start().unwrap();
    // Warm neighbour caches both ways so the first frame is not lost to ND.
    mx6gate_tests::ping(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        IpAddr::V6(mx6gate_tests::GW_V6),
        Duration::from_secs(2),
    )
    .unwrap();

    let before = gate.counters();
    let flags = send_and_wait_tcp(
        &topo.sender,
        &topo.sender_if,
        unparseable_syn(&topo, 40001),
        40001,
        Duration::from_secs(2),
    );
    assert_eq!(
        flags,
        Some(TCP_SYN | TCP_ACK),
        "monitor: the MTA answers the SYN"
    );
    let mid = gate.counters();
    assert_eq!(
        mid["xdp.unparsed"],
        before["xdp.unparsed"] + 1,
        "XDP passed it as unparsed"
    );
    assert_eq!(mid["sk.monitored"], before["sk.monitored"] + 1);

    gate.ok(&["mode", "drop"]).unwrap();
    let flags = send_and_wait_tcp(
        &topo.sender,
        &topo.sender_if,
        unparseable_syn(&topo, 40002),
        40002,
        Duration::from_secs(2),
    );
    assert_eq!(
        flags.map(|f| f & TCP_RST),
        Some(TCP_RST),
        "drop: sk_lookup refuses what XDP let by; got {flags:?}"
    );
    let after = gate.counters();
    assert_eq!(after["xdp.unparsed"], mid["xdp.unparsed"] + 1);
    assert_eq!(after["sk.refused"], mid["sk.refused"] + 1);
}

#[test]
fn sk_lookup_enforces_where_xdp_is_not_attached() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    // XDP goes on a spare veth pair inside the gateway; the link to the
    // sender carries no XDP at all.
    topo.gw
        .run(&[
            "ip",
            "link",
            "add",
            "mx6spare0",
            "type",
            "veth",
            "peer",
            "name",
            "mx6spare1",
        ])
        .unwrap();
    topo.gw
        .run(&["ip", "link", "set", "mx6spare0", "up"])
        .unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, "mx6spare0", "drop", "").unwrap();
    gate.ok(&["partner", "add", "p", PARTNER_NET]).unwrap();
    gate.start().unwrap();
    let gw25 = SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25);
    let t = Instant::now();
    let r = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        gw25,
        Duration::from_secs(2),
    );
    assert!(
        r.is_refused(),
        "stranger must be refused by sk_lookup, got {}",
        r.kind()
    );
    assert!(t.elapsed() < Duration::from_millis(500), "refused at once");
    let r = connect_from(
        &topo.sender,
        IpAddr::V6(PARTNER_SRC),
        gw25,
        Duration::from_secs(2),
    );
    assert!(
        r.is_connected(),
        "partner reaches the MTA, got {}",
        r.kind()
    );
    let c = gate.counters();
    assert_eq!(c["sk.refused"], 1);
    assert_eq!(c["sk.allowed"], 1);
    assert_eq!(c["xdp.dropped"], 0, "XDP never saw these");
    assert!(mta.wait_for_accepted(1, Duration::from_secs(2)));
}

#[test]
fn defer_without_responder_fails_open() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "defer", "").unwrap();
    gate.start().unwrap();
    // The daemon (which owns the responder) dies; the pinned gate stays.
    gate.kill().unwrap();
    let gw25 = SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25);
    let s = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        gw25,
        Duration::from_secs(2),
    )
    .expect_connected("stranger in defer mode with the responder down");
    let banner = mx6gate_tests::read_banner(&s, Duration::from_secs(2)).unwrap();
    assert!(
        banner.starts_with("220"),
        "fail open: the MTA's banner, got {banner:?}"
    );
    let c = gate.counters();
    assert_eq!(c["sk.responder_down_passed"], 1, "{c:?}");
    assert!(gate
        .ok(&["status"])
        .unwrap()
        .contains("daemon:      not running"));
}

#[test]
fn defer_mode_hands_strangers_the_banner() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        "[responder]\nlisten = \"[::1]:2526\"\nhostname = \"mx.example.test\"\n",
    )
    .unwrap();
    gate.ok(&["partner", "add", "p", PARTNER_NET]).unwrap();
    gate.start().unwrap();
    let gw25 = SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25);
    let banner = |src| {
        let s = connect_from(&topo.sender, IpAddr::V6(src), gw25, Duration::from_secs(2))
            .expect_connected("connect");
        // The responder sees the real peer and the original destination.
        mx6gate_tests::read_banner(&s, Duration::from_secs(2)).unwrap()
    };
    let b = banner(STRANGER_SRC);
    assert!(
        b.starts_with("421 4.7.0 mx.example.test") && b.contains(&STRANGER_SRC.to_string()),
        "stranger gets the 421 with its address: {b:?}"
    );
    assert!(
        banner(PARTNER_SRC).starts_with("220"),
        "partner reaches the MTA"
    );
    let v4 = connect_from(
        &topo.sender,
        IpAddr::V4(mx6gate_tests::SENDER_V4),
        SocketAddr::new(IpAddr::V4(mx6gate_tests::GW_V4), 25),
        Duration::from_secs(2),
    )
    .expect_connected("IPv4");
    assert!(
        mx6gate_tests::read_banner(&v4, Duration::from_secs(2))
            .unwrap()
            .starts_with("220"),
        "IPv4 untouched"
    );
    let c = gate.counters();
    assert_eq!(c["xdp.deferred"], 1, "{c:?}");
    assert!(lookups_fit(c["sk.deferred"], 1), "{c:?}");
    assert!(lookups_fit(c["sk.allowed"], 1), "{c:?}");
    assert!(gate.ok(&["status"]).unwrap().contains("responder:   up"));
}

/// Connections from the gateway itself are the operator's, never gated:
/// those whose source is their destination (a local client's default,
/// ::1 included) on every kernel, and, where the kernel's sk_lookup context
/// has the interface (5.17), those that come over lo to an address there.
/// Both ways run here: the second start asks the daemon for the older
/// kernels' way (MX6GATE_DISABLE_FEATURES), which on a newer kernel swaps
/// the other program variant in under the same link.
#[test]
fn local_connections_pass_with_either_lo_test() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    // A service address on lo (as an anycast MX address would be).
    let on_lo: std::net::Ipv6Addr = "2001:db8:100::25".parse().unwrap();
    mx6gate_tests::add_addr(&topo.gw, "lo", &format!("{on_lo}/128")).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        "[responder]\nlisten = \"[::1]:2527\"\nhostname = \"mx.example.test\"\n",
    )
    .unwrap();
    let banner = |ns: &Netns, src: IpAddr, dst: SocketAddr| {
        let s = connect_from(ns, src, dst, Duration::from_secs(10))
            .expect_connected(&format!("{src} -> {dst}"));
        mx6gate_tests::read_banner(&s, Duration::from_secs(10)).unwrap()
    };
    let loopback = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let own = IpAddr::V6(mx6gate_tests::GW_V6);
    let port25 = |a: IpAddr| SocketAddr::new(a, 25);
    // A stranger of its own per round (another /64 of STRANGER_NET): defer
    // mode resets a source's repeats after the banner (explain-then-reset).
    let strangers: [std::net::Ipv6Addr; 2] = [STRANGER_SRC, "2001:db8:2:1::25".parse().unwrap()];
    mx6gate_tests::add_addr(
        &topo.sender,
        &topo.sender_if,
        &format!("{}/128", strangers[1]),
    )
    .unwrap();
    let rounds = [
        &[][..],
        &[("MX6GATE_DISABLE_FEATURES", "sk_lookup_ifindex")][..],
    ];
    for (env, stranger) in rounds.into_iter().zip(strangers) {
        gate.start_with_env(env).unwrap();
        let log = gate.log();
        let by_ifindex = log.contains("sk_lookup_ifindex=true");
        assert!(
            by_ifindex || log.contains("sk_lookup_ifindex=false"),
            "the daemon says which lo test it loaded: {log}"
        );
        if !env.is_empty() {
            assert!(!by_ifindex, "the older way was asked for: {log}");
        }
        let how = if by_ifindex {
            "with ingress_ifindex"
        } else {
            "by address only"
        };
        for (src, dst) in [(loopback, port25(loopback)), (own, port25(own))] {
            let b = banner(&topo.gw, src, dst);
            assert!(
                b.starts_with("220"),
                "{how}: local {src} -> {dst} reaches the MTA: {b:?}"
            );
        }
        let b = banner(&topo.sender, IpAddr::V6(stranger), port25(own));
        assert!(
            b.starts_with("421"),
            "{how}: a stranger is still deferred: {b:?}"
        );
        // What only the interface tells: from another of the host's
        // addresses to one on lo. Gated, it meets the banner or, once
        // explained (an earlier round), the reset.
        let dst = port25(IpAddr::V6(on_lo));
        let got = match connect_from(&topo.gw, own, dst, Duration::from_secs(10)) {
            mx6gate_tests::ConnectOutcome::Refused => "refused".to_string(),
            o => {
                let s = o.expect_connected(&format!("{own} -> {dst}"));
                mx6gate_tests::read_banner(&s, Duration::from_secs(10)).unwrap()
            }
        };
        let passed = got.starts_with("220");
        assert_eq!(passed, by_ifindex, "{how}: local {own} -> {on_lo}: {got:?}");
        gate.stop().unwrap();
    }
}

#[test]
fn defer_mode_responder_down_can_refuse() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        "[responder]\nlisten = \"[::1]:2527\"\ndown_policy = \"refuse\"\n",
    )
    .unwrap();
    gate.start().unwrap();
    gate.kill().unwrap();
    let gw25 = SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25);
    let r = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        gw25,
        Duration::from_secs(2),
    );
    assert!(
        r.is_refused(),
        "down_policy = refuse: connection refused, got {}",
        r.kind()
    );
    assert_eq!(mta.accepted(), 0);
    let c = gate.counters();
    assert_eq!(c["sk.responder_down_refused"], 1, "{c:?}");
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        status.contains("responder:   DOWN") && status.contains("refused"),
        "{status}"
    );
}

/// Invariant 3 with the responder in play: a connection already at the MTA
/// stays there through the switch to defer and a controller restart (which
/// restarts the responder and re-registers its socket).
#[test]
fn established_mta_connection_survives_defer_and_restart() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "monitor",
        "[responder]\nlisten = \"[::1]:2529\"\n",
    )
    .unwrap();
    gate.start().unwrap();
    let gw25 = SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25);
    let s = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        gw25,
        Duration::from_secs(2),
    )
    .expect_connected("monitor");
    assert!(mx6gate_tests::read_banner(&s, Duration::from_secs(2))
        .unwrap()
        .starts_with("220"));
    let alive = |what: &str| {
        let r = mx6gate_tests::tcp::command(&s, "NOOP", Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert!(
            r.starts_with("502"),
            "{what}: still the MTA's session: {r:?}"
        );
    };
    gate.ok(&["mode", "defer"]).unwrap();
    alive("after mode defer");
    gate.stop().unwrap();
    gate.start().unwrap();
    alive("after a restart");
    // New connections from the stranger now get the banner.
    let n = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        gw25,
        Duration::from_secs(2),
    )
    .expect_connected("defer");
    assert!(mx6gate_tests::read_banner(&n, Duration::from_secs(2))
        .unwrap()
        .starts_with("421"));
    alive("after a deferral");
}
