//! Made-up runs for the report's tests: an empty one to fill in, and two
//! whole ones (every part present) for the golden text.
use std::time::Duration;

use crate::bench::{
    control::ControlPoint,
    frames::classes,
    per_packet::{Point, Prog, Temp},
    run::{MemPoint, Results},
    stats::Stat,
    store::StorePoint,
    wire::{Dropper, WirePoint},
};

pub fn stat(v: f64) -> Stat {
    Stat::of(&[v])
}

pub fn results() -> Results {
    Results {
        quick: false,
        machine: Vec::new(),
        date: String::new(),
        bpf_stats_before: "0".into(),
        bpf_stats_checks: Vec::new(),
        settings: crate::bench::per_packet::Settings {
            runs: 1,
            repeat: 1,
            calls: 1,
            cold_sources: 1,
        },
        wire_runs: 1,
        wire_dur: Duration::ZERO,
        sizes: vec![10_000, 1_000_000],
        restored: None,
        per_packet: Vec::new(),
        wire: Vec::new(),
        control: Vec::new(),
        memory: Vec::new(),
        variants: None,
        store: Vec::new(),
        notes: Vec::new(),
        elapsed: Duration::ZERO,
    }
}

pub fn wire(n: usize, dropper: Dropper, ns: f64) -> WirePoint {
    WirePoint {
        n,
        dropper,
        mpps: stat(1e3 / ns),
        ns_per_pkt: stat(ns),
        busy: stat(100.0),
        offered: stat(5.0),
        lost: stat(0.0),
    }
}

/// A whole run's worth of figures, made up but shaped like a real run:
/// every part present, every table and (with `slow`) every discussion
/// paragraph rendered. Deterministic, so its text can be golden.
pub fn fixture(slow: bool) -> Results {
    use crate::bench::variants::VariantPoint;
    let spread = |v: f64| Stat::of(&[v * 0.96, v, v * 1.08]);
    let k = if slow { 1.9 } else { 1.0 };
    let mut r = results();
    r.date = "2026-12-01 12:00 UTC".into();
    r.machine = vec![
        ("CPU".into(), "2 vCPU (fixture)".into()),
        ("Kernel".into(), "6.18.0-fixture".into()),
        ("Load average before / after".into(), "0.10 / 0.20".into()),
    ];
    r.bpf_stats_checks = vec!["0".into(), "0".into()];
    r.settings = crate::bench::per_packet::Settings {
        runs: 3,
        repeat: 100_000,
        calls: 2000,
        cold_sources: 65_536,
    };
    r.wire_runs = 3;
    r.wire_dur = Duration::from_secs(2);
    r.sizes = vec![10, 10_000, 1_000_000];
    r.restored = Some(false);
    r.notes = vec!["a fixture, not a measurement".into()];
    r.elapsed = Duration::from_secs(421);
    for (si, &n) in r.sizes.iter().enumerate() {
        let grow = 1.0 + si as f64 * 0.35;
        for (ci, c) in classes().iter().enumerate() {
            let floor = 28.0 + ci as f64 * 0.5 + si as f64;
            let temp = if c.key == "reset" {
                Temp::HotPerCall
            } else {
                Temp::Hot
            };
            let gate = if c.smtp {
                floor * (1.3 + 0.05 * ci as f64) * grow * k
            } else {
                floor + 2.0 + 2.0 * k * (si as f64)
            };
            let mut push = |prog: Prog, t: Temp, v: f64| {
                r.per_packet.push(Point {
                    n,
                    class: c.key,
                    prog,
                    temp: t,
                    ns: spread(v),
                })
            };
            push(Prog::Floor, temp, floor);
            push(Prog::Gate, temp, gate);
            if c.smtp {
                push(Prog::XdpFilter, temp, floor * 2.4 * grow);
            }
            if c.trie {
                push(Prog::Trie, temp, floor * 2.0 * grow);
            }
            if c.cold {
                push(Prog::Floor, Temp::Cold, floor + 4.0);
                push(Prog::Gate, Temp::Cold, gate * 1.7 * k);
                push(Prog::XdpFilter, Temp::Cold, floor * 3.1 * grow);
                if c.trie {
                    push(Prog::Trie, Temp::Cold, floor * 6.0 * grow);
                }
            }
        }
        for (d, ns) in [
            (Dropper::XdpDrop, 40.0),
            (Dropper::Gate, 60.0 * k * grow),
            (Dropper::XdpFilter, 120.0 * grow),
            (Dropper::Nft, 420.0 + 40.0 * si as f64),
        ] {
            let mut w = wire(n, d, ns);
            w.busy = spread(97.0);
            w.offered = spread(4.5);
            w.lost = spread(0.5 * si as f64);
            r.wire.push(w);
        }
        let nf = n as f64;
        r.control.push(ControlPoint {
            n,
            gate_load: spread(0.030),
            gate_apply: spread(nf / (900_000.0 / k)),
            gate_total: spread(0.030 + nf / (900_000.0 / k)),
            gate_change: spread(0.002 + nf / (2_500_000.0 / k)),
            gate_change_full: spread(0.004 + nf / (1_000_000.0 / k)),
            nft_load: spread(0.010 + nf / 45_000.0),
            nft_change: if si == 2 {
                Stat::default()
            } else {
                spread(0.02 + nf / 90_000.0)
            },
            nft_change_over: if si == 2 {
                Some(30.0)
            } else if si == 1 {
                Some(45.0)
            } else {
                None
            },
            change_size: (n / 100).max(1) * 2,
            nft_kmem_kib: if si == 0 { None } else { Some((n / 4) as i64) },
        });
        let mib = 1024 * 1024;
        r.memory.push(MemPoint {
            n,
            gate_maps: vec![
                ("ALLOW".into(), (n as u64 * 40).max(4096)),
                ("OCCUPIED".into(), 4 * mib + 16 * 1024),
                (
                    "SLASH32".into(),
                    (n as u64 * (if slow { 200 } else { 120 })).max(8192),
                ),
            ],
            xdpfilter: if si == 0 { None } else { Some(n as u64 * 64) },
            trie: n as u64 * 56,
            trie_fill: nf / 300_000.0,
            probe: if si == 1 {
                None
            } else {
                Some((
                    20_000 + n as u64 / 10,
                    30_000 + n as u64 / 5,
                    60_000 + n as u64 / 3,
                ))
            },
        });
        r.store.push(StorePoint {
            n,
            load_one: spread(0.001 + nf / 2_000_000.0),
            load_spread: spread(0.002 + nf / 1_000_000.0),
            first_sync_one: spread(0.003 + nf / 800_000.0),
            first_sync_spread: spread(0.004 + nf / 700_000.0),
            resync_one: spread(0.001 + nf / 4_000_000.0),
            resync_spread: spread(0.001 + nf / 3_000_000.0),
        });
    }
    r.variants = Some(if slow {
        Err("this kernel lacks the newer features".into())
    } else {
        Ok(vec![
            VariantPoint {
                case: "defer, explained",
                new_way: "coarse clock".into(),
                old_way: "ktime_get_ns",
                new: spread(61.0),
                old: spread(74.0),
            },
            VariantPoint {
                case: "sk_lookup ifindex",
                new_way: "ingress_ifindex".into(),
                old_way: "source = destination",
                new: spread(33.0),
                old: spread(35.5),
            },
        ])
    });
    r
}
