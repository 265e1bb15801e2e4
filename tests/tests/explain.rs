//! Defer mode's "explain once, then reset" in the kernel, with real TCP:
//! the first connection from a source gets the responder's banner, the next
//! ones within the window a connection refused (XDP's RST, or sk_lookup's
//! refusal where XDP does not see the SYN); the explained connection's own
//! retransmitted SYN still reaches the responder; a source is recorded only
//! when the banner was really given; `repeat = "defer"` gives the banner
//! every time; a gate pinned before the record existed is upgraded in place.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use mx6gate_tests::{
    add_addr, connect_from,
    gate::{lookups_fit, GateUnderTest},
    read_banner, require_root, xdp_pass, Listener, Netns, Topology, GW_HOSTNAME, PARTNER_NET,
    PARTNER_SRC, SENDER_V6, STRANGER_SRC,
};

const REPLY: Duration = Duration::from_secs(5);
const CONNECT: Duration = Duration::from_secs(5);

/// Another address in the stranger's /64 (added to the sender by the test).
const STRANGER_SAME_64: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x26);

fn responder(port: u16, extra: &str) -> String {
    format!("[responder]\nlisten = \"[::1]:{port}\"\nhostname = \"{GW_HOSTNAME}\"\n{extra}")
}

fn banner_from(topo: &Topology, src: Ipv6Addr, what: &str) -> String {
    let s = connect_from(&topo.sender, IpAddr::V6(src), Topology::gw_v6(25), CONNECT)
        .expect_connected(what);
    read_banner(&s, REPLY).unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

/// A connection refused, and at once (a RST, not a timeout).
fn refused_from(topo: &Topology, src: Ipv6Addr, what: &str) {
    let t = Instant::now();
    let r = connect_from(&topo.sender, IpAddr::V6(src), Topology::gw_v6(25), CONNECT);
    assert!(
        r.is_refused(),
        "{what}: connection refused, got {}",
        r.kind()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{what}: refused at once, took {:?}",
        t.elapsed()
    );
}

/// GET /metrics from inside the gateway: `name{labels}` → value.
fn scrape(ns: &Netns) -> BTreeMap<String, f64> {
    mx6gate_tests::scrape::scrape_at(ns, "127.0.0.1:9421")
}

#[test]
fn first_connection_gets_the_banner_then_the_reset() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    // XDP_TX frames reach the sender's veth only with NAPI there.
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    add_addr(
        &topo.sender,
        &topo.sender_if,
        &format!("{STRANGER_SAME_64}/128"),
    )
    .unwrap();
    let mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate =
        GateUnderTest::new(&topo.gw, &topo.gw_if, "defer", &responder(2531, "")).unwrap();
    gate.ok(&["partner", "add", "p", PARTNER_NET]).unwrap();
    gate.start().unwrap();

    let check = gate.ok(&["check", &STRANGER_SRC.to_string()]).unwrap();
    assert!(
        check.contains("2001:db8:2::/64 is not explained")
            && check.contains("within 24h get a TCP RST"),
        "{check}"
    );
    let b = banner_from(&topo, STRANGER_SRC, "first connection");
    assert!(b.starts_with("421 4.7.0 mx.example.test"), "{b:?}");
    refused_from(&topo, STRANGER_SRC, "second connection, same source");
    refused_from(&topo, STRANGER_SAME_64, "another address of the /64");
    // Another /64 is explained on its own; partners are never touched.
    assert!(banner_from(&topo, SENDER_V6, "another /64").starts_with("421 "));
    refused_from(&topo, SENDER_V6, "that /64's second connection");
    assert!(banner_from(&topo, PARTNER_SRC, "partner").starts_with("220"));
    assert!(banner_from(&topo, PARTNER_SRC, "partner again").starts_with("220"));
    assert_eq!(mta.accepted(), 2, "only the partner reached the MTA");

    let c = gate.counters();
    let want = [
        ("xdp.deferred", 2),
        ("xdp.escalated", 3),
        ("xdp.reset", 0),
        ("xdp.partner_allowed", 2),
        ("sk.escalated", 0),
    ];
    for (k, n) in want {
        assert_eq!(c[k], n, "{k}: {c:?}");
    }
    assert!(lookups_fit(c["sk.deferred"], 2), "sk.deferred: {c:?}");
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        status.contains("explained sources: 2 within the window now (2 in the map, capacity 65536); recorded since load: 2"),
        "{status}"
    );
    let check = gate.ok(&["check", &STRANGER_SAME_64.to_string()]).unwrap();
    assert!(
        check.contains("2001:db8:2::/64 was explained")
            && check.contains("new connections get a TCP RST"),
        "{check}"
    );

    let m = scrape(&topo.gw);
    for (k, v) in [
        (
            "mx6gate_decisions_total{program=\"xdp\",action=\"escalated\"}",
            3.0,
        ),
        (
            "mx6gate_decisions_total{program=\"sk_lookup\",action=\"deferred\"}",
            2.0,
        ),
        (
            "mx6gate_decisions_total{program=\"sk_lookup\",action=\"escalated\"}",
            0.0,
        ),
        ("mx6gate_explained_sources_total", 2.0),
        ("mx6gate_explained_sources_in_window", 2.0),
        ("mx6gate_map_entries{map=\"EXPLAINED\"}", 2.0),
        ("mx6gate_map_capacity{map=\"EXPLAINED\"}", 65536.0),
    ] {
        assert_eq!(m.get(k), Some(&v), "{k} in {m:#?}");
    }

    // `top` names the escalated sources (the daemon reads the reports).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let top = gate.ok(&["top", "--by", "64"]).unwrap();
        let row = |p: &str| {
            top.lines()
                .find(|l| l.starts_with(p))
                .map(|l| l.to_string())
                .unwrap_or_default()
        };
        if row("2001:db8:2::/64").contains("defer,escalated")
            && row("2001:db8:100::/64").contains("defer,escalated")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed the escalations:\n{top}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The record is the kernel's: a restarted daemon keeps resetting.
    gate.stop().unwrap();
    refused_from(&topo, STRANGER_SRC, "with the daemon stopped");
    gate.start().unwrap();
    refused_from(&topo, STRANGER_SRC, "after a restart");
}

