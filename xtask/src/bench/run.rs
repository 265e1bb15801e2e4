//! The whole bench, in one go: for each allowlist size, the control plane
//! (which leaves a loaded gate and an nftables set behind), memory, the
//! per-packet runs and the wire runs; then the report.
use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mx6gate_common::Mode;

use super::{
    control::{self, ControlPoint},
    env, gate,
    per_packet::{self, Point, Settings, Subjects},
    prefixes::{self, representative, Rng, Table},
    report,
    store::{self, StorePoint},
    sys,
    trie::TrieStandin,
    variants::{self, VariantPoint},
    wire::{self, Dropper, Wire, WirePoint},
    xdpfilter::{self, XdpFilter},
    BenchArgs,
};

/// Memory at one size.
#[derive(Clone, Debug, Default)]
pub struct MemPoint {
    pub n: usize,
    /// Each map the gate pinned: (name, fdinfo memlock bytes).
    pub gate_maps: Vec<(String, u64)>,
    pub xdpfilter: Option<u64>,
    pub trie: u64,
    /// Time to fill the plain trie (BPF_MAP_UPDATE_*), s.
    pub trie_fill: f64,
    /// A fresh process holding the N prefixes, then with a gate loaded and
    /// synced to them: RSS before, after, and the peak (KiB).
    pub probe: Option<(u64, u64, u64)>,
}

/// `--rss-probe N`: what a controller holding N prefixes costs in memory.
/// Prints `rss-probe <held> <after> <peak>` (KiB).
pub fn rss_probe(n: usize) -> Result<()> {
    let desired = {
        let mut set = prefixes::generate(n, prefixes::SEED);
        set.extend(wire::wire_partners());
        prefixes::desired(&set)
    };
    let held = env::rss_kib().0;
    env::reset_peak_rss();
    let (mut g, _) = gate::BenchGate::load(n + n / 10 + 64, Mode::Drop)?;
    g.apply(&desired)?;
    let (after, peak) = env::rss_kib();
    drop(g);
    println!("rss-probe {held} {after} {peak}");
    Ok(())
}

