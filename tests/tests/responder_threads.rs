//! `[responder] threads`: the responder on a multi-thread runtime of its
//! own, in the real daemon, behind real sk_lookup and real TCP in
//! namespaces. The caps hold exactly (the library suites responder_hostile
//! and responder_protocol already run the responder on two workers; this is
//! the daemon's wiring), a reload switches the runtime in both directions
//! on the same socket, and SIGTERM still ends the daemon at once.
use std::{
    net::{IpAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use mx6gate_tests::{gate::GateUnderTest, wait::wait_until, *};

/// Upper bound for a connection that must succeed, and for its banner.
const CONNECTS: Duration = Duration::from_secs(3);
/// For the daemon to act on a reload or a signal, on a loaded machine.
const NOTICES: Duration = Duration::from_secs(20);
/// converse needs a code other than 421 (which closes the channel).
const DEFER_GREETING: &str = "450 4.7.0";
const OVER_CAP: &str = "too many connections";
/// The name the responder's runtime gives its workers.
const WORKER_NAME: &str = "mx6gate-resp";
const RESTARTED: &str = "responder restarted with the new settings";

/// A connection from the stranger to the gateway's port 25 and its first
/// line (the stream kept: in `converse` mode it holds a responder slot).
fn connect(topo: &Topology) -> (TcpStream, String) {
    let s = connect_from(
        &topo.sender,
        IpAddr::V6(STRANGER_SRC),
        Topology::gw_v6(25),
        CONNECTS,
    )
    .expect_connected("the stranger to the gateway's port 25");
    let line = read_banner(&s, CONNECTS).unwrap_or_else(|e| format!("no banner: {e:#}"));
    (s, line)
}

/// The `mx6gate run` process: the spawned pid, or its mx6gate child when
/// the pid is a wrapper that forked.
fn daemon_pid(spawned: u32) -> u32 {
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    if comm(&spawned.to_string()).trim() == "mx6gate" {
        return spawned;
    }
    let children = std::fs::read_to_string(format!("/proc/{spawned}/task/{spawned}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .find(|c| comm(c).trim() == "mx6gate")
        .and_then(|c| c.parse().ok())
        .unwrap_or(spawned)
}

/// Threads of `pid` named like the responder's workers.
fn responder_workers(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == WORKER_NAME)
        })
        .count()
}

/// Rewrite the `threads = ` line of the daemon's config and reload.
fn reload_with_threads(gate: &GateUnderTest, threads: u16) {
    let cfg: &Path = &gate.config;
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains("threads = "), "{text}");
    let new: String = text
        .lines()
        .map(|l| {
            if l.starts_with("threads = ") {
                format!("threads = {threads}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(cfg, new).unwrap();
    let before = gate.log().matches(RESTARTED).count();
    gate.hup();
    assert!(
        gate.wait_log(RESTARTED, before, NOTICES),
        "no responder restart after the reload to threads = {threads}:\n{}",
        gate.log()
    );
}

#[test]
fn a_multi_thread_responder_keeps_its_caps_reloads_and_stops_at_once() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap();
    // converse: a greeted client keeps its slot until it leaves (or the
    // idle timeout, 10 s, far beyond this test's holding).
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "defer",
        "[defer]\nrepeat = \"defer\"\n[responder]\ngreeting = \"converse\"\ncode = 450\nmax_per_source = 3\nthreads = 2\n",
    )
    .unwrap();
    gate.start().unwrap();
    let pid = daemon_pid(gate.daemon_pid().expect("a daemon pid"));
    assert!(
        wait_until(NOTICES, || responder_workers(pid) == 2),
        "threads = 2: expected 2 {WORKER_NAME} threads, found {}",
        responder_workers(pid)
    );

    // The per-source cap, exactly: three served and held, the fourth over.
    let mut held = Vec::new();
    for i in 0..3 {
        let (s, line) = connect(&topo);
        assert!(line.starts_with(DEFER_GREETING), "connection {i}: {line}");
        assert!(!line.contains(OVER_CAP), "connection {i}: {line}");
        held.push(s);
    }
    let (_s, line) = connect(&topo);
    assert!(
        line.starts_with("421") && line.contains(OVER_CAP),
        "the fourth connection from one /64 with max_per_source = 3: {line}"
    );
    // A slot given back is a slot free again.
    drop(held.pop());
    let mut freed = String::new();
    assert!(
        wait_until(NOTICES, || {
            let (s, line) = connect(&topo);
            freed = line;
            let ok = !freed.contains(OVER_CAP);
            if ok {
                held.push(s);
            }
            ok
        }),
        "a closed connection's slot never came back: {freed}"
    );
    drop(held);

    // Reload to one thread (the daemon's runtime) and back to three.
    reload_with_threads(&gate, 1);
    assert!(
        wait_until(NOTICES, || responder_workers(pid) == 0),
        "threads = 1: {} {WORKER_NAME} threads still there",
        responder_workers(pid)
    );
    let (_s, line) = connect(&topo);
    assert!(line.starts_with(DEFER_GREETING), "threads = 1: {line}");
    reload_with_threads(&gate, 3);
    assert!(
        wait_until(NOTICES, || responder_workers(pid) == 3),
        "threads = 3: expected 3 {WORKER_NAME} threads, found {}",
        responder_workers(pid)
    );
    let (held_one, line) = connect(&topo);
    assert!(line.starts_with(DEFER_GREETING), "threads = 3: {line}");

    // SIGTERM with a session open on the responder's runtime: the daemon
    // ends within the bound the big-store test gives it.
    let t = Instant::now();
    gate.stop().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    drop(held_one);
}
