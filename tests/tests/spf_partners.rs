//! Partners by domain, end to end: `partner add --spf` against a real
//! authoritative DNS server (Knot, in the gateway's namespace), through the
//! gate to the MTA. The expanded prefixes reach the MTA and a source
//! outside them gets the responder's 421 (defer mode); a record that changes changes the maps within
//! its TTL, with the diff logged; a server that stops answering keeps the
//! last good set (said in status, through a daemon restart); a record that
//! shrinks to nothing is held until `partner refresh --accept`; CLI edits
//! without a daemon keep the SPF prefixes; bad input is refused naming the
//! item and changes nothing.
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use mx6gate_tests::{
    authdns::{AuthDns, Zone},
    connect_from,
    gate::GateUnderTest,
    read_banner, require_root,
    scrape::scrape_at,
    wait::wait_until,
    Listener, Topology, PARTNER_SRC, STRANGER_SRC,
};

/// The partner's records: its domain includes `_spf`, which lists `nets`
/// (TTL 2 s, so the refresh comes round within seconds).
fn zone(nets: &[&str]) -> Zone {
    let terms: Vec<String> = nets.iter().map(|n| format!("ip6:{n}")).collect();
    Zone::new(
        "example.test",
        &format!(
            r#"
partner 2 TXT "v=spf1 include:_spf.partner.example.test -all"
_spf.partner 2 TXT "v=spf1 {} ip4:198.51.100.0/24 -all"
nospf TXT "just some text"
broken TXT "v=spf1 ip6:2001:db8::/129 -all"
other 2 TXT "v=spf1 ip6:2001:db8:3::/48 -all"
"#,
            terms.join(" ")
        ),
    )
}

/// `[spf]` pointing at the Knot server, with a floor of a second.
fn spf_table(dns: &AuthDns) -> String {
    format!(
        "[spf]\nresolvers = [\"{}\"]\nrefresh_floor = \"1s\"\nrefresh_ceiling = \"20s\"\n",
        dns.addr()
    )
}

/// The daemon's metrics endpoint (the default, in the gateway namespace).
const METRICS: &str = "127.0.0.1:9421";

fn gw25() -> SocketAddr {
    SocketAddr::new(IpAddr::V6(mx6gate_tests::GW_V6), 25)
}

/// The banner `src` gets on port 25 ("" when it could not connect).
fn banner(topo: &Topology, src: Ipv6Addr) -> String {
    let c = connect_from(
        &topo.sender,
        IpAddr::V6(src),
        gw25(),
        Duration::from_secs(2),
    );
    if !c.is_connected() {
        return String::new();
    }
    let s = c.expect_connected("connect");
    read_banner(&s, Duration::from_secs(2)).unwrap_or_default()
}

/// `src` reaches the MTA (its 220 banner).
fn reaches(topo: &Topology, src: Ipv6Addr) -> bool {
    banner(topo, src).starts_with("220")
}

/// `src` is turned away (defer mode: the responder's 421).
fn turned_away(topo: &Topology, src: Ipv6Addr) -> bool {
    banner(topo, src).starts_with("421")
}

/// Defer mode with the responder on the gateway's loopback, answering
/// every attempt with its 421 (no reset after the first explanation).
const DEFER: &str = "[responder]\nlisten = \"[::1]:2526\"\nhostname = \"mx.example.test\"\n[defer]\nrepeat = \"defer\"\n";

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file of the store and the state dir, with its contents.
fn snapshot(dirs: &[&Path]) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") || name.starts_with('.') || name == "control.sock" {
                continue;
            }
            v.push((
                format!("{}/{name}", d.display()),
                std::fs::read(e.path()).unwrap_or_default(),
            ));
        }
    }
    v.sort();
    v
}

