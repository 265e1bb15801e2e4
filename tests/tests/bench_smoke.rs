//! The bench harness (`cargo xtask bench`) runs on tiny sizes and writes
//! its files. No timing is asserted: this only keeps the harness working.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

#[test]
fn bench_quick_runs_and_writes_its_files() {
    if !mx6gate_tests::require_root() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace");
    let out = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(["xtask", "bench", "--quick", "--out"])
        .arg(out.path())
        .spawn()
        .expect("starting `cargo xtask bench --quick`");
    // Bounded: building is incremental and the quick bench takes well under
    // a minute; give a cold build room too.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(900) {
            child.kill().ok();
            child.wait().ok();
            panic!("`cargo xtask bench --quick` still running after 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "`cargo xtask bench --quick` failed: {status}"
    );

    let md = std::fs::read_to_string(out.path().join("RESULTS.md")).expect("RESULTS.md written");
    for part in [
        "## Targets",
        "## 1. Per-packet cost",
        "## 2. On the wire",
        "## 3. Control plane",
        "## 4. Memory",
        "## 5. Older kernels' ways, on this kernel",
        "## 6. Partner store",
        "kernel.bpf_stats_enabled",
    ] {
        assert!(md.contains(part), "RESULTS.md lacks {part:?}:\n{md}");
    }
    let svg =
        std::fs::read_to_string(out.path().join("per-packet.svg")).expect("per-packet.svg written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polyline"), "the plot has no series");

    // Nothing left behind: no namespaces, no pins of the bench's.
    let leftovers: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("mx6bench-"))
                .filter(|n| {
                    n.split('-')
                        .nth(1)
                        .and_then(|p| p.parse::<u32>().ok())
                        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "bench pins left behind: {leftovers:?}"
    );
}
