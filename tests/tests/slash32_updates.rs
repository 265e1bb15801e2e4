//! The /32 table's update protocol under fire: one thread updates the
//! allowlist continuously — adds and removes of other prefixes in the very
//! /32 and /28 cell of a known partner prefix and a known stranger, the
//! partner's prefix moving between inline and LONG_PREFIXES, /32s going
//! crowded (trie) and back, prefixes moving between partners — through the
//! product's sync (`apply_allow_tracked`, and every few steps the full
//! read-back path), while other threads classify SYNs from the known
//! partner and the known stranger with BPF_PROG_TEST_RUN against the
//! loaded XDP program in drop mode. The partner must pass every time and
//! the stranger must never pass: an update may not open a window in
//! either direction (see mx6gate_common::allow::TableHeader).
use std::{
    collections::BTreeMap,
    net::Ipv6Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use ipnet::Ipv6Net;
use mx6gate::{config::Config, gate::Gate, maps::GateMaps};
use mx6gate_common::{GateConfig, Mode, XDP_PROGRAM};
use mx6gate_tests::packets::*;

const XDP_PASS: u32 = 2;
const XDP_DROP: u32 = 1;
/// Updates the writer makes (each waits one RCU grace period).
const UPDATES: u32 = 600;

fn net(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

/// The allowlist at step `i`: the known partner's /64 always (partner 1),
/// and around it, in its /32 and cell, prefixes that come and go.
fn set_at(i: u32) -> BTreeMap<Ipv6Net, u32> {
    let mut s = BTreeMap::new();
    // Moves between partners every other step.
    s.insert(net("2001:db8:100:1::/64"), 1 + (i / 2) % 2);
    let r = i % 8;
    if r & 1 == 1 {
        // Longer, inside the partner's /64, another partner: the /64 moves
        // from inline to LONG_PREFIXES and back.
        s.insert(net("2001:db8:100:1:8000::/65"), 3);
    }
    if r & 2 == 2 {
        // Longer still, elsewhere in the /32: takes the inline place.
        s.insert(net("2001:db8:100:2:1::/112"), 4);
    }
    if r & 4 == 4 {
        // Nine lengths under the /32: more than MAX_PROBES, so the /32
        // goes to the trie (USE_TRIE) and comes back.
        for len in [40u8, 44, 48, 52, 56, 60, 68, 72, 76] {
            let n = Ipv6Net::new("2001:db8:200::".parse().unwrap(), len)
                .unwrap()
                .trunc();
            s.insert(n, 5);
        }
    }
    // A few /32-level neighbours in the same cell come and go.
    for k in 0..(i % 5) {
        s.insert(
            Ipv6Net::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0x300 + k as u16, 0, 0, 0, 0, 0),
                48,
            )
            .unwrap(),
            6,
        );
    }
    s
}

const PARTNER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 1, 0, 0, 0, 0x25);
/// In the same /32 and cell, never inside any prefix of any step.
const STRANGER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 3, 0, 0, 0, 0x25);

#[test]
fn partner_passes_and_stranger_drops_throughout_updates() {
    if !mx6gate_tests::require_root() {
        return;
    }
    mx6gate_tests::ensure_bpffs().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        pin_path: format!("/sys/fs/bpf/mx6t-{}-slash32", std::process::id()).into(),
        state_dir: dir.path().join("state"),
        partners_dir: dir.path().join("partners.d"),
        ports: vec![25],
        ..Config::default()
    };
    let gate = Gate::load(&cfg).expect("load the object");
    let pins = scopeguard(cfg.pin_path.clone(), dir.path().join("state"));
    let mut maps = GateMaps::open(&cfg.pin_path).unwrap();
    let state = mx6gate::state::StateDir::new(&cfg.state_dir);
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    mx6gate::reconcile::apply_allow(&mut maps, &set_at(0)).unwrap();
    let flags = maps.read_config().unwrap().flags;
    let mut g = GateConfig::new(Mode::Drop, &[25]);
    g.flags = flags;
    maps.write_config(&g).unwrap();

    let prog: &Xdp = gate.ebpf.program(XDP_PROGRAM).unwrap().try_into().unwrap();
    let run = |src: Ipv6Addr| syn_verdict(prog, src.octets());
    assert_eq!(
        run(PARTNER),
        XDP_PASS,
        "the partner passes before any update"
    );
    assert_eq!(
        run(STRANGER),
        XDP_DROP,
        "the stranger drops before any update"
    );

    let done = AtomicBool::new(false);
    let (runs, refused, admitted) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(600);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if run(PARTNER) != XDP_PASS {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    if run(STRANGER) == XDP_PASS {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    runs.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let updater = s.spawn(|| {
            let r = (1..=UPDATES).try_for_each(|i| {
                let set = set_at(i);
                if i % 7 == 0 {
                    let r = mx6gate::reconcile::apply_allow(&mut maps, &set).map(|_| ());
                    // The full path leaves the tracked one's snapshot stale.
                    std::fs::remove_file(mx6gate::reconcile::snapshot_path(&state)).ok();
                    r
                } else {
                    mx6gate::reconcile::apply_allow_tracked(&mut maps, &state, &set).map(|_| ())
                }
            });
            done.store(true, Ordering::Relaxed);
            r
        });
        updater.join().unwrap().expect("every update applies");
    });
    let (runs, refused, admitted) = (
        runs.into_inner(),
        refused.into_inner(),
        admitted.into_inner(),
    );
    eprintln!("{UPDATES} updates, {runs} classification pairs during them");
    assert!(runs > 0, "the classifiers ran during the updates");
    assert_eq!(
        (refused, admitted),
        (0, 0),
        "in {runs} pairs the partner was refused {refused} times, the stranger let in {admitted} times"
    );
    drop(pins);
}