/// The explained connection's SYN-ACK is lost: its retransmitted SYN (same
/// ports, the record already written) must reach the responder, not be
/// reset as a repeat, or the banner is lost under packet loss.
#[test]
fn the_explained_connections_retransmitted_syn_is_not_reset() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate =
        GateUnderTest::new(&topo.gw, &topo.gw_if, "defer", &responder(2532, "")).unwrap();
    gate.start().unwrap();
    // Drop the first two SYN-ACKs the gateway sends to each client port:
    // the answer to the SYN and the one its own retransmit timer sends
    // after 1 s, so only the answer to the client's retransmitted SYN can
    // complete the handshake.
    let nft = r#"
table inet mx6t_loss {
  set first { type ipv6_addr . inet_service; }
  set second { type ipv6_addr . inet_service; }
  chain out {
    type filter hook output priority 0;
    tcp sport 25 tcp flags & (syn | ack) == syn | ack ip6 daddr . tcp dport != @first add @first { ip6 daddr . tcp dport } counter drop
    tcp sport 25 tcp flags & (syn | ack) == syn | ack ip6 daddr . tcp dport != @second add @second { ip6 daddr . tcp dport } counter drop
  }
}
"#;
    let rules = std::env::temp_dir().join(format!("mx6t-loss-{}.nft", std::process::id()));
    std::fs::write(&rules, nft).unwrap();
    topo.gw
        .run(&["nft", "-f", rules.to_str().unwrap()])
        .unwrap();
    std::fs::remove_file(&rules).ok();

    let t = Instant::now();
    let b = banner_from(&topo, STRANGER_SRC, "connection whose SYN-ACK is lost");
    let took = t.elapsed();
    assert!(
        b.starts_with("421 "),
        "the banner arrives all the same: {b:?}"
    );
    let dropped = topo
        .gw
        .run_stdout(&["nft", "list", "chain", "inet", "mx6t_loss", "out"])
        .unwrap();
    assert_eq!(
        dropped.matches("counter packets 1 ").count(),
        2,
        "two SYN-ACKs were dropped:\n{dropped}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "the client had to retransmit its SYN (took {took:?})"
    );
    let c = gate.counters();
    assert_eq!(
        (c["xdp.deferred"], c["xdp.escalated"]),
        (2, 0),
        "SYN and its retransmit both passed on: {c:?}"
    );
    // A new connection is a repeat all the same.
    refused_from(&topo, STRANGER_SRC, "a new connection");
}

/// Where XDP does not see the SYN (here: not attached on the sender's
/// link), sk_lookup refuses the repeat itself.
#[test]
fn sk_lookup_refuses_repeats_xdp_does_not_see() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
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
    let mut gate =
        GateUnderTest::new(&topo.gw, "mx6spare0", "defer", &responder(2533, "")).unwrap();
    gate.start().unwrap();
    assert!(banner_from(&topo, STRANGER_SRC, "first").starts_with("421 "));
    refused_from(&topo, STRANGER_SRC, "second");
    let c = gate.counters();
    assert_eq!((c["sk.escalated"], c["xdp.escalated"]), (1, 0), "{c:?}");
    assert!(lookups_fit(c["sk.deferred"], 1), "{c:?}");
}

