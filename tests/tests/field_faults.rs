//! Field faults (issue 10): what an operator, a config-management run or
//! another process may do to the config, the partners directory, the
//! state dir or the pins, against the real binary, real XDP and sk_lookup
//! and real TCP in namespaces. For each, the gate either keeps the last
//! good policy and says so, or applies the new one whole — never
//! something in between, never silently, never by blocking the daemon.
//!
//! Each test here failed against the controller before issue 10 (the
//! fault it injects opened a policy hole, hung the daemon or was silent).
//! Deadlines are generous (a loaded 2-core machine passes); where a test
//! must show that something does *not* happen it gives it a bounded time.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use mx6gate_tests::{
    cmd::out_str,
    gate::{mx6gate_bin, remove_pins, GateUnderTest},
    wait::wait_until,
    *,
};

/// Upper bound for a connection that must succeed, and for its banner.
const CONNECTS: Duration = Duration::from_secs(3);
/// How long a SYN that must be dropped is given to (not) connect.
const DROPPED: Duration = Duration::from_millis(1000);
/// The daemon polls the store and its pins every 500 ms: what it must
/// notice, it notices well within this.
const NOTICES: Duration = Duration::from_secs(10);
/// A CLI verb that must not block.
const ANSWERS: Duration = Duration::from_secs(10);

const MTA_GREETING: &str = "220 test";
const DEFER_GREETING: &str = "421 4.7.0";
/// Defer mode that answers every connection with the banner (not
/// explain-then-reset): these tests ask the responder again and again.
const BANNER_EVERY_TIME: &str = "[defer]\nrepeat = \"defer\"\n";

fn smtp6() -> SocketAddr {
    Topology::gw_v6(25)
}

/// The first line `src` gets from the gateway's port 25, or what happened
/// instead ("refused", "timed out", "no banner: …").
fn greeting(topo: &Topology, src: std::net::Ipv6Addr, timeout: Duration) -> String {
    match connect_from(&topo.sender, IpAddr::V6(src), smtp6(), timeout) {
        ConnectOutcome::Connected(s) => match read_banner(&s, timeout) {
            Ok(b) => b,
            Err(e) => format!("no banner: {e:#}"),
        },
        other => other.kind().to_string(),
    }
}

fn mta(topo: &Topology) -> Listener {
    Listener::start(&topo.gw, "[::]:25".parse().unwrap()).unwrap()
}

/// A gate in `mode` with the lab's partner, started.
fn started(topo: &Topology, mode: &str, extra: &str) -> GateUnderTest {
    let mut g = GateUnderTest::new(&topo.gw, &topo.gw_if, mode, extra).unwrap();
    g.ok(&["partner", "add", "acme", PARTNER_NET]).unwrap();
    g.start().unwrap();
    g
}

/// GET /metrics from inside the gateway namespace: sample → value.
fn scrape(topo: &Topology, addr: &str) -> BTreeMap<String, f64> {
    mx6gate_tests::scrape::scrape_at(&topo.gw, addr)
}

fn write_file(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn partner_file(name: &str, prefixes: &[&str]) -> String {
    let list: Vec<String> = prefixes.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[[partner]]\nname = \"{name}\"\nprefixes = [{}]\n",
        list.join(", ")
    )
}

// ------------------------------------------------------------ item 1

