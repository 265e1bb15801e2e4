//! The Prometheus endpoint of the real daemon: scraped over plain HTTP
//! inside the gateway namespace (on its own loopback) while real
//! connections from partner and stranger sources flow, checking that the
//! right series move; plus reloads (SIGHUP) good and bad, moving the
//! endpoint on reload, and a busy address failing the start.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use mx6gate_tests::{
    connect_from,
    gate::GateUnderTest,
    read_banner, require_root,
    scrape::{http, parse, scrape_at, Samples},
    tcp::command,
    xdp_pass, ConnectOutcome, Listener, Topology, PARTNER_NET, PARTNER_SRC, STRANGER_SRC,
};

const METRICS: &str = "127.0.0.1:9421";
const CONNECTS: Duration = Duration::from_secs(2);
const REPLY: Duration = Duration::from_secs(2);

/// Converse mode (so a session stays open until QUIT and shows as
/// active), one connection per source /64 (so a second one is refused
/// over the cap), long timeouts (so nothing closes on its own mid-test).
const CONFIG: &str = r#"
[responder]
code = 450
greeting = "converse"
max_per_source = 1
idle_timeout_secs = 120
session_timeout_secs = 300

# This suite counts what the responder does with repeats (its per-source
# cap); explain-then-reset would reset them first (tests/tests/explain.rs).
[defer]
repeat = "defer"

[metrics]
listen = "127.0.0.1:9421"
"#;

fn scrape(topo: &Topology) -> Samples {
    scrape_at(&topo.gw, METRICS)
}