/// `repeat = "defer"`: the banner every time (the source is still
/// recorded, so `check` can say so).
#[test]
fn repeat_defer_gives_the_banner_every_time() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        &format!("{}[defer]\nrepeat = \"defer\"\n", responder(2534, "")),
    )
    .unwrap();
    gate.start().unwrap();
    for i in 0..3 {
        let b = banner_from(&topo, STRANGER_SRC, &format!("connection {i}"));
        assert!(b.starts_with("421 "), "{i}: {b:?}");
    }
    let c = gate.counters();
    assert_eq!((c["sk.escalated"], c["xdp.escalated"]), (0, 0), "{c:?}");
    assert!(lookups_fit(c["sk.deferred"], 3), "{c:?}");
    let check = gate.ok(&["check", &STRANGER_SRC.to_string()]).unwrap();
    assert!(
        check.contains("was explained") && check.contains("get the banner again"),
        "{check}"
    );
    // Switching to escalation (a reload) applies to the running record.
    std::fs::write(
        &gate.config,
        std::fs::read_to_string(&gate.config)
            .unwrap()
            .replace("repeat = \"defer\"", "repeat = \"reset\""),
    )
    .unwrap();
    gate.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gate.log().contains("reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", gate.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    refused_from(&topo, STRANGER_SRC, "after repeat = reset");

    // A bad [defer] value is refused whole, naming the key; the running
    // settings stay.
    let good = std::fs::read_to_string(&gate.config).unwrap();
    std::fs::write(
        &gate.config,
        good.replace(
            "repeat = \"reset\"",
            "repeat = \"reset\"\nexplain_window = \"0h\"",
        ),
    )
    .unwrap();
    gate.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gate.log().contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failed reload:\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gate.log().contains("defer.explain_window: ")
            && gate.log().contains("0h")
            && gate.log().contains("is shorter than 1h"),
        "{}",
        gate.log()
    );
    refused_from(&topo, STRANGER_SRC, "after the refused reload");
    let out = gate.cli(&["status"]).unwrap();
    assert!(!out.status.success(), "every verb refuses the bad config");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("defer.explain_window"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No banner, no record: with the responder down (down_policy = pass) the
/// connection reaches the MTA, and once the responder is back the source
/// gets the banner first, not a reset it was never told about.
#[test]
fn a_source_is_recorded_only_when_it_got_the_banner() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate =
        GateUnderTest::new(&topo.gw, &topo.gw_if, "defer", &responder(2535, "")).unwrap();
    gate.start().unwrap();
    gate.kill().unwrap();
    assert!(banner_from(&topo, STRANGER_SRC, "responder down").starts_with("220"));
    assert!(banner_from(&topo, STRANGER_SRC, "responder down, again").starts_with("220"));
    gate.start().unwrap();
    assert!(banner_from(&topo, STRANGER_SRC, "responder back").starts_with("421 "));
    refused_from(&topo, STRANGER_SRC, "then the reset");
    let c = gate.counters();
    assert_eq!(c["sk.responder_down_passed"], 2, "{c:?}");
    assert_eq!(c["xdp.escalated"], 1, "{c:?}");
    assert!(lookups_fit(c["sk.deferred"], 1), "{c:?}");
}

/// A gate pinned by the release before explain-then-reset has no EXPLAINED,
/// DEFER or COUNTERS_EXT: the CLI works against it as it is, and the next
/// daemon start creates the maps and escalates, without detaching.
#[test]
fn a_gate_pinned_before_explanations_is_upgraded_in_place() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate =
        GateUnderTest::new(&topo.gw, &topo.gw_if, "defer", &responder(2536, "")).unwrap();
    gate.start().unwrap();
    gate.stop().unwrap();
    // What the previous release pinned: everything but the new maps.
    let maps = gate.pin_path.join("maps");
    for m in ["EXPLAINED", "DEFER", "COUNTERS_EXT"] {
        std::fs::remove_file(maps.join(m)).unwrap();
    }
    let link = std::fs::metadata(gate.pin_path.join(format!("links/xdp@{}", topo.gw_if))).unwrap();
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        status.contains("explained sources: not tracked: the gate was pinned by an older mx6gate"),
        "{status}"
    );
    gate.ok(&["mode", "defer"]).unwrap();
    let check = gate.ok(&["check", &STRANGER_SRC.to_string()]).unwrap();
    assert!(check.contains("mode defer"), "{check}");

    gate.start().unwrap();
    for m in ["EXPLAINED", "DEFER", "COUNTERS_EXT"] {
        assert!(maps.join(m).exists(), "{m} created by the upgrade");
    }
    assert!(
        gate.log()
            .contains("the pinned gate predates this map: created it (upgrade)"),
        "{}",
        gate.log()
    );
    let same = std::fs::metadata(gate.pin_path.join(format!("links/xdp@{}", topo.gw_if))).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        link.ino(),
        same.ino(),
        "the XDP link was adopted, not re-made"
    );
    assert!(banner_from(&topo, STRANGER_SRC, "after the upgrade").starts_with("421 "));
    refused_from(&topo, STRANGER_SRC, "then the reset");
}