/// A second `run` with the same pin_path (its own config, state and
/// partners) used to take the pinned gate over: the two daemons rewrote
/// each other's allowlist at every resync. Now the first one owns it.
#[test]
fn a_second_daemon_on_the_same_pinned_gate_is_refused() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let a = started(&topo, "drop", "");
    let pid_a = a.daemon_pid().unwrap();
    // Its own responder and metrics addresses, so only the gate is shared.
    let mut b = GateUnderTest::with_pin_path(
        &topo.gw,
        &topo.gw_if,
        "drop",
        "[responder]\nlisten = \"[::1]:10422\"\n[metrics]\nlisten = \"127.0.0.1:9422\"\n",
        &a.pin_path,
    )
    .unwrap();
    // B's store would let the stranger in and shut the partner out.
    write_file(
        &b.partners_dir().join("other.toml"),
        &partner_file("other", &[STRANGER_NET]),
    );
    let err = format!("{:#}", b.start().unwrap_err());
    assert!(
        err.contains("already run by another mx6gate daemon")
            && err.contains(&format!("pid {pid_a}")),
        "second daemon: {err}"
    );
    // B's CLI may not change A's gate either.
    let out = b
        .cli(&["partner", "add", "more", "2001:db8:78::/48"])
        .unwrap();
    let (_, stderr) = out_str(&out);
    assert!(!out.status.success(), "B's partner add went through");
    assert!(stderr.contains("run by another mx6gate daemon"), "{stderr}");
    let out = b.cli(&["mode", "monitor"]).unwrap();
    assert!(!out.status.success(), "B's mode went through");
    // A's policy holds, through several of A's resync polls.
    for _ in 0..3 {
        let g = greeting(&topo, PARTNER_SRC, CONNECTS);
        assert!(g.starts_with(MTA_GREETING), "partner: {g}");
        let o = connect_from(&topo.sender, IpAddr::V6(STRANGER_SRC), smtp6(), DROPPED);
        assert!(o.is_timed_out(), "stranger: {o}");
    }
    // B's status tells whose gate it is.
    let s = b.ok(&["status"]).unwrap();
    assert!(s.contains("owned by another mx6gate daemon"), "{s}");
    drop(b);
    drop(a);
}

/// The responder socket gone from the RESPONDER sockmap (as after a second
/// daemon that overwrote it exited) used to leave "responder: up" while
/// defer-mode strangers reached the MTA until a restart. The daemon now
/// checks the sockmap every tick and registers its socket again.
#[test]
fn a_responder_socket_lost_from_the_sockmap_is_registered_again() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let gate = started(&topo, "defer", BANNER_EVERY_TIME);
    let g = greeting(&topo, STRANGER_SRC, CONNECTS);
    assert!(g.starts_with(DEFER_GREETING), "stranger before: {g}");

    let data = aya::maps::MapData::from_pin(gate.pin_path.join("maps/RESPONDER")).unwrap();
    let mut sockmap: aya::maps::SockMap<_> = aya::maps::Map::from_map_data(data)
        .unwrap()
        .try_into()
        .unwrap();
    sockmap.clear_index(&0).unwrap();

    assert!(
        wait_until(NOTICES, || greeting(&topo, STRANGER_SRC, CONNECTS)
            .starts_with(DEFER_GREETING)),
        "the stranger never got the responder again:\n{}",
        gate.log()
    );
    assert!(
        gate.log().contains("had lost this daemon's socket"),
        "{}",
        gate.log()
    );
    let m = scrape(&topo, "127.0.0.1:9421");
    assert!(
        m.get("mx6gate_repairs_total{what=\"responder_socket\"}")
            .is_some_and(|v| *v >= 1.0),
        "{m:?}"
    );
}

// ------------------------------------------------------------ item 2

/// `partner remove` killed after writing the store but before the maps
/// used to leave a removed prefix allowed, and re-running the remove
/// failed and changed nothing. Now every changing command ends with the
/// maps made from the whole store, and `status`'s advice heals it.
#[test]
fn an_edit_killed_between_store_and_maps_is_healed_by_the_next_command() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let _pass = xdp_pass::attach_xdp_pass(&topo.sender, &topo.sender_if).unwrap();
    let mut gate = GateUnderTest::new(&topo.gw, &topo.gw_if, "reset", "").unwrap();
    gate.ok(&["partner", "add", "acme", PARTNER_NET, STRANGER_NET])
        .unwrap();
    gate.start().unwrap();
    gate.stop().unwrap();
    let file = gate.partners_dir().join("acme.toml");
    let stranger_in = |what: &str| {
        let g = greeting(&topo, STRANGER_SRC, CONNECTS);
        assert!(g.starts_with(MTA_GREETING), "{what}: stranger got {g}");
    };
    let stranger_out = |what: &str| {
        let o = connect_from(&topo.sender, IpAddr::V6(STRANGER_SRC), smtp6(), CONNECTS);
        assert!(o.is_refused(), "{what}: stranger got {o}");
    };
    stranger_in("allowed at first");

    // What a killed `partner remove acme STRANGER_NET` leaves: the store
    // written, the maps not.
    write_file(&file, &partner_file("acme", &[PARTNER_NET]));
    stranger_in("maps not yet updated");
    let s = gate.ok(&["status"]).unwrap();
    assert!(
        s.contains("MISMATCH") && s.contains("`mx6gate sync`"),
        "status does not say how to heal:\n{s}"
    );
    // Re-running the same remove heals (and says it has no such prefix).
    let out = gate
        .cli(&["partner", "remove", "acme", STRANGER_NET])
        .unwrap();
    let (stdout, stderr) = out_str(&out);
    assert!(stderr.contains("has no prefix"), "{stdout}{stderr}");
    assert!(stdout.contains("brought in step"), "{stdout}{stderr}");
    stranger_out("after re-running the remove");

    // A killed `partner add` the other way round; `mode` heals it.
    write_file(&file, &partner_file("acme", &[PARTNER_NET, STRANGER_NET]));
    stranger_out("maps not yet updated");
    let out = gate.ok(&["mode", "reset"]).unwrap();
    assert!(out.contains("brought in step"), "{out}");
    stranger_in("after `mode`");

    // And the advice `status` gives: `mx6gate sync`.
    write_file(&file, &partner_file("acme", &[PARTNER_NET]));
    let out = gate.ok(&["sync"]).unwrap();
    assert!(out.contains("synced"), "{out}");
    stranger_out("after `sync`");
    let s = gate.ok(&["status"]).unwrap();
    assert!(!s.contains("MISMATCH"), "{s}");
}

