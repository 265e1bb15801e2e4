//! The built .deb, without installing it: lintian finds no error or
//! warning; the man pages are where `man` looks (mx6gate and its verbs in
//! section 8, mx6gate.toml in 5) and render without a groff warning; the
//! shipped Prometheus rules pass their promtool tests as installed.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mx6gate_tests::{cmd, require_programs};

/// $MX6GATE_DEB (set by `cargo xtask test`), else target/debian's newest.
fn deb_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MX6GATE_DEB") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/debian");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no .deb in {}: run `cargo xtask deb`", dir.display()))
}

fn run(mut c: Command, what: &str, timeout: Duration) -> (bool, String) {
    c.env("LC_ALL", "C.UTF-8");
    let out = cmd::output_with_timeout(c, what, timeout).unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The package's files, unpacked into a temporary directory.
fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(deb_path()).arg(dir.path());
    let (ok, text) = run(c, "dpkg-deb -x", Duration::from_secs(60));
    assert!(ok, "dpkg-deb -x: {text}");
    dir
}

#[test]
fn lintian_finds_no_error_or_warning() {
    if !require_programs(&["lintian"]) {
        return;
    }
    let mut c = Command::new("lintian");
    // Errors and warnings fail; the informational tags are printed.
    c.args(["--fail-on", "error,warning", "--info", "--display-info"])
        .arg(deb_path());
    let (ok, text) = run(c, "lintian", Duration::from_secs(300));
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(ok && tags.is_empty(), "lintian: {text}");
}

#[test]
fn man_pages_are_installed_by_section_and_render_cleanly() {
    if !require_programs(&["man", "dpkg-deb"]) {
        return;
    }
    let root = unpacked();
    let man = root.path().join("usr/share/man");
    let mut pages = Vec::new();
    for section in ["man5", "man8"] {
        for e in std::fs::read_dir(man.join(section)).unwrap() {
            pages.push(e.unwrap().path());
        }
    }
    pages.sort();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.strip_prefix(&man).unwrap().display().to_string())
        .collect();
    for want in [
        "man8/mx6gate.8.gz",
        "man8/mx6gate-run.8.gz",
        "man8/mx6gate-partner-add.8.gz",
        "man8/mx6gate-check.8.gz",
        "man8/mx6gate-doctor.8.gz",
        "man8/mx6gate-top.8.gz",
        "man5/mx6gate.toml.5.gz",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(!man.join("man1").exists(), "nothing in section 1 any more");
    for p in &pages {
        let mut c = Command::new("man");
        c.args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(p)
            .env("MANWIDTH", "80");
        let out = cmd::output_with_timeout(c, "man --warnings", Duration::from_secs(60)).unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "{}: {warnings}",
            p.display()
        );
    }
    // The config page has an entry per key of the example it is made from.
    let mut c = Command::new("man");
    c.arg("-l")
        .arg(man.join("man5/mx6gate.toml.5.gz"))
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0");
    let (ok, text) = run(c, "man mx6gate.toml.5", Duration::from_secs(60));
    assert!(ok, "{text}");
    let text = plain(&text);
    for entry in [
        "interfaces = [\"eth0\"]",
        "mode = \"monitor\"",
        "allow_entries = 65536",
        "down_policy = \"pass\"",
        "listen = \"127.0.0.1:9421\"",
        "[responder] TABLE",
        "PARTNER FILES",
    ] {
        assert!(
            text.contains(entry),
            "mx6gate.toml(5) lacks {entry:?}:\n{text}"
        );
    }
}

/// `man`'s output without its overstrike bold and underline (`c\bc`, `_\bc`).
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn shipped_rules_pass_their_tests_where_installed() {
    if !require_programs(&["promtool", "dpkg-deb"]) {
        return;
    }
    let root = unpacked();
    let prom = root.path().join("usr/share/mx6gate/prometheus");
    let mut tests: Vec<PathBuf> = std::fs::read_dir(prom.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    tests.sort();
    assert!(tests.len() >= 3, "{tests:?}");
    let mut c = Command::new("promtool");
    c.args(["test", "rules"]).args(&tests);
    let (ok, text) = run(c, "promtool test rules", Duration::from_secs(120));
    assert!(ok, "{text}");
    assert!(root
        .path()
        .join("usr/share/mx6gate/grafana/mx6gate.json")
        .is_file());
}