#[test]
fn spf_partner_follows_its_record_safely() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut dns = AuthDns::start(&topo.gw, &[zone(&["2001:db8:1::/48"])]).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        &format!("{}{DEFER}", spf_table(&dns)),
    )
    .unwrap();

    // Added without a daemon: expanded at once, recorded, applied at start.
    let added = gate
        .ok(&["partner", "add", "p", "--spf", "partner.example.test"])
        .unwrap();
    assert!(
        added.contains("2001:db8:1::/48") && added.contains("added partner p"),
        "{added}"
    );
    gate.start().unwrap();
    assert!(
        reaches(&topo, PARTNER_SRC),
        "the SPF prefix reaches the MTA"
    );
    assert!(
        turned_away(&topo, STRANGER_SRC),
        "a source outside it is turned away"
    );
    let list = gate.ok(&["partner", "list"]).unwrap();
    assert!(
        list.contains("spf:partner.example.test") && list.contains("in _spf.partner.example.test"),
        "origins in partner list:\n{list}"
    );
    let check = gate.ok(&["check", &PARTNER_SRC.to_string()]).unwrap();
    assert!(
        check.contains("partner p via 2001:db8:1::/48 from spf:partner.example.test")
            && check
                .contains("\"ip6:2001:db8:1::/48\" in the SPF record of _spf.partner.example.test"),
        "{check}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&gate.ok(&["partner", "list", "--json"]).unwrap()).unwrap();
    let p0 = &json["partners"][0]["prefixes"][0];
    assert_eq!(p0["origin"], "spf:partner.example.test", "{json:#}");
    assert_eq!(p0["term"], "ip6:2001:db8:1::/48", "{json:#}");

    // The record grows: the maps follow within its TTL, the diff is logged.
    dns.set_zone(&zone(&["2001:db8:1::/48", "2001:db8:2::/48"]))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || reaches(&topo, STRANGER_SRC)),
        "the widened record reaches the gate:\n{}",
        gate.log()
    );
    let log = gate.log();
    assert!(
        log.contains("spf: set changed") && log.contains("2001:db8:2::/48"),
        "{log}"
    );

    // CLI edits without a daemon keep what SPF brought in.
    gate.stop().unwrap();
    gate.ok(&["partner", "add", "manual", "2001:db8:77::/48"])
        .unwrap();
    gate.ok(&["sync"]).unwrap();
    assert!(reaches(&topo, PARTNER_SRC), "SPF prefix kept by a CLI edit");
    assert!(
        reaches(&topo, STRANGER_SRC),
        "SPF prefix kept by a CLI edit"
    );

    // DNS stops answering; a restart keeps enforcing the persisted set.
    dns.pause().unwrap();
    gate.start().unwrap();
    assert!(reaches(&topo, PARTNER_SRC), "last good set kept at restart");
    assert!(
        gate.wait_log("spf: refresh failed", 0, Duration::from_secs(60)),
        "the failure is logged:\n{}",
        gate.log()
    );
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        status.contains("REFRESH FAILING") && status.contains("2 prefix(es) enforced"),
        "{status}"
    );
    let v = gate.status().unwrap();
    assert!(
        v["spf"]["domains"][0]["failing"]["count"].as_u64() >= Some(1),
        "{v:#}"
    );
    assert!(
        reaches(&topo, STRANGER_SRC),
        "last good set kept while DNS fails"
    );
    let m = scrape_at(&topo.gw, METRICS);
    let series = |name: &str| format!("{name}{{domain=\"partner.example.test\"}}");
    assert!(
        m[&series("mx6gate_spf_refresh_failures_total")] >= 1.0,
        "{m:?}"
    );
    assert_eq!(m[&series("mx6gate_spf_prefixes")], 2.0, "{m:?}");
    assert!(
        m[&series("mx6gate_spf_last_success_timestamp_seconds")] > 0.0,
        "{m:?}"
    );

    // The record shrinks to nothing: held, still enforced, until accepted.
    dns.resume().unwrap();
    dns.set_zone(&zone(&[])).unwrap();
    assert!(
        gate.wait_log("held for confirmation", 0, Duration::from_secs(60)),
        "the empty set is held:\n{}",
        gate.log()
    );
    assert!(reaches(&topo, PARTNER_SRC), "held: the last good set stays");
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        status.contains("HELD") && status.contains("-2001:db8:1::/48"),
        "{status}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            scrape_at(&topo.gw, METRICS).get(&series("mx6gate_spf_held")) == Some(&1.0)
        }),
        "mx6gate_spf_held says so"
    );
    let accepted = gate.ok(&["partner", "refresh", "p", "--accept"]).unwrap();
    assert!(accepted.contains("held set accepted"), "{accepted}");
    assert!(
        turned_away(&topo, PARTNER_SRC),
        "accepted: the empty set applies"
    );
    assert!(
        turned_away(&topo, STRANGER_SRC),
        "accepted: the empty set applies"
    );

    // A domain added while the daemon runs is refreshed by it, and once no
    // partner names it its state is dropped: the refresh task follows the
    // store the worker applies.
    let logged = |gate: &GateUnderTest, what: &str, domain: &str| {
        wait_until(Duration::from_secs(30), || {
            gate.log()
                .lines()
                .any(|l| l.contains(what) && l.contains(domain))
        })
    };
    gate.ok(&["partner", "add", "q", "--spf", "other.example.test"])
        .unwrap();
    assert!(
        logged(&gate, "spf: refreshed", "other.example.test"),
        "the daemon refreshes a domain added while it runs:\n{}",
        gate.log()
    );
    gate.ok(&["partner", "remove", "q"]).unwrap();
    assert!(
        logged(
            &gate,
            "state dropped for domains no partner names",
            "other.example.test"
        ),
        "the state of a domain no partner names is dropped:\n{}",
        gate.log()
    );
    let v = gate.status().unwrap();
    assert!(
        !v["spf"]["domains"]
            .to_string()
            .contains("other.example.test"),
        "{v:#}"
    );
    gate.stop().unwrap();
}