fn run_rss_probe(n: usize) -> Result<(u64, u64, u64)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--rss-probe", &n.to_string()])
        .output()
        .context("running the RSS probe")?;
    if !out.status.success() {
        bail!(
            "the RSS probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = s
        .lines()
        .find_map(|l| l.strip_prefix("rss-probe "))
        .context("no rss-probe line")?
        .split_whitespace()
        .map(|x| x.parse())
        .collect::<Result<_, _>>()?;
    match v[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => bail!("bad rss-probe line {s:?}"),
    }
}

/// Everything the report needs.
pub struct Results {
    pub quick: bool,
    pub machine: Vec<(String, String)>,
    pub date: String,
    pub bpf_stats_before: String,
    /// bpf_stats_enabled as read before each part (all must be "0").
    pub bpf_stats_checks: Vec<String>,
    pub settings: Settings,
    pub wire_runs: usize,
    pub wire_dur: Duration,
    pub sizes: Vec<usize>,
    pub restored: Option<bool>,
    pub per_packet: Vec<Point>,
    pub wire: Vec<WirePoint>,
    pub control: Vec<ControlPoint>,
    pub memory: Vec<MemPoint>,
    /// The older kernels' variants against this kernel's (part 5), or why
    /// they could not be compared here.
    pub variants: Option<Result<Vec<VariantPoint>, String>>,
    /// The partner store's load and sync (part 6).
    pub store: Vec<StorePoint>,
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

fn need(prog: &str) -> Result<()> {
    if !mx6gate_tests::cmd::have_program(prog) {
        bail!("`{prog}` is not installed (the bench needs it)");
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(n) = args.rss_probe {
        return rss_probe(n);
    }
    let start = Instant::now();
    for p in &args.only {
        if ![
            "per-packet",
            "wire",
            "control",
            "memory",
            "variants",
            "store",
        ]
        .contains(&p.as_str())
        {
            bail!("--only {p}: the parts are per-packet, wire, control, memory, variants, store");
        }
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root (BPF, network namespaces): run it as root");
    }
    for p in ["ip", "nsenter", "nft", "ethtool"] {
        need(p)?;
    }
    mx6gate_tests::ensure_bpffs()?;
    gate::cleanup_stale_pins();
    let out_dir = args.out_dir();
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let quick = args.quick;
    let sizes: Vec<usize> = if !args.sizes.is_empty() {
        args.sizes.clone()
    } else if quick {
        vec![10, 1000]
    } else {
        vec![10, 10_000, 100_000, 1_000_000]
    };
    let settings = if quick {
        Settings {
            runs: 3,
            repeat: 10_000,
            calls: 500,
            cold_sources: 256,
        }
    } else {
        Settings {
            runs: 5,
            repeat: 1_000_000,
            calls: 20_000,
            cold_sources: 1 << 18,
        }
    };
    let (wire_runs, wire_dur) = if quick {
        (3, Duration::from_millis(200))
    } else {
        (5, Duration::from_secs(1))
    };
    let runs = settings.runs;
    let change_limit = Duration::from_secs(if quick { 5 } else { 20 });

    let stats = env::BpfStatsOff::new()?;
    let mut res = Results {
        quick,
        machine: env::describe(),
        date: env::date(),
        bpf_stats_before: stats.before.clone(),
        bpf_stats_checks: Vec::new(),
        settings,
        wire_runs,
        wire_dur,
        sizes: sizes.clone(),
        restored: None,
        per_packet: Vec::new(),
        wire: Vec::new(),
        control: Vec::new(),
        memory: Vec::new(),
        variants: None,
        store: Vec::new(),
        notes: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let check_stats = |res: &mut Results| -> Result<()> {
        let v = env::BpfStatsOff::now();
        if v != "0" {
            // Someone turned it on meanwhile: figures would carry ~90 ns each.
            std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0").ok();
            res.notes.push(format!(
                "kernel.bpf_stats_enabled was {v} at a check during the run (set back to 0)"
            ));
        }
        res.bpf_stats_checks.push(v);
        Ok(())
    };

    let max_n = *sizes.iter().max().context("no sizes")?;
    let k_max = (max_n / 100).max(1);
    eprintln!("bench: generating {} prefixes", max_n + runs * k_max);
    let all = prefixes::generate(max_n + runs * k_max, prefixes::SEED);
    let fresh = &all[max_n..];
    let wire_partners = wire::wire_partners();
    let floor = sys::load_xdp("mx6b_drop", &super::insns::xdp_drop())?;
    let have_xf = xdpfilter::available();
    if !have_xf {
        res.notes.push(format!(
            "xdp-filter's object {} is missing (apt install xdp-tools): its columns are empty",
            xdpfilter::OBJECT
        ));
    }

    // The namespaces: the wire topology's gateway also hosts the nftables set.
    let mut wire = if args.wants("wire") || args.wants("control") {
        Some(Wire::new()?)
    } else {
        None
    };
    let mut rng = Rng::new(prefixes::SEED ^ 0xc0ffee);

    for &n in &sizes {
        eprintln!(
            "bench: {n} prefixes ({:.0} s in)",
            start.elapsed().as_secs_f64()
        );
        let mut initial: Vec<_> = all[..n].to_vec();
        initial.extend_from_slice(&wire_partners);
        let plan = control::plan(initial, &wire_partners, fresh, runs, &mut rng);
        let mut cp = ControlPoint {
            n,
            ..Default::default()
        };
        check_stats(&mut res)?;
        let (mut g, final_set) = if args.wants("control") {
            let g = control::gate(&plan, runs, &mut cp).context("control plane: the gate")?;
            let w = wire.as_ref().expect("made above");
            control::nft(
                w.nft_ns(),
                &w.topo.gw_if,
                &plan,
                runs,
                change_limit,
                &mut cp,
            )
            .context("control plane: nftables")?;
            res.control.push(cp);
            (g, plan.initial.clone())
        } else {
            let (mut g, _) = gate::BenchGate::load(plan.initial.len() + 64, Mode::Drop)?;
            g.apply(&prefixes::desired(&plan.initial))?;
            if let Some(w) = &wire {
                control::nft(
                    w.nft_ns(),
                    &w.topo.gw_if,
                    &control::ChangePlan {
                        initial: plan.initial.clone(),
                        changes: vec![],
                    },
                    1,
                    change_limit,
                    &mut cp,
                )?;
            }
            (g, plan.initial.clone())
        };
        let table = Table::new(final_set);
        let reps: Vec<u128> = table.prefixes.iter().map(representative).collect();
        let xf = if have_xf {
            Some(XdpFilter::load(&reps).context("loading xdp-filter")?)
        } else {
            None
        };
        let trie = TrieStandin::load(&table.prefixes).context("loading the plain-trie stand-in")?;

        if args.wants("memory") {
            res.memory.push(MemPoint {
                n,
                gate_maps: g.map_memory()?,
                xdpfilter: xf.as_ref().map(|x| x.map_memory()).transpose()?,
                trie: trie.map_memory()?,
                trie_fill: trie.fill.as_secs_f64(),
                probe: Some(run_rss_probe(n)?),
            });
        }

        if args.wants("per-packet") {
            eprintln!(
                "bench:   per-packet ({:.0} s in)",
                start.elapsed().as_secs_f64()
            );
            check_stats(&mut res)?;
            let mut subj = Subjects {
                gate: &mut g,
                floor: floor.as_fd(),
                xdpfilter: xf.as_ref(),
                trie: Some(&trie),
            };
            if res.restored.is_none() {
                res.restored = Some(per_packet::input_restored(&mut subj, &table)?);
            }
            let pts = per_packet::measure(n, &table, &mut subj, &settings, res.restored.unwrap())
                .with_context(|| format!("per-packet at {n} prefixes"))?;
            res.per_packet.extend(pts);
        }

        if args.wants("variants") && res.variants.is_none() {
            eprintln!(
                "bench:   kernel variants ({:.0} s in)",
                start.elapsed().as_secs_f64()
            );
            check_stats(&mut res)?;
            res.variants = Some(
                variants::measure(settings.runs, settings.repeat, &table)
                    .map_err(|e| format!("{e:#}")),
            );
        }

        if args.wants("wire") {
            eprintln!("bench:   wire ({:.0} s in)", start.elapsed().as_secs_f64());
            check_stats(&mut res)?;
            g.set_mode(Mode::Drop)?;
            let mut d: Vec<(Dropper, Option<std::os::fd::BorrowedFd<'_>>)> = vec![
                (Dropper::XdpDrop, Some(floor.as_fd())),
                (Dropper::Gate, Some(g.prog()?)),
            ];
            if let Some(x) = &xf {
                d.push((Dropper::XdpFilter, Some(x.prog()?)));
            }
            d.push((Dropper::Nft, None));
            let w = wire.as_mut().expect("made above");
            let pts = w
                .measure(n, &d, wire_runs, wire_dur)
                .with_context(|| format!("wire at {n} prefixes"))?;
            res.wire.extend(pts);
        }
        drop(trie);
        drop(xf);
        drop(g);

        if args.wants("store") {
            eprintln!(
                "bench:   partner store ({:.0} s in)",
                start.elapsed().as_secs_f64()
            );
            res.store.push(
                store::measure(n, &all[..n], runs)
                    .with_context(|| format!("partner store at {n} prefixes"))?,
            );
        }
    }
    drop(wire);
    res.machine
        .push(("Load average at end".into(), env::loadavg()));
    res.elapsed = start.elapsed();
    report::write(&res, &out_dir)?;
    eprintln!(
        "bench: done in {:.0} s; wrote {} and {}",
        res.elapsed.as_secs_f64(),
        out_dir.join("RESULTS.md").display(),
        out_dir.join("per-packet.svg").display()
    );
    Ok(())
}