// ------------------------------------------------------------ item 3

/// The partners directory vanishing (an unmounted volume, a directory swap
/// midway) used to be read as "no partners": every partner turned away,
/// logged at INFO. Now it is a refused store and the allowlist stays.
#[test]
fn a_vanished_or_emptied_partners_dir_keeps_the_allowlist() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let gate = started(&topo, "drop", "");
    let dir = gate.partners_dir();
    let away = dir.with_extension("away");
    let partner_in = |what: &str| {
        let g = greeting(&topo, PARTNER_SRC, CONNECTS);
        assert!(g.starts_with(MTA_GREETING), "{what}: partner got {g}");
    };
    let refusals = || gate.log().matches("partner store refused").count();
    let applied = || gate.log().matches("partner store applied again").count();

    for (what, make_empty) in [("directory gone", false), ("directory emptied", true)] {
        let (r, a) = (refusals(), applied());
        std::fs::rename(&dir, &away).unwrap();
        if make_empty {
            std::fs::create_dir(&dir).unwrap();
        }
        assert!(
            gate.wait_log("partner store refused", r, NOTICES),
            "{what}: not refused:\n{}",
            gate.log()
        );
        partner_in(what);
        let s = gate.ok(&["status"]).unwrap();
        assert!(
            s.contains("REFUSED") || s.contains("vanished store"),
            "{what}: status:\n{s}"
        );
        let m = scrape(&topo, "127.0.0.1:9421");
        assert_eq!(m.get("mx6gate_partner_store_refused"), Some(&1.0), "{what}");
        if make_empty {
            std::fs::remove_dir(&dir).unwrap();
        }
        std::fs::rename(&away, &dir).unwrap();
        assert!(
            gate.wait_log("partner store applied again", a, NOTICES),
            "{what}: not applied again:\n{}",
            gate.log()
        );
        partner_in(&format!("{what}, restored"));
    }

    // "No partners" said on purpose: an empty file in an emptied directory.
    std::fs::rename(&dir, &away).unwrap();
    std::fs::create_dir(&dir).unwrap();
    write_file(&dir.join("none.toml"), "");
    assert!(
        wait_until(NOTICES, || connect_from(
            &topo.sender,
            IpAddr::V6(PARTNER_SRC),
            smtp6(),
            DROPPED
        )
        .is_timed_out()),
        "an explicit empty store was not applied:\n{}",
        gate.log()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    assert!(
        wait_until(NOTICES, || greeting(&topo, PARTNER_SRC, CONNECTS)
            .starts_with(MTA_GREETING)),
        "the partners were not applied again:\n{}",
        gate.log()
    );

    // At start, with nothing pinned to keep: an enforcing mode refuses.
    let mut fresh = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "drop",
        "[responder]\nlisten = \"[::1]:10422\"\n[metrics]\nlisten = \"127.0.0.1:9422\"\n",
    )
    .unwrap();
    std::fs::remove_dir(fresh.partners_dir()).unwrap();
    let err = format!("{:#}", fresh.start().unwrap_err());
    assert!(
        err.contains("does not exist") && err.contains("turn every IPv6 sender away"),
        "{err}"
    );
    assert!(!fresh.pin_path.exists(), "a refused start left pins");
}

