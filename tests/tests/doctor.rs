//! `mx6gate doctor`: the DNS checks against a real DNS server (dnsmasq) in
//! a namespace, and the host checks against a real gate, a real listener
//! and real interface addresses in the lab.
use std::{collections::BTreeMap, net::SocketAddr, process::Output, time::Duration};

use mx6gate_tests::{
    dns::Dnsmasq, gate::GateUnderTest, require_root, Listener, Netns, Topology, GW_V4, PARTNER_NET,
};

/// check id → (severity, summary), and the exit status.
fn findings(out: &Output) -> (BTreeMap<String, (String, String)>, i32) {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}):\n{}",
            mx6gate_tests::cmd::describe_output(out)
        )
    });
    let mut m = BTreeMap::new();
    for f in v["findings"].as_array().expect("findings array") {
        m.insert(
            f["check"].as_str().unwrap().to_string(),
            (
                f["severity"].as_str().unwrap().to_string(),
                f["summary"].as_str().unwrap().to_string(),
            ),
        );
    }
    let code = out.status.code().expect("exit status");
    assert_eq!(
        v["exit"].as_i64(),
        Some(code as i64),
        "JSON and exit status agree"
    );
    (m, code)
}

fn severity<'a>(m: &'a BTreeMap<String, (String, String)>, check: &str) -> &'a str {
    m.get(check)
        .map(|(s, _)| s.as_str())
        .unwrap_or_else(|| panic!("no finding {check:?} in {m:#?}"))
}

const ZONES: &[&str] = &[
    // Authoritative for .test: unknown names are NXDOMAIN, not forwarded.
    "local=/test/",
    // Most preferred MX dual-stack, a second IPv4-only: what the runbook wants.
    "mx-host=good.test,mx1.good.test,10",
    "mx-host=good.test,mx2.good.test,20",
    "host-record=mx1.good.test,198.51.100.11,2001:db8:100::11",
    "host-record=mx2.good.test,198.51.100.12",
    // Most preferred MX IPv6-only, a fallback with IPv4.
    "mx-host=v6first.test,mx6.v6first.test,10",
    "mx-host=v6first.test,mx4.v6first.test,20",
    "host-record=mx6.v6first.test,2001:db8:100::21",
    "host-record=mx4.v6first.test,198.51.100.22",
    // No IPv4 anywhere.
    "mx-host=v6only.test,mx.v6only.test,10",
    "host-record=mx.v6only.test,2001:db8:100::31",
    // No MX: the domain's own addresses (implicit MX).
    "host-record=implicit.test,198.51.100.41,2001:db8:100::41",
    // An MX whose host does not resolve, and a good one behind it.
    "mx-host=dangling.test,gone.dangling.test,10",
    "mx-host=dangling.test,mx.dangling.test,20",
    "host-record=mx.dangling.test,198.51.100.51",
];

