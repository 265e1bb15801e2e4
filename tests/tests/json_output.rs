//! `--json` of the read-only verbs scripts use, from the real binary
//! against a real gate: each prints one object whose "schema" names its
//! shape (README, "Machine-readable output"), with the fields documented
//! there, and agrees with the text output.
use std::{net::IpAddr, time::Duration};

use mx6gate_tests::{
    connect_from, gate::GateUnderTest, require_root, xdp_pass, Listener, Topology, PARTNER_NET,
    PARTNER_SRC, STRANGER_SRC,
};
use serde_json::Value;

fn json(g: &GateUnderTest, args: &[&str]) -> Value {
    let out = g.cli(args).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mx6gate {} printed no JSON ({e}): {}",
            args.join(" "),
            mx6gate_tests::cmd::describe_output(&out)
        )
    })
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[test]
fn check_doctor_and_top_print_their_versioned_shapes() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    // XDP_TX frames (reset mode's RST) land only where the peer runs NAPI.
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut g = GateUnderTest::new(&topo.gw, &topo.gw_if, "defer", "ports = [25, 587]").unwrap();
    g.ok(&["partner", "add", "example-isp", PARTNER_NET])
        .unwrap();
    // An expired partner (the CLI refuses a date in the past; a file
    // dropped by configuration management can hold one).
    std::fs::write(
        g.partners_dir().join("gone.toml"),
        "[[partner]]\nname = \"gone\"\nprefixes = [\"2001:db8:9::/48\"]\nexpires = \"2020-01-01\"\n",
    )
    .unwrap();

    // check, before any gate is loaded.
    let v = json(&g, &["check", "2001:db8:1::25", "--json"]);
    assert_eq!(v["schema"], "mx6gate.check/1", "{v}");
    assert_eq!(
        keys(&v),
        [
            "address",
            "explained",
            "family",
            "gate_loaded",
            "maps_agree",
            "mode",
            "partner",
            "ports",
            "schema",
            "verdict"
        ]
    );
    assert_eq!(v["verdict"], "allowed");
    assert_eq!(v["partner"]["name"], "example-isp");
    assert_eq!(v["partner"]["prefix"], PARTNER_NET);
    assert_eq!(v["partner"]["active"], true);
    assert_eq!(v["ports"], serde_json::json!([25, 587]));
    assert_eq!(v["gate_loaded"], false);
    assert!(v["maps_agree"].is_null());

    g.start().unwrap();
    for (addr, verdict, partner) in [
        ("2001:db8:1::25", "allowed", Some(("example-isp", true))),
        ("2001:db8:9::25", "deferred", Some(("gone", false))),
        ("2001:db8:2::25", "deferred", None),
    ] {
        let v = json(&g, &["check", addr, "--json"]);
        assert_eq!(v["address"], addr);
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["mode"], "defer");
        assert_eq!(v["verdict"], verdict, "{addr}: {v}");
        assert_eq!(v["gate_loaded"], true, "{v}");
        assert_eq!(v["maps_agree"], true, "{v}");
        match partner {
            None => assert!(v["partner"].is_null(), "{v}"),
            Some((name, active)) => {
                assert_eq!(v["partner"]["name"], name);
                assert_eq!(v["partner"]["active"], active);
            }
        }
        // The text says the same.
        let text = g.ok(&["check", addr]).unwrap();
        assert!(
            text.contains(if verdict == "allowed" {
                "allowed:"
            } else {
                "mode defer:"
            }),
            "{text}"
        );
    }
    // The stranger meets the banner once: explained, its next attempt
    // within the window is escalated to a reset.
    let s = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        Topology::gw_v6(25),
        Duration::from_secs(5),
    )
    .expect_connected("stranger in defer mode");
    let banner = mx6gate_tests::read_banner(&s, Duration::from_secs(10)).unwrap();
    assert!(banner.starts_with("421 "), "{banner}");
    drop(s);
    let mut v = Value::Null;
    for _ in 0..250 {
        v = json(&g, &["check", "2001:db8:2::25", "--json"]);
        if v["verdict"] == "escalated" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(v["verdict"], "escalated", "{v}");
    assert_eq!(v["explained"]["prefix"], "2001:db8:2::/64", "{v}");
    assert!(
        v["explained"]["left_seconds"].as_u64().unwrap() > 3600,
        "{v}"
    );
    assert!(v["explained"]["ago_seconds"].as_u64().unwrap() < 600, "{v}");
    g.ok(&["mode", "reset"]).unwrap();
    assert_eq!(
        json(&g, &["check", "2001:db8:2::25", "--json"])["verdict"],
        "reset"
    );
    let v = json(&g, &["check", "198.51.100.7", "--json"]);
    assert_eq!(v["family"], "ipv4");
    assert_eq!(v["verdict"], "not_gated");
    assert!(v["mode"].is_null());
    // A bad address is an error on stderr, not a JSON answer.
    let out = g.cli(&["check", "nonsense", "--json"]).unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nonsense\" is not an IP address"));

    // doctor: the schema, the exit status, the findings.
    let out = g.cli(&["doctor", "--json"]).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "mx6gate.doctor/1");
    assert_eq!(keys(&v), ["exit", "findings", "schema"]);
    assert_eq!(v["exit"].as_i64(), out.status.code().map(i64::from));
    for f in v["findings"].as_array().unwrap() {
        for k in ["check", "severity", "summary"] {
            assert!(f[k].is_string(), "{f}");
        }
        assert!(
            ["ok", "info", "warn", "fail"].contains(&f["severity"].as_str().unwrap()),
            "{f}"
        );
    }

    // top: a stranger turned away (reset), then the daemon's answer.
    let o = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        Topology::gw_v6(25),
        Duration::from_secs(5),
    );
    assert!(o.is_refused(), "reset mode: {o}");
    let mut v = Value::Null;
    for _ in 0..250 {
        v = json(&g, &["top", "--json", "--suggest"]);
        if !v["rows"].as_array().is_none_or(|r| r.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(v["schema"], "mx6gate.top/1", "{v}");
    assert_eq!(
        keys(&v),
        [
            "by",
            "now",
            "rows",
            "schema",
            "stats",
            "suggestions",
            "window_minutes"
        ]
    );
    let row = &v["rows"][0];
    assert_eq!(row["prefix"], "2001:db8:2::/48", "{v}");
    assert!(row["count"].as_u64().unwrap() >= 1);
    assert_eq!(v["suggestions"][0]["prefix"], "2001:db8:2::/48", "{v}");
    g.stop().unwrap();
}

/// `status --json` and `partner list --json`: their schemas, their
/// top-level fields (README, "Machine-readable output"), and agreement
/// with the text each verb prints.
#[test]
fn status_and_partner_list_print_their_versioned_shapes() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let mut g = GateUnderTest::new(&topo.gw, &topo.gw_if, "drop", "").unwrap();
    g.ok(&["partner", "add", "example-isp", PARTNER_NET, "--note", "n"])
        .unwrap();

    // No gate yet: status still answers, with the maps null.
    let v = json(&g, &["status", "--json"]);
    assert_eq!(v["schema"], "mx6gate.status/1", "{v}");
    assert_eq!(
        keys(&v),
        [
            "config",
            "daemon_pid",
            "defer",
            "foreign_owner",
            "interfaces",
            "loaded",
            "maps",
            "metrics",
            "mode",
            "pin_path",
            "ports",
            "responder",
            "schema",
            "sk_lookup",
            "spf",
            "store",
            "stranding_warning",
            "warnings"
        ]
    );
    assert_eq!(v["spf"]["domains"], serde_json::json!([]), "{v}");
    assert!(v["spf"]["error"].is_null(), "{v}");
    assert_eq!(v["loaded"], false, "{v}");
    assert!(v["maps"].is_null(), "{v}");
    assert!(v["daemon_pid"].is_null(), "{v}");
    assert_eq!(v["interfaces"][0]["interface"], topo.gw_if.as_str(), "{v}");
    assert_eq!(v["interfaces"][0]["attached"], false, "{v}");
    assert_eq!(v["interfaces"][0]["xdp_mode"], "none", "{v}");
    let p = json(&g, &["partner", "list", "--json"]);
    assert_eq!(p["schema"], "mx6gate.partners/1", "{p}");
    assert_eq!(
        keys(&p),
        [
            "gate_loaded",
            "partners",
            "partners_dir",
            "refused",
            "schema",
            "skipped"
        ]
    );
    assert_eq!(p["gate_loaded"], false);
    assert_eq!(p["partners"][0]["name"], "example-isp", "{p}");
    assert_eq!(
        p["partners"][0]["prefixes"][0]["prefix"], PARTNER_NET,
        "{p}"
    );
    // Where the prefix comes from: given by hand (SPF ones say
    // "spf:DOMAIN", with the record and term: spf_partners).
    assert_eq!(p["partners"][0]["prefixes"][0]["origin"], "manual", "{p}");
    assert_eq!(p["partners"][0]["spf"], serde_json::json!([]), "{p}");
    assert_eq!(p["partners"][0]["note"], "n");
    assert_eq!(p["partners"][0]["active"], true);
    assert!(p["partners"][0]["hits"].is_null(), "{p}");

    g.start().unwrap();
    // A stranger dropped, a partner let in: the counters and hits say so.
    let o = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        Topology::gw_v6(25),
        Duration::from_secs(2),
    );
    assert!(!o.is_connected(), "drop mode: {o}");
    connect_from(
        &topo.sender,
        IpAddr::V6(PARTNER_SRC),
        Topology::gw_v6(25),
        Duration::from_secs(5),
    )
    .expect_connected("partner in drop mode");
    let v = json(&g, &["status", "--json"]);
    assert_eq!(v["loaded"], true, "{v}");
    assert_eq!(v["mode"]["effective"], "drop", "{v}");
    assert!(v["daemon_pid"].as_i64().is_some(), "{v}");
    assert_eq!(v["interfaces"][0]["attached"], true, "{v}");
    assert!(v["interfaces"][0]["link"]["link"].as_u64().is_some(), "{v}");
    assert_eq!(v["sk_lookup"]["attached"], true, "{v}");
    assert_eq!(v["store"]["partners_active"], 1, "{v}");
    assert_eq!(v["maps"]["prefixes"], 1, "{v}");
    assert_eq!(v["maps"]["mismatch"], false, "{v}");
    let xdp = &v["maps"]["counters"]["xdp"];
    assert!(xdp["dropped"].as_u64().unwrap() >= 1, "{v}");
    assert!(xdp["partner_allowed"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["maps"]["counters"]["sk_lookup"].is_object(), "{v}");
    assert!(v["maps"]["counters"]["report"].is_object(), "{v}");
    // What the CONFIG map enforces (the same reading the metrics export).
    assert_eq!(v["maps"]["enforced"]["mode"], "drop", "{v}");
    assert_eq!(
        v["maps"]["enforced"]["responder_down_policy"], "pass",
        "{v}"
    );
    // The text shows the same counters.
    let text = g.ok(&["status"]).unwrap();
    let dropped = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("dropped "))
        .unwrap_or_else(|| panic!("no dropped line: {text}"));
    assert_eq!(
        dropped.trim().parse::<u64>().ok(),
        xdp["dropped"].as_u64(),
        "{text}"
    );
    let p = json(&g, &["partner", "list", "--json"]);
    assert_eq!(p["gate_loaded"], true);
    assert!(p["partners"][0]["hits"].as_u64().unwrap() >= 1, "{p}");
    g.stop().unwrap();
}