// ------------------------------------------------------------ item 4

/// A FIFO named `x.toml` in partners_dir used to block the daemon
/// (responder, metrics, signals) and every command reading the store.
#[test]
fn a_fifo_in_the_partners_dir_blocks_nothing() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let gate = started(&topo, "defer", BANNER_EVERY_TIME);
    let fifo = gate.partners_dir().join("x.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let skipped = gate.log().matches("not a regular file").count();
    assert!(
        gate.wait_log("not a regular file", skipped, NOTICES),
        "the daemon said nothing about the FIFO:\n{}",
        gate.log()
    );
    // The responder, commands, the metrics and signals all answer.
    let g = greeting(&topo, STRANGER_SRC, CONNECTS);
    assert!(g.starts_with(DEFER_GREETING), "stranger: {g}");
    let g = greeting(&topo, PARTNER_SRC, CONNECTS);
    assert!(g.starts_with(MTA_GREETING), "partner: {g}");
    for args in [
        &["status"][..],
        &["partner", "list"],
        &["check", "2001:db8:1::25"],
    ] {
        let out = gate.cli_within(args, ANSWERS).unwrap();
        let (stdout, stderr) = out_str(&out);
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        if args[0] == "status" {
            assert!(
                stdout.contains("x.toml") && stdout.contains("a FIFO"),
                "{stdout}"
            );
        }
    }
    let m = scrape(&topo, "127.0.0.1:9421");
    assert_eq!(m.get("mx6gate_partner_store_skipped_files"), Some(&1.0));
    let reloads = gate.log().matches("reloaded").count();
    gate.hup();
    assert!(
        gate.wait_log("reloaded", reloads, NOTICES),
        "{}",
        gate.log()
    );
    let out = gate.cli_within(&["mode", "monitor"], ANSWERS).unwrap();
    assert!(out.status.success(), "{:?}", out_str(&out));
    std::fs::remove_file(&fifo).unwrap();
}

// ------------------------------------------------------------ item 5

/// One partner with a few hundred thousand prefixes used to load in
/// quadratic time on the daemon's only thread: no banner, no SIGTERM for
/// tens of seconds. The store now loads on the sync worker, linearly.
#[test]
fn a_big_store_never_stalls_the_responder_or_signals() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let mut gate = started(
        &topo,
        "defer",
        &format!("{BANNER_EVERY_TIME}[maps]\nallow_entries = 400000\n"),
    );
    // 300,000 /64s of 2001:db8:1000::/36, in one partner.
    let n = 300_000u32;
    let mut text = String::with_capacity(n as usize * 32);
    text.push_str("[[partner]]\nname = \"big\"\nprefixes = [\n");
    for i in 0..n {
        text.push_str(&format!(
            "\"2001:db8:{:x}:{:x}::/64\",\n",
            0x1000 + (i >> 16),
            i & 0xffff
        ));
    }
    text.push_str("]\n");
    let tmp = gate.dir.path().join("big.toml");
    write_file(&tmp, &text);
    let synced = gate.log().matches("allowlist synced").count();
    std::fs::rename(&tmp, gate.partners_dir().join("big.toml")).unwrap();
    // While it loads and syncs: the responder answers every time.
    let start = Instant::now();
    let mut answered = 0;
    while gate.log().matches("allowlist synced").count() == synced {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the big store was never applied:\n{}",
            gate.log()
        );
        let g = greeting(&topo, STRANGER_SRC, CONNECTS);
        assert!(
            g.starts_with(DEFER_GREETING),
            "the responder stalled while the store loaded ({:?} in): {g}",
            start.elapsed()
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{answered} banners while the store loaded ({:?})",
        start.elapsed()
    );
    let out = gate.ok(&["check", "2001:db8:1002:5678::1"]).unwrap();
    assert!(out.contains("partner big"), "{out}");
    // SIGTERM in the middle of the next big load: the daemon exits at once.
    text.push_str(&partner_file("more", &["2001:db8:77::/48"]));
    write_file(&tmp, &text);
    std::fs::rename(&tmp, gate.partners_dir().join("big.toml")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    gate.stop().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "SIGTERM took {:?}",
        t.elapsed()
    );
}

