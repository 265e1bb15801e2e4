//! The shipped rules and dashboard against a real Prometheus (Debian's)
//! scraping the real daemon in the namespace lab: every dashboard query
//! returns data, every metric the rules and the dashboard name is one the
//! daemon exports, and the responder-down alert fires when the daemon is
//! killed in defer mode and resolves when it is back. The gate has a
//! partner by domain too (its SPF record served by Knot), so the SPF
//! panels and series are checked like the rest.
//!
//! Prometheus scrapes and evaluates every second here, and the rules'
//! `for:` durations (and the hourly group's interval) are cut to seconds
//! in a copy of the file, so the test waits for events, not minutes.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use mx6gate_tests::{
    authdns::{AuthDns, Zone},
    connect_from,
    gate::GateUnderTest,
    prometheus::Prometheus,
    read_banner, require_programs, require_root, xdp_pass, Listener, Topology, PARTNER_NET,
    PARTNER_SRC, STRANGER_SRC,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9421";
/// How long Prometheus may take to see what the gate did (1 s scrapes and
/// evaluations, plus a slow, shared machine).
const SEE: Duration = Duration::from_secs(60);

/// A partner by domain, so the per-domain SPF series exist: its record
/// (TTL 2 s, refreshed by the daemon within seconds) lists one /48 outside
/// the lab's traffic.
fn spf_zone() -> Zone {
    Zone::new(
        "example.test",
        r#"
partner 2 TXT "v=spf1 ip6:2001:db8:5::/48 -all"
"#,
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The shipped rules with every `for:` at 2 s and group intervals at 1 s.
fn fast_rules(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(root().join("packaging/prometheus/mx6gate.rules.yml")).unwrap();
    let mut changed = 0;
    let fast: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t.starts_with("for: ") {
                changed += 1;
                format!("{indent}for: 2s")
            } else if t.starts_with("interval: ") {
                format!("{indent}interval: 1s")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(changed >= 5, "the rules have `for:` lines to shorten");
    let p = dir.join("mx6gate.rules.yml");
    std::fs::write(&p, fast.join("\n") + "\n").unwrap();
    p
}

/// Every dashboard query, with Grafana's variables as a dashboard with
/// "All" gateways would send them.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("packaging/grafana/mx6gate.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "30s")
                .replace("$instance", ".+");
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// `mx6gate_*` metric names in a text (recording rules use `mx6gate:`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("mx6gate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn firing_instances(prom: &Prometheus<'_>, alert: &str) -> anyhow::Result<Vec<String>> {
    Ok(prom
        .firing(alert)?
        .iter()
        .map(|a| a["labels"]["instance"].as_str().unwrap_or("").to_string())
        .collect())
}

#[test]
fn rules_and_dashboard_against_a_real_prometheus() {
    if !require_root() || !require_programs(&["prometheus"]) {
        return;
    }
    let topo = Topology::new().unwrap();
    // XDP_TX frames (the escalation's RST) land only where the peer runs NAPI.
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    let dns = AuthDns::start(&topo.gw, &[spf_zone()]).unwrap();
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        &format!(
            "[metrics]\nlisten = \"{METRICS}\"\n[spf]\nresolvers = [\"{}\"]\nrefresh_floor = \"1s\"\n",
            dns.addr()
        ),
    )
    .unwrap();
    gate.ok(&["partner", "add", "example-isp", PARTNER_NET])
        .unwrap();
    gate.ok(&[
        "partner",
        "add",
        "example-spf",
        "--spf",
        "partner.example.test",
    ])
    .unwrap();
    gate.start().unwrap();

    let rules = fast_rules(gate.dir.path());
    let prom = Prometheus::start(&topo.gw, &[METRICS], std::slice::from_ref(&rules)).unwrap();
    prom.wait_for("the gate scraped in defer mode", SEE, |p| {
        Ok(p.values("up{job=\"mx6gate\"}")? == [1.0]
            && p.values("mx6gate_mode{mode=\"defer\"}")? == [1.0])
    })
    .unwrap();

    // Traffic for the panels: partners to the MTA; the stranger deferred
    // (the banner explains), then reset (escalated) as it comes back.
    let to_gw = Topology::gw_v6(25);
    for i in 0..3 {
        connect_from(&topo.sender, IpAddr::V6(PARTNER_SRC), to_gw, SEE).expect_connected("partner");
        let o = connect_from(&topo.sender, IpAddr::V6(STRANGER_SRC), to_gw, SEE);
        if i == 0 {
            let s = o.expect_connected("stranger (defer: the responder)");
            let banner = read_banner(&s, Duration::from_secs(10)).unwrap();
            assert!(banner.starts_with("421 "), "{banner}");
        } else {
            assert!(o.is_refused(), "explained stranger: {o}");
        }
    }
    prom.wait_for("the deferred strangers and the partner", SEE, |p| {
        let deferred =
            p.values("increase(mx6gate_decisions_total{program=\"xdp\",action=\"deferred\"}[1m])")?;
        let partner =
            p.values("increase(mx6gate_partner_syns_total{partner=\"example-isp\"}[1m])")?;
        Ok(deferred.first().is_some_and(|v| *v > 0.0) && partner.first().is_some_and(|v| *v > 0.0))
    })
    .unwrap();

    // Every panel's every query returns data (a series that is 0 counts:
    // the dashboard shows a line at 0, not "No data").
    let queries = dashboard_queries();
    assert!(queries.len() >= 15);
    prom.wait_for("data for every dashboard query", SEE, |p| {
        for (title, expr) in &queries {
            if p.query(expr)?.is_empty() {
                anyhow::bail!("panel {title:?}: no data for {expr}");
            }
        }
        Ok(true)
    })
    .unwrap();
    // The busiest-by-action panel shows the deferrals as a positive rate.
    let (_, by_action) = queries
        .iter()
        .find(|(t, _)| t == "Turned away per minute, by action")
        .unwrap();
    let deferred = prom.query(by_action).unwrap();
    assert!(
        deferred.iter().any(|s| s["metric"]["action"] == "deferred"
            && s["value"][1].as_str().unwrap().parse::<f64>().unwrap() > 0.0),
        "{deferred:?}"
    );
    // The recording rules have data too.
    for rec in [
        "mx6gate:turned_away:rate5m",
        "mx6gate:turned_away:rate5m:avg1d",
    ] {
        prom.wait_for(&format!("recorded {rec}"), SEE, |p| {
            Ok(!p.query(rec)?.is_empty())
        })
        .unwrap();
    }

    // Every metric the rules and the dashboard read is exported by the
    // daemon (a rename would otherwise leave an alert that never fires).
    let mut named = metric_names(&std::fs::read_to_string(&rules).unwrap());
    named.extend(metric_names(
        &std::fs::read_to_string(root().join("packaging/grafana/mx6gate.json")).unwrap(),
    ));
    let exported: BTreeSet<String> = prom
        .query("count by (__name__) ({__name__=~\"mx6gate_.+\"})")
        .unwrap()
        .iter()
        .map(|s| s["metric"]["__name__"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by the rules or dashboard, not exported: {missing:?} (exported: {exported:?})"
    );

    // All is well: no responder-down alert, pending or firing.
    assert!(prom.alerts("MX6GateResponderDown").unwrap().is_empty());

    // The daemon dies in defer mode (the responder with it): the pinned
    // gate keeps deferring into a missing socket, and the alert fires.
    gate.kill().unwrap();
    prom.wait_for("MX6GateResponderDown firing", SEE, |p| {
        Ok(firing_instances(p, "MX6GateResponderDown")? == [METRICS])
    })
    .unwrap();
    let alert = &prom.firing("MX6GateResponderDown").unwrap()[0];
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(alert["labels"]["job"], "mx6gate", "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("responder is down in defer mode"),
        "{alert}"
    );
    prom.wait_for("MX6GateDaemonDown firing", SEE, |p| {
        Ok(firing_instances(p, "MX6GateDaemonDown")? == [METRICS])
    })
    .unwrap();
    // The dashboard's alert annotations see it.
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("packaging/grafana/mx6gate.json")).unwrap(),
    )
    .unwrap();
    let annotation = d["annotations"]["list"][0]["expr"].as_str().unwrap();
    assert!(
        prom.query(annotation)
            .unwrap()
            .iter()
            .any(|s| s["metric"]["alertname"] == "MX6GateResponderDown"),
        "{annotation}"
    );

    // Back: the restarted daemon adopts the gate, the responder serves,
    // and both alerts resolve.
    gate.start().unwrap();
    prom.wait_for("the alerts resolved", SEE, |p| {
        Ok(p.alerts("MX6GateResponderDown")?.is_empty()
            && p.alerts("MX6GateDaemonDown")?.is_empty())
    })
    .unwrap();
    assert_eq!(prom.values("mx6gate_responder_up").unwrap(), [1.0]);
    gate.stop().unwrap();
}
