//! Smoke test of `cargo xtask bench-responder --quick`: it runs, and its
//! table shows greetings from both servers (the responder in defer mode and
//! Postfix's smtpd in monitor mode). No timing assertions: the numbers
//! depend on the machine.
//!
//! Runs the xtask binary (built here with `cargo build -p xtask` if needed)
//! with the mx6gate binary the other privileged tests use and
//! `MX6GATE_BENCH_SKIP_BUILD=1`, so it measures rather than builds: the
//! quick variant takes ≈ 15 s. The time limits below also cover an
//! incremental rebuild of xtask.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mx6gate_tests::{cmd::output_with_timeout, require_root};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// target/debug/xtask, freshly built (cargo is a no-op when it is current).
fn xtask_bin() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(&root)
        .args(["build", "--quiet", "-p", "xtask"]);
    let out = output_with_timeout(c, "cargo build -p xtask", Duration::from_secs(600))
        .expect("building xtask");
    assert!(
        out.status.success(),
        "cargo build -p xtask failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.join("target/debug/xtask")
}

/// `greetings=` of the `bench-responder: server=<server> …` summary line.
fn greetings(stdout: &str, server: &str) -> Option<u64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("bench-responder: "))
        .find(|l| {
            l.split_whitespace()
                .any(|f| f == format!("server={server}"))
        })
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("greetings="))
                .and_then(|v| v.parse().ok())
        })
}

#[test]
fn quick_bench_greets_from_every_server() {
    if !require_root() {
        return;
    }
    let bin = xtask_bin();
    let mut c = Command::new(&bin);
    // The mx6gate binary the other privileged tests use ($MX6GATE_BIN, as
    // `cargo xtask test` sets it, else the newest under target/); the
    // bench's own rebuild is skipped to stay well under a minute.
    c.current_dir(workspace_root())
        .args(["bench-responder", "--quick"])
        .env("MX6GATE_BIN", mx6gate_tests::gate::mx6gate_bin())
        .env("MX6GATE_BENCH_SKIP_BUILD", "1");
    let out = output_with_timeout(c, "xtask bench-responder --quick", Duration::from_secs(600))
        .expect("running xtask bench-responder --quick");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-responder --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The table: a header and a row per server.
    assert!(
        stdout.contains("| N clients | server | greetings/s |"),
        "no results table in:\n{stdout}"
    );
    assert!(
        stdout.contains("| 10 | responder (mx6gate defer) |"),
        "no responder row in:\n{stdout}"
    );
    assert!(
        stdout.contains("| 10 | Postfix smtpd (limit 100) |"),
        "no Postfix row in:\n{stdout}"
    );
    assert!(
        stdout.contains("| 10 | Postfix postscreen (denylist, drop) |"),
        "no postscreen row in:\n{stdout}"
    );
    assert!(
        stdout.contains("| 10 | responder, 2 threads (mx6gate defer) |"),
        "no two-thread responder row in:\n{stdout}"
    );
    for server in ["responder", "postfix", "postscreen", "responder-2t"] {
        let n = greetings(&stdout, server)
            .unwrap_or_else(|| panic!("no summary line for {server} in:\n{stdout}"));
        assert!(n > 0, "{server}: no greetings at all:\n{stdout}");
    }
    let report = workspace_root().join("target/bench-responder-quick.md");
    let md = std::fs::read_to_string(&report).expect("the quick report");
    assert!(md.contains("## Results"), "{md}");
}
