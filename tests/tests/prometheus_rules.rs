//! The shipped alert and recording rules (packaging/prometheus/) and the
//! Grafana dashboard (packaging/grafana/), checked without a gate: Debian's
//! promtool lints the rules and runs their unit tests on synthetic series;
//! every alert has a test case, a severity and annotations; every
//! dashboard panel is well formed. tests/tests/prometheus_lab.rs runs them
//! against a real Prometheus scraping a real gate.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mx6gate_tests::{cmd, require_programs};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rules_path() -> PathBuf {
    root().join("packaging/prometheus/mx6gate.rules.yml")
}

fn rule_tests() -> Vec<PathBuf> {
    let dir = root().join("packaging/prometheus/tests");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *.test.yml in {}", dir.display());
    v
}

/// `- alert: NAME` entries of the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_string())
        .collect()
}

fn promtool(args: &[&str]) -> String {
    let mut c = Command::new("promtool");
    c.args(args);
    let out = cmd::output_with_timeout(
        c,
        &format!("promtool {}", args.join(" ")),
        Duration::from_secs(120),
    )
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
    text
}

#[test]
fn promtool_checks_the_rules() {
    if !require_programs(&["promtool"]) {
        return;
    }
    let text = promtool(&["check", "rules", rules_path().to_str().unwrap()]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_unit_tests_pass() {
    if !require_programs(&["promtool"]) {
        return;
    }
    let files = rule_tests();
    let mut args = vec!["test".to_string(), "rules".to_string()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = promtool(&args);
    assert_eq!(
        text.matches("SUCCESS").count(),
        files.len(),
        "every test file must pass: {text}"
    );
}

#[test]
fn every_alert_has_a_unit_test_severity_and_annotations() {
    let rules = std::fs::read_to_string(rules_path()).unwrap();
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 11, "{alerts:?}");
    let tests: String = rule_tests()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let unique: BTreeSet<&String> = alerts.iter().collect();
    assert_eq!(unique.len(), alerts.len(), "duplicate alert names");
    for a in &alerts {
        assert!(
            a.starts_with("MX6Gate"),
            "{a}: alert names start with MX6Gate"
        );
        assert!(
            tests.contains(&format!("alertname: {a}\n")),
            "alert {a} has no test case in packaging/prometheus/tests/"
        );
        // Its own block: from `- alert: NAME` to the next rule.
        let start = rules.find(&format!("- alert: {a}\n")).unwrap();
        let block = &rules[start..];
        let end = block[1..].find("\n      - ").map_or(block.len(), |i| i + 1);
        let block = &block[..end];
        assert!(
            ["severity: critical", "severity: warning", "severity: info"]
                .iter()
                .any(|s| block.contains(s)),
            "{a}: needs severity critical, warning or info:\n{block}"
        );
        for key in ["summary: ", "description: "] {
            assert!(block.contains(key), "{a}: no {key}annotation:\n{block}");
        }
    }
}

fn dashboard() -> Value {
    let p = root().join("packaging/grafana/mx6gate.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "mx6gate");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(
            !p["description"].as_str().unwrap_or("").is_empty(),
            "{title}: panels say what they show"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("mx6gate_"), "{title}: {expr}");
            // Every query follows the gateway picker.
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            queries += 1;
        }
    }
    // The panels the issue asks for, at least.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Would be turned away per minute (monitor)",
        "Turned away per minute, by action",
        "Partner SYNs per minute, by partner",
        "Map fill",
        "Responder connections",
    ] {
        assert!(titles.contains(&want), "no panel {want:?} in {titles:?}");
    }
    assert!(queries >= 15, "{queries}");
}