// ------------------------------------------------------------ item 6

/// A malformed file used to make `mode monitor` (the one-command
/// rollback), `status`, `check` and `partner list` fail, and no metric
/// moved. Now they all work and say the store is refused.
#[test]
fn a_bad_file_leaves_rollback_and_diagnosis_working() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let gate = started(&topo, "drop", "");
    let broken = gate.partners_dir().join("zz-broken.toml");
    // (Any log line about the store: the daemon noticed the file.)
    let r = gate.log().matches("partner store").count();
    write_file(&broken, "[[partner]\nname = \"half\n");
    assert!(gate.wait_log("partner store", r, NOTICES), "{}", gate.log());
    let m = scrape(&topo, "127.0.0.1:9421");
    assert_eq!(m.get("mx6gate_partner_store_refused"), Some(&1.0));

    let s = gate.ok(&["status"]).unwrap();
    assert!(
        s.contains("REFUSED") && s.contains("zz-broken.toml") && s.contains("XDP (SYN packets"),
        "{s}"
    );
    let l = gate.ok(&["partner", "list"]).unwrap();
    assert!(l.contains("REFUSED") && l.contains("acme"), "{l}");
    let c = gate.ok(&["check", &PARTNER_SRC.to_string()]).unwrap();
    assert!(c.contains("partner acme") && c.contains("refused"), "{c}");
    // Rollback: monitor mode lets the stranger in at once.
    let out = gate.ok(&["mode", "monitor"]).unwrap();
    assert!(
        out.contains("mode: monitor") && out.contains("refused"),
        "{out}"
    );
    let g = greeting(&topo, STRANGER_SRC, CONNECTS);
    assert!(g.starts_with(MTA_GREETING), "stranger after rollback: {g}");
    let g = greeting(&topo, PARTNER_SRC, CONNECTS);
    assert!(g.starts_with(MTA_GREETING), "partner: {g}");

    let a = gate.log().matches("partner store applied again").count();
    std::fs::remove_file(&broken).unwrap();
    assert!(gate.wait_log("partner store applied again", a, NOTICES));
    let m = scrape(&topo, "127.0.0.1:9421");
    assert_eq!(m.get("mx6gate_partner_store_refused"), Some(&0.0));
}

// ------------------------------------------------------------ item 7

/// Removing the pin directory by hand used to end enforcement silently
/// while the daemon went on syncing maps nothing used. The daemon holds
/// its links, so enforcement goes on, and it pins everything again.
#[test]
fn pins_removed_by_hand_keep_enforcing_and_are_pinned_again() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    let gate = started(&topo, "drop", "");
    let link = gate.pin_path.join(format!("links/xdp@{}", topo.gw_if));
    assert!(link.exists());
    remove_pins(&gate.pin_path);
    assert!(!gate.pin_path.exists());
    let o = connect_from(&topo.sender, IpAddr::V6(STRANGER_SRC), smtp6(), DROPPED);
    assert!(o.is_timed_out(), "stranger right after the pins went: {o}");
    assert!(
        wait_until(NOTICES, || link.exists()
            && gate.pin_path.join("links/sk_lookup").exists()
            && gate.pin_path.join("maps/CONFIG").exists()),
        "pins not restored:\n{}",
        gate.log()
    );
    assert!(gate.log().contains("pinned again"), "{}", gate.log());
    let s = gate.ok(&["status"]).unwrap();
    assert!(s.contains("gate:        loaded"), "{s}");
    let d = gate.cli(&["doctor"]).unwrap();
    let (stdout, _) = out_str(&d);
    assert!(!stdout.contains("start the daemon"), "{stdout}");
    // Commands reach the gate again, and it enforces what they say.
    gate.ok(&["partner", "add", "late", STRANGER_NET]).unwrap();
    let g = greeting(&topo, STRANGER_SRC, CONNECTS);
    assert!(g.starts_with(MTA_GREETING), "stranger made partner: {g}");
    let g = greeting(&topo, PARTNER_SRC, CONNECTS);
    assert!(g.starts_with(MTA_GREETING), "partner: {g}");
    let m = scrape(&topo, "127.0.0.1:9421");
    assert!(
        m.get("mx6gate_repairs_total{what=\"pins\"}")
            .is_some_and(|v| *v >= 1.0),
        "{m:?}"
    );
}