/// /32s that find no slot within the probe window of their home (a tiny
/// table: maps.allow_entries = 64, so 128 home slots, and 24 /32s chosen
/// with one home) are answered through the ALLOW trie by the kernel
/// program exactly as the placed ones: inside their prefixes they pass,
/// beside them in the same /32 they drop — before and after removals move
/// stashed /32s into freed slots.
#[test]
fn unplaced_slash32s_are_answered_by_the_trie() {
    if !mx6gate_tests::require_root() {
        return;
    }
    mx6gate_tests::ensure_bpffs().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        pin_path: format!("/sys/fs/bpf/mx6t-{}-unplaced", std::process::id()).into(),
        state_dir: dir.path().join("state"),
        partners_dir: dir.path().join("partners.d"),
        ports: vec![25],
        ..Config::default()
    };
    cfg.maps.allow_entries = 64;
    let gate = Gate::load(&cfg).expect("load the object");
    let pins = scopeguard(cfg.pin_path.clone(), dir.path().join("state"));
    let mut maps = GateMaps::open(&cfg.pin_path).unwrap();
    let slots = maps.table.header().slots;
    let tops: Vec<u32> = (0x2a00_0000u32..)
        .filter(|t| mx6gate_common::allow::home_slot(*t, slots) == 7)
        .take(24)
        .collect();
    // Per /32: a /48 (partner k), and in every other one a /64 inside it
    // (another partner) and a /128 beside it.
    let prefixes = |tops: &[u32]| -> BTreeMap<Ipv6Net, u32> {
        let mut s = BTreeMap::new();
        for (k, t) in tops.iter().enumerate() {
            let base = u128::from(*t) << 96;
            s.insert(
                Ipv6Net::new(Ipv6Addr::from(base | (1u128 << 80)), 48).unwrap(),
                k as u32,
            );
            if k % 2 == 0 {
                s.insert(
                    Ipv6Net::new(Ipv6Addr::from(base | (1u128 << 80) | (5u128 << 64)), 64).unwrap(),
                    100 + k as u32,
                );
                s.insert(
                    Ipv6Net::new(Ipv6Addr::from(base | (9u128 << 80) | 0x25), 128).unwrap(),
                    200 + k as u32,
                );
            }
        }
        s
    };
    let mut g = GateConfig::new(Mode::Drop, &[25]);
    let prog: &Xdp = gate.ebpf.program(XDP_PROGRAM).unwrap().try_into().unwrap();
    let run = |src: u128| syn_verdict(prog, src.to_be_bytes());
    for n in [24usize, 17, 20, 9, 24] {
        let set = prefixes(&tops[..n]);
        mx6gate::reconcile::apply_allow(&mut maps, &set).unwrap();
        g.flags = maps.read_config().unwrap().flags;
        maps.write_config(&g).unwrap();
        let unplaced = maps.table.header().unplaced[maps.table.active() as usize];
        if n > 16 {
            assert_eq!(
                unplaced as usize,
                n - 16,
                "{n} /32s with one home: {} unplaced",
                n - 16
            );
        }
        for (k, t) in tops.iter().enumerate() {
            let base = u128::from(*t) << 96;
            let inside = base | (1u128 << 80) | 0x25;
            let in64 = base | (1u128 << 80) | (5u128 << 64) | 0x25;
            let host = base | (9u128 << 80) | 0x25;
            let beside = base | (2u128 << 80) | 0x25;
            let listed = k < n;
            for (src, want) in [
                (inside, listed),
                (in64, listed),
                (host, listed && k % 2 == 0),
                (beside, false),
            ] {
                let verdict = if want { XDP_PASS } else { XDP_DROP };
                assert_eq!(
                    run(src),
                    verdict,
                    "{} with {n} /32s listed ({unplaced} unplaced)",
                    Ipv6Addr::from(src)
                );
                let replay = mx6gate::allowlist::lookup(&maps, Ipv6Addr::from(src)).unwrap();
                let reference = set
                    .iter()
                    .filter(|(p, _)| p.contains(&Ipv6Addr::from(src)))
                    .max_by_key(|(p, _)| p.prefix_len())
                    .map(|(_, id)| *id);
                assert_eq!(
                    replay,
                    reference,
                    "the controller's replay for {}",
                    Ipv6Addr::from(src)
                );
            }
        }
        assert_eq!(
            mx6gate::allowlist::entries(&maps).unwrap(),
            set,
            "read back with {n} /32s"
        );
    }
    drop(pins);
}

/// Removes the pins (and state) however the test ends.
struct Pins(std::path::PathBuf, std::path::PathBuf);

fn scopeguard(pin: std::path::PathBuf, state: std::path::PathBuf) -> Pins {
    Pins(pin, state)
}

impl Drop for Pins {
    fn drop(&mut self) {
        mx6gate::gate::detach(&self.0, &self.1).ok();
    }
}

/// The XDP program's verdict (BPF_PROG_TEST_RUN) for a SYN to port 25
/// from `src`.
fn syn_verdict(prog: &Xdp, src: [u8; 16]) -> u32 {
    let pkt = tcp_frame(&[], src, &[], &Tcp::syn(25));
    let mut out = vec![0u8; pkt.len() + 256];
    prog.test_run(TestRunOptions {
        data_in: Some(&pkt),
        data_out: Some(&mut out),
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN")
    .return_value
}
