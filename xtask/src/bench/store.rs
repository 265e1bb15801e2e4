//! Part 5: the partner store, as the daemon reads it. `Store::load` of N
//! prefixes held by one partner, against the same N spread over partners
//! of 1,000 prefixes (one file each, as the CLI writes them): a ratio near
//! 1 says loading is linear in the prefixes whatever their grouping (it
//! was quadratic in one partner's size: 50k in one partner 1.1 s, over 50
//! partners 0.07 s). Then the daemon's work on each: the first sync into
//! a fresh gate's empty maps (store read + `reconcile::reconcile`), and the
//! periodic resync of an unchanged store (read again, reconciled against
//! maps that already hold it). All of it runs on the daemon's sync
//! worker, never on the thread that serves the responder and signals.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use ipnet::Ipv6Net;
use mx6gate::{
    reconcile,
    state::StateDir,
    store::{today_utc, Store},
};
use mx6gate_common::Mode;

use super::{gate::BenchGate, stats::Stat};

/// Prefixes per partner in the spread shape.
pub const SPREAD: usize = 1_000;

#[derive(Clone, Debug, Default)]
pub struct StorePoint {
    pub n: usize,
    pub load_one: Stat,
    pub load_spread: Stat,
    /// Store read + reconcile into the empty maps of a fresh gate, s.
    pub first_sync_one: Stat,
    pub first_sync_spread: Stat,
    /// Store read + reconcile of the unchanged store, s.
    pub resync_one: Stat,
    pub resync_spread: Stat,
}

fn partner_text(name: &str, prefixes: &[Ipv6Net]) -> String {
    let mut s = String::with_capacity(prefixes.len() * 30 + 64);
    s.push_str("[[partner]]\nname = \"");
    s.push_str(name);
    s.push_str("\"\nprefixes = [\n");
    for p in prefixes {
        s.push_str("  \"");
        s.push_str(&p.to_string());
        s.push_str("\",\n");
    }
    s.push_str("]\n");
    s
}

/// The two store directories for `prefixes`.
fn write_stores(dir: &Path, prefixes: &[Ipv6Net]) -> Result<()> {
    let one = dir.join("one");
    let spread = dir.join("spread");
    std::fs::create_dir_all(&one)?;
    std::fs::create_dir_all(&spread)?;
    std::fs::write(one.join("big.toml"), partner_text("big", prefixes))?;
    for (i, chunk) in prefixes.chunks(SPREAD).enumerate() {
        let name = format!("p{i:05}");
        std::fs::write(
            spread.join(format!("{name}.toml")),
            partner_text(&name, chunk),
        )?;
    }
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

/// The daemon's cycle on the store in `dir`: a fresh gate, the first sync,
/// then `runs` resyncs of the unchanged store. (first, resyncs) in s.
fn syncs(dir: &Path, n: usize, runs: usize) -> Result<(f64, Vec<f64>)> {
    let (mut g, _) = BenchGate::load(n + n / 10 + 64, Mode::Drop)?;
    let state = StateDir::new(&g.cfg.state_dir);
    let cycle = |g: &mut BenchGate| -> Result<()> {
        let store = Store::load(dir)?;
        reconcile::reconcile(&store, &state, &mut g.maps, today_utc(), false)?;
        Ok(())
    };
    let ((), first) = timed(|| cycle(&mut g)).context("the first sync")?;
    let mut re = Vec::with_capacity(runs);
    for _ in 0..runs {
        re.push(timed(|| cycle(&mut g)).context("a resync")?.1);
    }
    Ok((first, re))
}

pub fn measure(n: usize, prefixes: &[Ipv6Net], runs: usize) -> Result<StorePoint> {
    let tmp = tempfile::tempdir()?;
    write_stores(tmp.path(), prefixes)?;
    let (one, spread) = (tmp.path().join("one"), tmp.path().join("spread"));
    let (mut l1, mut ls) = (Vec::new(), Vec::new());
    // Interleaved, so both shapes see the same machine.
    for _ in 0..runs {
        let (s, t) = timed(|| Store::load(&one))?;
        assert_eq!(s.prefix_count(), n);
        l1.push(t);
        let (s, t) = timed(|| Store::load(&spread))?;
        assert_eq!(s.prefix_count(), n);
        ls.push(t);
    }
    let (f1, r1) = syncs(&one, n, runs)?;
    let (fs, rs) = syncs(&spread, n, runs)?;
    // (A pause lets the bench's own memory go back before the next size.)
    std::thread::sleep(Duration::from_millis(10));
    Ok(StorePoint {
        n,
        load_one: Stat::of(&l1),
        load_spread: Stat::of(&ls),
        first_sync_one: Stat::of(&[f1]),
        first_sync_spread: Stat::of(&[fs]),
        resync_one: Stat::of(&r1),
        resync_spread: Stat::of(&rs),
    })
}