// ------------------------------------------------------------ item 8

/// A config and store of its own, no gate loaded (no root needed).
struct Offline {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Offline {
    fn new(extra: &str) -> Offline {
        let dir = tempfile::Builder::new()
            .prefix("mx6gate-offline")
            .tempdir()
            .unwrap();
        let config = dir.path().join("mx6gate.toml");
        write_file(
            &config,
            &format!(
                "pin_path = \"/sys/fs/bpf/{}{}-offline-none\"\npartners_dir = \"partners.d\"\nstate_dir = \"state\"\n{extra}",
                mx6gate_tests::cleanup::NS_PREFIX,
                std::process::id()
            ),
        );
        std::fs::create_dir(dir.path().join("partners.d")).unwrap();
        Offline { dir, config }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut c = std::process::Command::new(mx6gate_bin());
        c.arg("--config").arg(&self.config).args(args);
        cmd::output_with_timeout(c, &args.join(" "), ANSWERS).unwrap()
    }

    fn store(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.dir.path().join("partners.d"))
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// `::/1` + `8000::/1` (the whole Internet), `2000::/3`, link-local,
/// multicast, loopback, unspecified and NAT64 prefixes used to be
/// accepted silently.
#[test]
fn prefixes_that_allow_far_too_much_or_make_no_sense_are_refused() {
    let o = Offline::new("");
    o.cli(&["partner", "add", "good", "2001:db8:1::/48"]);
    let before = o.store();
    // (the prefixes, the one the error names, why)
    for (prefixes, bad, why) in [
        (&["::/1", "8000::/1"][..], "::/1", "covers ::/128"),
        (&["8000::/1"], "8000::/1", "covers fe80::/10"),
        (
            &["2001:db8:5::/48", "2000::/3"],
            "2000::/3",
            "shorter than /16",
        ),
        (&["fe80::/10"], "fe80::/10", "link-local"),
        (&["ff00::/8"], "ff00::/8", "multicast"),
        (&["::1"], "::1", "loopback"),
        (&["::"], "::", "unspecified"),
        (&["64:ff9b::/96"], "64:ff9b::/96", "NAT64"),
    ] {
        let mut args = vec!["partner", "add", "x"];
        args.extend_from_slice(prefixes);
        let out = o.cli(&args);
        let (stdout, stderr) = out_str(&out);
        assert!(!out.status.success(), "{prefixes:?} accepted: {stdout}");
        assert!(
            stderr.contains(&format!("{bad:?}")) && stderr.contains(why),
            "{prefixes:?}: {stderr}"
        );
        assert_eq!(o.store(), before, "{prefixes:?} changed the store");
    }
    // Very short prefixes with the explicit flag: accepted and remembered.
    let out = o.cli(&[
        "partner",
        "add",
        "region",
        "2400::/12",
        "--allow-short-prefix",
    ]);
    assert!(out.status.success(), "{:?}", out_str(&out));
    assert!(o.store()["region.toml"].contains("allow_short_prefixes = true"));
    // The same rules for files dropped into the store.
    write_file(
        &o.dir.path().join("partners.d/cm.toml"),
        &partner_file("cm", &["fe80::/10"]),
    );
    let out = o.cli(&["partner", "list"]);
    let (stdout, _) = out_str(&out);
    assert!(
        stdout.contains("REFUSED") && stdout.contains("link-local"),
        "{stdout}"
    );
}

// ------------------------------------------------------------ item 9

/// The smaller faults without a gate: a closed pipe, IPv4-mapped checks,
/// a pin path off bpffs, non-mail ports, a missing interface.
#[test]
fn smaller_faults_without_a_gate() {
    let o = Offline::new("ports = [25, 22]\n");
    // `status | head`: a reader that went away is not a panic.
    let (r, w) = {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    };
    unsafe { libc::close(r) };
    let mut c = std::process::Command::new(mx6gate_bin());
    c.arg("--config").arg(&o.config).arg("status");
    use std::os::fd::FromRawFd;
    c.stdout(unsafe { Stdio::from_raw_fd(w) })
        .stderr(Stdio::piped());
    let out = c.output().unwrap();
    let (_, stderr) = out_str(&out);
    assert!(
        !stderr.contains("panicked"),
        "status into a closed pipe: {stderr}"
    );

    let out = o.cli(&["check", "::ffff:198.51.100.2"]);
    let (stdout, _) = out_str(&out);
    assert!(
        out.status.success() && stdout.contains("IPv4 is never gated"),
        "{stdout}"
    );

    let out = o.cli(&["status"]);
    let (stdout, _) = out_str(&out);
    assert!(
        stdout.contains("WARNING")
            && stdout.contains("22 (ssh)")
            && stdout.contains("not a mail port"),
        "{stdout}"
    );
    assert!(!stdout.contains("keeps working"), "no gate, yet: {stdout}");
}

/// The smaller faults that need a gate (or `run`).
#[test]
fn smaller_faults_with_a_gate() {
    if !require_root() {
        return;
    }
    let topo = Topology::new().unwrap();
    let _mta = mta(&topo);
    // A refused store writes no partner ids.
    let mut gate = GateUnderTest::new(
        &topo.gw,
        &topo.gw_if,
        "drop",
        "[maps]\nallow_entries = 16\n",
    )
    .unwrap();
    gate.ok(&["partner", "add", "acme", PARTNER_NET]).unwrap();
    gate.start().unwrap();
    let ids = gate.state_dir().join("partner-ids.toml");
    let ids_before = std::fs::read_to_string(&ids).unwrap();
    // 40 more partners, a /48 each: 40 prefixes do not fit maps of 16.
    let mut text = String::new();
    for i in 0..40u32 {
        text.push_str(&partner_file(
            &format!("p{i}"),
            &[&format!("2001:db8:a{i:02x}::/48")],
        ));
    }
    let r = gate.log().matches("not applied").count();
    write_file(&gate.partners_dir().join("many.toml"), &text);
    assert!(gate.wait_log("not applied", r, NOTICES), "{}", gate.log());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        std::fs::read_to_string(&ids).unwrap(),
        ids_before,
        "a refused store wrote partner ids"
    );
    std::fs::remove_file(gate.partners_dir().join("many.toml")).unwrap();