fn get(m: &Samples, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

fn decision(program: &str, action: &str) -> String {
    format!("mx6gate_decisions_total{{program=\"{program}\",action=\"{action}\"}}")
}

/// Each `(series, by)`: the series moved by exactly `by` from `a` to `b`.
fn assert_moved(a: &Samples, b: &Samples, expect: &[(&str, f64)]) {
    let moved: BTreeMap<&str, f64> = expect
        .iter()
        .map(|(k, _)| (*k, get(b, k) - get(a, k)))
        .collect();
    let want: BTreeMap<&str, f64> = expect.iter().copied().collect();
    assert_eq!(moved, want, "series moved by (left) vs expected (right)");
}

/// Scrape until `ok` holds (bounded: 50 tries, 100 ms apart).
fn scrape_until(topo: &Topology, what: &str, ok: impl Fn(&Samples) -> bool) -> Samples {
    for _ in 0..50 {
        let m = scrape(topo);
        if ok(&m) {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("metrics never showed {what}: {:#?}", scrape(topo));
}

fn connect(topo: &Topology, src: std::net::Ipv6Addr, timeout: Duration) -> ConnectOutcome {
    connect_from(&topo.sender, IpAddr::V6(src), Topology::gw_v6(25), timeout)
}

#[test]
fn counters_move_with_real_traffic() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    // XDP_TX frames (reset mode's RST) land only where the peer runs NAPI.
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", CONFIG).unwrap();
    gate.ok(&["partner", "add", "example-isp", PARTNER_NET])
        .unwrap();
    gate.start().unwrap();

    // The gate as loaded.
    let m0 = scrape(&topo);
    assert_eq!(get(&m0, "mx6gate_gate_loaded"), 1.0);
    assert_eq!(get(&m0, "mx6gate_sk_lookup_attached"), 1.0);
    let attached: Vec<_> = m0
        .iter()
        .filter(|(k, _)| k.starts_with("mx6gate_xdp_attached{"))
        .collect();
    assert_eq!(attached.len(), 1, "{attached:?}");
    let (k, v) = attached[0];
    assert_eq!(*v, 1.0, "{k}");
    assert!(
        k.contains(&format!("interface=\"{}\"", topo.gw_if))
            && (k.contains("xdp_mode=\"native\"") || k.contains("xdp_mode=\"generic\"")),
        "{k}"
    );
    assert_eq!(get(&m0, "mx6gate_mode{mode=\"monitor\"}"), 1.0);
    assert_eq!(get(&m0, "mx6gate_mode{mode=\"defer\"}"), 0.0);
    assert_eq!(get(&m0, "mx6gate_responder_up"), 1.0);
    assert_eq!(get(&m0, "mx6gate_allowlist_prefixes"), 1.0);
    // One prefix in its /32: it sits inline in the SLASH32 entry.
    assert_eq!(get(&m0, "mx6gate_map_entries{map=\"SLASH32\"}"), 1.0);
    assert_eq!(get(&m0, "mx6gate_map_entries{map=\"LONG_PREFIXES\"}"), 0.0);
    assert_eq!(get(&m0, "mx6gate_map_entries{map=\"PARTNER_HITS\"}"), 1.0);
    assert!(get(&m0, "mx6gate_map_fill_ratio{map=\"SLASH32\"}") > 0.0);
    assert_eq!(
        get(&m0, "mx6gate_responder_down_policy{policy=\"pass\"}"),
        1.0
    );
    let hits = "mx6gate_partner_syns_total{partner=\"example-isp\"}".to_string();
    assert_eq!(get(&m0, &hits), 0.0);

    // A partner added while the daemon runs shows at the next scrape.
    gate.ok(&[
        "partner",
        "add",
        "second",
        "2001:db8:3::/48",
        "2001:db8:4::/48",
    ])
    .unwrap();
    let m = scrape(&topo);
    assert_eq!(get(&m, "mx6gate_allowlist_prefixes"), 3.0);
    assert_eq!(get(&m, "mx6gate_map_entries{map=\"PARTNER_HITS\"}"), 2.0);
    assert_eq!(
        get(&m, "mx6gate_partner_syns_total{partner=\"second\"}"),
        0.0
    );

    // Monitor: partners and strangers all reach the MTA; strangers count
    // as "would act".
    for _ in 0..2 {
        connect(&topo, PARTNER_SRC, CONNECTS).expect_connected("partner");
    }
    for _ in 0..3 {
        connect(&topo, STRANGER_SRC, CONNECTS).expect_connected("stranger in monitor mode");
    }
    let m1 = scrape(&topo);
    assert_moved(
        &m0,
        &m1,
        &[
            (&hits, 2.0),
            (&decision("xdp", "partner_allowed"), 2.0),
            (&decision("xdp", "monitored"), 3.0),
            (&decision("xdp", "deferred"), 0.0),
        ],
    );
    // sk_lookup counts lookups, not SYNs (it sees no TCP flags): a stray
    // segment of a connection already closed is looked up again. On a
    // slow machine (the kernel matrix under emulation) the 2 partner
    // connections made 3. One per connection at most, never fewer.
    for (action, conns) in [("allowed", 2.0), ("monitored", 3.0)] {
        let k = decision("sk_lookup", action);
        let moved = get(&m1, &k) - get(&m0, &k);
        assert!(
            (conns..=2.0 * conns).contains(&moved),
            "{k} moved by {moved} for {conns} connections"
        );
    }
    assert!(
        get(&m1, &decision("xdp", "passed_other")) > get(&m0, &decision("xdp", "passed_other"))
    );

    // Defer: a stranger gets the responder's 450 and stays connected.
    gate.ok(&["mode", "defer"]).unwrap();
    let m2 = scrape(&topo);
    assert_eq!(get(&m2, "mx6gate_mode{mode=\"defer\"}"), 1.0);
    assert_eq!(get(&m2, "mx6gate_mode{mode=\"monitor\"}"), 0.0);
    let held = connect(&topo, STRANGER_SRC, CONNECTS).expect_connected("stranger in defer mode");
    let banner = read_banner(&held, REPLY).unwrap();
    assert!(banner.starts_with("450 "), "{banner}");
    let m3 = scrape(&topo);
    assert_eq!(get(&m3, "mx6gate_responder_active_connections"), 1.0);
    let (xdp_deferred, sk_deferred) = (
        decision("xdp", "deferred"),
        decision("sk_lookup", "deferred"),
    );
    let responder =
        |what: &str, by: f64| -> (String, f64) { (format!("mx6gate_responder_{what}"), by) };
    let moved = |a: &Samples, b: &Samples, deferred: f64, greeted: f64, refused: f64| {
        let r = [
            responder("connections_total", deferred),
            responder("deferred_total", greeted),
            responder("refused_total{cap=\"max_per_source\"}", refused),
        ];
        let mut expect: Vec<(&str, f64)> = r.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        expect.push((&xdp_deferred, deferred));
        expect.push((&sk_deferred, deferred));
        assert_moved(a, b, &expect);
    };
    moved(&m2, &m3, 1.0, 1.0, 0.0);

    // A second connection from the same /64 is over max_per_source.
    let second = connect(&topo, STRANGER_SRC, CONNECTS).expect_connected("second stranger");
    let refusal = read_banner(&second, REPLY).unwrap();
    assert!(refusal.starts_with("421 "), "{refusal}");
    let m4 = scrape(&topo);
    moved(&m3, &m4, 1.0, 0.0, 1.0);
    assert_eq!(
        get(
            &m4,
            "mx6gate_responder_refused_total{cap=\"max_connections\"}"
        ),
        0.0
    );
    // A partner still goes to the MTA and is counted as such.
    connect(&topo, PARTNER_SRC, CONNECTS).expect_connected("partner in defer mode");
    let m5 = scrape(&topo);
    assert_eq!(get(&m5, &hits) - get(&m4, &hits), 1.0);

    // QUIT ends the held session: active goes back to 0.
    let bye = command(&held, "QUIT", REPLY).unwrap();
    assert!(bye.starts_with("221"), "{bye}");
    drop(held);
    scrape_until(&topo, "no active responder connection", |m| {
        get(m, "mx6gate_responder_active_connections") == 0.0
    });

    // Reset and drop: XDP's own counters.
    gate.ok(&["mode", "reset"]).unwrap();
    let before = scrape(&topo);
    let o = connect(&topo, STRANGER_SRC, CONNECTS);
    assert!(o.is_refused(), "reset mode: got {o}");
    gate.ok(&["mode", "drop"]).unwrap();
    let o = connect(&topo, STRANGER_SRC, Duration::from_millis(500));
    assert!(o.is_timed_out(), "drop mode: got {o}");
    let after = scrape(&topo);
    assert_eq!(get(&after, "mx6gate_mode{mode=\"drop\"}"), 1.0);
    assert_eq!(
        get(&after, &decision("xdp", "reset")) - get(&before, &decision("xdp", "reset")),
        1.0
    );
    assert!(
        get(&after, &decision("xdp", "dropped")) - get(&before, &decision("xdp", "dropped")) >= 1.0
    );

    // The responder dies with the daemon; the endpoint with it.
    gate.stop().unwrap();
    assert!(
        http(&topo.gw, METRICS, "GET /metrics HTTP/1.1").is_err(),
        "the endpoint must go away with the daemon"
    );
}

#[test]
fn reloads_are_counted_and_can_move_the_endpoint() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", CONFIG).unwrap();
    gate.start().unwrap();
    let reloads = |r: &str| format!("mx6gate_config_reloads_total{{result=\"{r}\"}}");
    let m = scrape(&topo);
    assert_eq!(get(&m, &reloads("success")), 0.0);
    assert_eq!(get(&m, &reloads("failure")), 0.0);
    assert_eq!(get(&m, "mx6gate_config_last_reload_successful"), 1.0);

    // Only GET/HEAD on /metrics.
    let (status, _) = http(&topo.gw, METRICS, "GET / HTTP/1.1").unwrap();
    assert_eq!(status, 404);
    let (status, _) = http(&topo.gw, METRICS, "POST /metrics HTTP/1.1").unwrap();
    assert_eq!(status, 405);

    let good = std::fs::read_to_string(&gate.config).unwrap();
    // A broken config: the reload fails, is counted, changes nothing (the
    // endpoint stays where it was).
    let broken = good.replace("listen = \"127.0.0.1:9421\"", "listen = \"127.0.0.1:http\"");
    assert_ne!(broken, good);
    std::fs::write(&gate.config, &broken).unwrap();
    gate.hup();
    let m = scrape_until(&topo, "a failed reload", |m| {
        get(m, &reloads("failure")) == 1.0
    });
    assert_eq!(get(&m, &reloads("success")), 0.0);
    assert_eq!(get(&m, "mx6gate_config_last_reload_successful"), 0.0);
    assert!(
        gate.log()
            .contains("metrics.listen: \\\"127.0.0.1:http\\\" is not an address")
            || gate
                .log()
                .contains("metrics.listen: \"127.0.0.1:http\" is not an address"),
        "{}",
        gate.log()
    );

    // The good config again: a success.
    std::fs::write(&gate.config, &good).unwrap();
    gate.hup();
    let m = scrape_until(&topo, "a successful reload", |m| {
        get(m, &reloads("success")) == 1.0
    });
    assert_eq!(get(&m, &reloads("failure")), 1.0);
    assert_eq!(get(&m, "mx6gate_config_last_reload_successful"), 1.0);

    // A new address: the endpoint moves there, keeping its counts.
    let moved = "[::1]:9422";
    std::fs::write(
        &gate.config,
        good.replace(
            "listen = \"127.0.0.1:9421\"",
            &format!("listen = \"{moved}\""),
        ),
    )
    .unwrap();
    gate.hup();
    let mut m = None;
    for _ in 0..50 {
        if let Ok((200, body)) = http(&topo.gw, moved, "GET /metrics HTTP/1.1") {
            m = Some(parse(&body));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = m.expect("the endpoint never came up on the new address");
    assert_eq!(get(&m, &reloads("success")), 2.0);
    assert!(
        http(&topo.gw, METRICS, "GET /metrics HTTP/1.1").is_err(),
        "the old address must be closed"
    );
    gate.stop().unwrap();
}

#[test]
fn busy_address_fails_the_start_and_false_disables() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let addr: SocketAddr = METRICS.parse().unwrap();
    let squatter = topo
        .gw
        .enter(move || std::net::TcpListener::bind(addr))
        .unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "drop", CONFIG).unwrap();
    let err = format!("{:#}", gate.start().unwrap_err());
    assert!(
        err.contains("metrics: cannot listen on 127.0.0.1:9421"),
        "{err}"
    );
    // Refused before anything changed: no gate was loaded.
    assert!(!gate.pin_path.exists(), "a failed start left pins behind");
    drop(squatter);

    let cfg = CONFIG.replace("listen = \"127.0.0.1:9421\"", "listen = false");
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "monitor", &cfg).unwrap();
    gate.start().unwrap();
    let r = http(&topo.gw, METRICS, "GET /metrics HTTP/1.1");
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "disabled endpoint must not listen: {r:?}"
    );
    assert!(
        gate.log().contains("metrics endpoint disabled"),
        "{}",
        gate.log()
    );
    gate.stop().unwrap();
}