#[test]
fn bad_spf_input_is_refused_naming_it() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let mut dns = AuthDns::start(&topo.gw, &[zone(&["2001:db8:1::/48"])]).unwrap();
    let gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "reset", &spf_table(&dns)).unwrap();
    gate.ok(&["partner", "add", "p", "--spf", "partner.example.test"])
        .unwrap();
    let before = snapshot(&[&gate.partners_dir(), &gate.state_dir()]);
    let refused = |args: &[&str], want: &[&str]| {
        let o = gate.cli(args).unwrap();
        let text = out(&o);
        assert!(!o.status.success(), "{args:?} must fail: {text}");
        for w in want {
            assert!(text.contains(w), "{args:?}: want {w:?} in {text}");
        }
        assert_eq!(
            snapshot(&[&gate.partners_dir(), &gate.state_dir()]),
            before,
            "{args:?} changed something"
        );
    };
    refused(
        &["partner", "add", "q", "--spf", "not a domain"],
        &["\"not a domain\""],
    );
    refused(
        &["partner", "add", "q", "--spf", "nospf.example.test"],
        &["nospf.example.test", "no SPF record"],
    );
    refused(
        &["partner", "add", "q", "--spf", "nx.example.test"],
        &["nx.example.test", "NXDOMAIN"],
    );
    refused(
        &["partner", "add", "q", "--spf", "broken.example.test"],
        &["broken.example.test", "not valid"],
    );
    // Named by another partner already.
    refused(
        &["partner", "add", "q", "--spf", "partner.example.test"],
        &["partner.example.test", "already named by partner \"p\""],
    );
    refused(
        &["partner", "remove", "p", "--spf", "other.example.test"],
        &["names no spf domain other.example.test"],
    );
    dns.pause().unwrap();
    refused(
        &["partner", "add", "q", "--spf", "other.example.test"],
        &["other.example.test", "DNS did not answer"],
    );
    dns.resume().unwrap();
    // And the good one goes through once DNS answers.
    let ok = gate
        .ok(&["partner", "add", "q", "--spf", "other.example.test"])
        .unwrap();
    assert!(ok.contains("2001:db8:3::/48"), "{ok}");
}