    // Temp files of a killed command are cleaned.
    let stale = ".acme.toml.tmp.2147483646.0";
    write_file(&gate.partners_dir().join(stale), "x");
    write_file(&gate.state_dir().join(".mode.tmp.2147483646.3"), "x");
    let out = gate.ok(&["sync"]).unwrap();
    assert!(out.contains("removed"), "{out}");
    assert!(!gate.partners_dir().join(stale).exists());
    assert!(!gate.state_dir().join(".mode.tmp.2147483646.3").exists());

    // A pending [maps] size is shown.
    let cfg = std::fs::read_to_string(&gate.config).unwrap();
    write_file(
        &gate.config,
        &cfg.replace("allow_entries = 16", "allow_entries = 4096"),
    );
    let s = gate.ok(&["status"]).unwrap();
    assert!(
        s.contains("PENDING") && s.contains("allow_entries 4096"),
        "{s}"
    );
    write_file(&gate.config, &cfg);

    // After detach, status no longer says the gate keeps working.
    gate.stop().unwrap();
    gate.ok(&["detach"]).unwrap();
    let s = gate.ok(&["status"]).unwrap();
    assert!(
        !s.contains("keeps working") && !s.contains("keeps enforcing"),
        "{s}"
    );

    // `run` with a pin path off bpffs: no advice to mount bpffs over /tmp.
    let off = GateUnderTest::with_pin_path(
        &topo.gw,
        &topo.gw_if,
        "monitor",
        "",
        &std::env::temp_dir().join("mx6gate-not-bpffs"),
    )
    .unwrap();
    let out = off.cli(&["run"]).unwrap();
    let (_, stderr) = out_str(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not on a bpf file system")
            && stderr.contains("/sys/fs/bpf")
            && !stderr.contains("mount -t bpf bpf /tmp"),
        "{stderr}"
    );
    // A missing interface: its error, without a wall of IPv4 warnings first.
    let out = off.cli(&["run", "--iface", "nosuch0"]).unwrap();
    let (_, stderr) = out_str(&out);
    assert!(stderr.contains("\"nosuch0\" does not exist"), "{stderr}");
    assert!(!stderr.contains("IPv4"), "{stderr}");
}