#[test]
fn doctor_reads_the_mx_set_through_the_system_resolver() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("dns").unwrap();
    let dns = Dnsmasq::start(&ns, ZONES).unwrap();
    let domains = [
        "good.test",
        "v6first.test",
        "v6only.test",
        "implicit.test",
        "dangling.test",
        "missing.test",
        // Outside the zones dnsmasq serves, with no upstream: it answers
        // REFUSED (a failed lookup, not a domain without MX).
        "unserved.example",
    ];
    let mut args = vec!["doctor", "--json"];
    for d in &domains {
        args.extend(["--domain", d]);
    }

    // Enforcing (defer): IPv6 MX hosts are looked at one by one.
    let gate = GateUnderTest::new(&ns, "lo", "defer", "").unwrap();
    let out = gate.cli_with_resolv_conf(&dns.resolv_conf, &args).unwrap();
    let (m, code) = findings(&out);
    assert_eq!(code, 2, "failures present: {m:#?}");

    assert_eq!(severity(&m, "mx:good.test:records"), "ok");
    assert!(
        m["mx:good.test:records"]
            .1
            .contains("10 mx1.good.test (A and AAAA)"),
        "{m:#?}"
    );
    assert!(
        m["mx:good.test:records"]
            .1
            .contains("20 mx2.good.test (A only)"),
        "{m:#?}"
    );
    assert_eq!(severity(&m, "mx:good.test:primary-ipv4"), "ok");
    assert!(!m.contains_key("mx:good.test:any-ipv4"));
    assert_eq!(severity(&m, "mx:good.test:ipv6:mx1.good.test"), "info");

    assert_eq!(severity(&m, "mx:v6first.test:primary-ipv4"), "fail");
    assert!(!m.contains_key("mx:v6first.test:any-ipv4"), "mx4 has IPv4");
    assert_eq!(
        severity(&m, "mx:v6first.test:ipv6:mx6.v6first.test"),
        "warn"
    );

    assert_eq!(severity(&m, "mx:v6only.test:primary-ipv4"), "fail");
    assert_eq!(severity(&m, "mx:v6only.test:any-ipv4"), "fail");

    assert_eq!(severity(&m, "mx:implicit.test:records"), "info");
    assert_eq!(severity(&m, "mx:implicit.test:primary-ipv4"), "ok");

    assert_eq!(
        severity(&m, "mx:dangling.test:host:gone.dangling.test"),
        "warn"
    );
    assert_eq!(severity(&m, "mx:dangling.test:primary-ipv4"), "fail");

    assert_eq!(severity(&m, "mx:missing.test:exists"), "fail");

    assert_eq!(severity(&m, "mx:unserved.example:lookup"), "warn");
    assert!(
        !m.keys()
            .any(|k| k.starts_with("mx:unserved.example:") && k != "mx:unserved.example:lookup"),
        "a refused lookup is not read as an implicit MX: {m:#?}"
    );

    // One host name with both AAAA and A (the sendmail case): with
    // escalation on (the default) a note; a warning without it.
    assert_eq!(severity(&m, "mx:good.test:one-name:mx1.good.test"), "info");
    assert_eq!(
        severity(&m, "mx:implicit.test:one-name:implicit.test"),
        "info"
    );
    assert!(!m.contains_key("mx:v6first.test:one-name:mx6.v6first.test"));
    let gate = GateUnderTest::new(&ns, "lo", "defer", "[defer]\nrepeat = \"defer\"\n").unwrap();
    let out = gate
        .cli_with_resolv_conf(&dns.resolv_conf, &["doctor", "--domain", "good.test"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[WARN] mx:good.test:one-name:mx1.good.test")
            && text.contains("sendmail")
            && text.contains("repeat = \"reset\"")
            && text.contains("separate MX host name"),
        "{text}"
    );
    assert_ne!(out.status.code(), Some(0), "a warning: {text}");

    // Monitor mode: AAAA hosts are a note, not a warning.
    let gate = GateUnderTest::new(&ns, "lo", "monitor", "").unwrap();
    let out = gate
        .cli_with_resolv_conf(
            &dns.resolv_conf,
            &["doctor", "--json", "--domain", "v6first.test"],
        )
        .unwrap();
    let (m, _) = findings(&out);
    assert_eq!(severity(&m, "mx:v6first.test:ipv6"), "info");
    assert!(!m.contains_key("mx:v6first.test:ipv6:mx6.v6first.test"));

    // The text report names the problem and its fix.
    let out = gate
        .cli_with_resolv_conf(&dns.resolv_conf, &["doctor", "--domain", "v6only.test"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[FAIL] mx:v6only.test:any-ipv4"), "{text}");
    assert!(text.contains("fix: publish A records"), "{text}");

    // Bad input: refused, naming it.
    let out = gate.cli(&["doctor", "--domain", "exa mple.test"]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"exa mple.test\" is not a domain name"),
        "{}",
        mx6gate_tests::cmd::describe_output(&out)
    );
}

fn in_days(n: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("+{n} days"), "+%F"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn doctor_checks_the_running_gate_the_mta_and_ipv4() {
    if !require_root() {
        return;
    }
    let t = Topology::new().unwrap();
    let mut gate = GateUnderTest::new(&t.gw, &t.gw_if, "defer", "").unwrap();
    gate.ok(&[
        "partner",
        "add",
        "soon",
        PARTNER_NET,
        "--expires",
        &in_days(5),
    ])
    .unwrap();
    gate.start().unwrap();
    // The MTA: one dual-stack socket on port 25.
    let mut mta = Listener::start(&t.gw, "[::]:25".parse::<SocketAddr>().unwrap()).unwrap();

    let out = gate.cli(&["doctor", "--json"]).unwrap();
    let (m, code) = findings(&out);
    for ok in [
        "kernel",
        "programs",
        "bpffs",
        "gate",
        "daemon",
        "sk_lookup",
        "responder",
        "listen:25",
        "partners",
    ] {
        assert_eq!(severity(&m, ok), "ok", "{ok}: {m:#?}");
    }
    // What the kernel's newer features are, said whichever way it goes.
    assert_eq!(severity(&m, "kernel:features"), "info");
    let attach = format!("attach:{}", t.gw_if);
    assert_eq!(severity(&m, &attach), "ok");
    assert!(m[&attach].1.contains("native"), "{m:#?}");
    assert!(m["responder"].1.contains("421"), "{m:#?}");
    let ipv4 = format!("ipv4:{}", t.gw_if);
    assert_eq!(severity(&m, &ipv4), "ok");
    assert!(m[&ipv4].1.contains(&GW_V4.to_string()), "{m:#?}");
    assert_eq!(severity(&m, "expiry"), "warn");
    assert!(m["expiry"].1.contains("soon"), "{m:#?}");
    assert_eq!(code, 1, "only the expiry warning: {m:#?}");

    // The MTA goes away: senders would find nothing on IPv4.
    mta.stop();
    let (m, code) = findings(&gate.cli(&["doctor", "--json"]).unwrap());
    assert_eq!(severity(&m, "listen:25"), "fail");
    assert_eq!(code, 2);

    // An IPv6-only listener: partners fine, deferred senders stranded.
    let _v6only =
        Listener::start(&t.gw, "[2001:db8:100::1]:25".parse::<SocketAddr>().unwrap()).unwrap();
    let (m, _) = findings(&gate.cli(&["doctor", "--json"]).unwrap());
    assert_eq!(severity(&m, "listen:25"), "fail");
    assert!(
        m["listen:25"].1.contains("nothing listens on IPv4"),
        "{m:#?}"
    );

    // No IPv4 on the protected interface: doctor fails it, status and run warn.
    t.gw.run(&["ip", "addr", "del", &format!("{GW_V4}/24"), "dev", &t.gw_if])
        .unwrap();
    let (m, _) = findings(&gate.cli(&["doctor", "--json"]).unwrap());
    assert_eq!(severity(&m, &ipv4), "fail");
    let status = gate.ok(&["status"]).unwrap();
    assert!(
        status.contains("WARNING:") && status.contains("no usable IPv4 address on"),
        "{status}"
    );
    gate.stop().unwrap();
    gate.start().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gate.log().contains("no usable IPv4 address") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gate.log().contains("no usable IPv4 address"),
        "{}",
        gate.log()
    );

    // The daemon stops: the pinned gate stays, doctor says what that means.
    gate.stop().unwrap();
    let (m, _) = findings(&gate.cli(&["doctor", "--json"]).unwrap());
    assert_eq!(severity(&m, "gate"), "ok");
    assert_eq!(severity(&m, "daemon"), "warn");
    assert_eq!(severity(&m, "responder"), "fail");
}
