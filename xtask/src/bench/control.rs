//! Part 3: the control plane. Loading N prefixes into a freshly loaded gate
//! (the product's sync, `reconcile::apply_allow_tracked`, into empty maps), then
//! 1% changes (1% of the prefixes removed, as many new ones added, one sync
//! each), then the same changes undone through the full read-back path
//! (`reconcile::apply_allow`), which leaves the gate holding the initial set
//! again; the same set and changes through `nft -f` into an nftables
//! interval set in a namespace. Wall-clock times, each repeated.
use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv6Net;
use mx6gate_common::Mode;
use mx6gate_tests::{cmd::wait_timeout, Netns};

use super::{
    env,
    gate::BenchGate,
    prefixes::{desired, Rng},
    stats::Stat,
    wire::NFT_TABLE,
};

/// The sets one size goes through: the initial one, then `changes`.
pub struct ChangePlan {
    pub initial: Vec<Ipv6Net>,
    /// (removed, added), applied in order (and undone in reverse).
    pub changes: Vec<(Vec<Ipv6Net>, Vec<Ipv6Net>)>,
}

/// `runs` changes of 1% each: `k = max(1, n/100)` prefixes out (never one
/// of `keep`), `k` fresh ones from `fresh` in.
pub fn plan(
    initial: Vec<Ipv6Net>,
    keep: &[Ipv6Net],
    fresh: &[Ipv6Net],
    runs: usize,
    rng: &mut Rng,
) -> ChangePlan {
    let k = (initial.len() / 100).max(1);
    let mut cur: Vec<Ipv6Net> = initial.clone();
    let mut changes = Vec::new();
    for i in 0..runs {
        let mut removed = Vec::with_capacity(k);
        while removed.len() < k {
            let j = rng.below(cur.len());
            if keep.contains(&cur[j]) {
                continue;
            }
            removed.push(cur.swap_remove(j));
        }
        let added: Vec<Ipv6Net> = fresh[i * k..(i + 1) * k].to_vec();
        cur.extend_from_slice(&added);
        changes.push((removed, added));
    }
    drop(cur);
    ChangePlan { initial, changes }
}

#[derive(Clone, Debug, Default)]
pub struct ControlPoint {
    pub n: usize,
    /// Gate::load (maps created and pinned, programs verified), s.
    pub gate_load: Stat,
    /// apply_allow of the whole set into the empty maps, s.
    pub gate_apply: Stat,
    /// Both, run by run: the cold start, s.
    pub gate_total: Stat,
    /// One 1% change through the product's sync (snapshot diff), s.
    pub gate_change: Stat,
    /// One 1% change through the full read-back path, s.
    pub gate_change_full: Stat,
    /// `nft -f` of the table with the whole set, s.
    pub nft_load: Stat,
    /// `nft -f` of one 1% change (delete + add element), s.
    pub nft_change: Stat,
    /// A change did not finish within this limit (s): it was stopped, and
    /// the later changes were not tried.
    pub nft_change_over: Option<f64>,
    /// Prefixes in one 1% change (removed + added = 2k).
    pub change_size: usize,
    /// Host kernel memory (Slab + Percpu + VmallocUsed) grown by one nft load, KiB (approx).
    pub nft_kmem_kib: Option<i64>,
}

/// The gate cold-started `runs` times with `plan.initial`, then the changes
/// applied to the last one and undone again; it is returned holding
/// `plan.initial`.
pub fn gate(plan: &ChangePlan, runs: usize, cp: &mut ControlPoint) -> Result<BenchGate> {
    let cap = plan.initial.len() + plan.initial.len() / 10 + 64;
    let want = desired(&plan.initial);
    let (mut load, mut apply) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        drop(last.take()); // one gate at a time
        let (mut g, t) = BenchGate::load(cap, Mode::Drop)?;
        load.push(t.as_secs_f64());
        apply.push(g.apply(&want)?.as_secs_f64());
        last = Some(g);
    }
    let mut g = last.context("no runs")?;
    let mut cur: BTreeMap<Ipv6Net, u32> = want;
    let mut change = Vec::new();
    for (removed, added) in &plan.changes {
        for p in removed {
            cur.remove(p);
        }
        cur.extend(desired(added));
        change.push(g.apply(&cur)?.as_secs_f64());
    }
    // Undo them, newest first, through the full path (after which the
    // snapshot is stale: nothing syncs this gate through `apply` again).
    let mut full = Vec::new();
    for (removed, added) in plan.changes.iter().rev() {
        for p in added {
            cur.remove(p);
        }
        cur.extend(desired(removed));
        full.push(g.apply_full(&cur)?.as_secs_f64());
    }
    cp.gate_change_full = Stat::of(&full);
    cp.gate_load = Stat::of(&load);
    cp.gate_apply = Stat::of(&apply);
    cp.gate_total = Stat::of(
        &load
            .iter()
            .zip(&apply)
            .map(|(l, a)| l + a)
            .collect::<Vec<_>>(),
    );
    cp.gate_change = Stat::of(&change);
    cp.change_size = plan
        .changes
        .first()
        .map(|(r, a)| r.len() + a.len())
        .unwrap_or(0);
    Ok(g)
}

/// The rule the wire test measures, hooked at the netdev ingress of
/// `device` (part of the table from the start: reading or changing
/// anything in a table whose set holds a million elements costs nft tens of
/// seconds, so nothing is added or listed later).
fn nft_chain(device: &str) -> String {
    format!(
        "  chain ingress {{\n    type filter hook ingress device \"{device}\" priority -500; policy accept;\n    \
         ip6 saddr != @partners tcp dport 25 tcp flags & (syn | ack) == syn counter drop\n  }}\n"
    )
}

fn elements(set: &[Ipv6Net]) -> String {
    let mut s = String::with_capacity(set.len() * 24);
    for (i, p) in set.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        s.push_str(&p.to_string());
    }
    s
}

/// `nft -f` of `text` in `ns`; None if it did not finish within `limit`
/// (it is killed: `nft -f` is one transaction, so nothing changed).
fn nft_file(ns: &Netns, path: &Path, text: &str, limit: Duration) -> Result<Option<Duration>> {
    std::fs::write(path, text)?;
    let mut c = ns.command(&["nft", "-f", &path.to_string_lossy()]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = c.spawn().context("starting nft")?;
    let status = wait_timeout(&mut child, limit)?;
    let took = t.elapsed();
    match status {
        None => Ok(None),
        Some(st) if st.success() => Ok(Some(took)),
        Some(st) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).ok();
            }
            bail!("nft -f failed ({st}): {}", err.trim())
        }
    }
}

/// The nftables side in `ns` (a namespace of the bench's own): `runs` cold
/// loads (table deleted in between, not timed), then the changes, each
/// bounded by `change_limit` (nft 1.0.6 deletes interval-set elements in
/// time proportional to the set's size, each), and then undone. Leaves
/// the table holding `plan.initial`, like the gate, for the wire test.
pub fn nft(
    ns: &Netns,
    device: &str,
    plan: &ChangePlan,
    runs: usize,
    change_limit: Duration,
    cp: &mut ControlPoint,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("set.nft");
    let load_text = format!(
        "table netdev {NFT_TABLE} {{\n  set partners {{\n    type ipv6_addr\n    flags interval\n    elements = {{\n{}\n    }}\n  }}\n{}}}\n",
        elements(&plan.initial),
        nft_chain(device)
    );
    let mut load = Vec::new();
    for r in 0..runs {
        // Only ever our own table, in our own namespace.
        ns.try_run(
            &["nft", "delete", "table", "netdev", NFT_TABLE],
            Duration::from_secs(120),
        )
        .ok();
        let k0 = env::kernel_mem_kib();
        let t = nft_file(ns, &file, &load_text, Duration::from_secs(600))
            .context("nft -f (load)")?
            .context("nft -f (load) did not finish within 600 s")?;
        load.push(t.as_secs_f64());
        if r == 0 {
            cp.nft_kmem_kib = Some(env::kernel_mem_kib() as i64 - k0 as i64);
        }
        if r + 1 < runs {
            ns.run_timeout(
                &["nft", "delete", "table", "netdev", NFT_TABLE],
                Duration::from_secs(120),
            )?;
        }
    }
    let mut change = Vec::new();
    for (removed, added) in &plan.changes {
        let text = format!(
            "delete element netdev {NFT_TABLE} partners {{ {} }}\nadd element netdev {NFT_TABLE} partners {{ {} }}\n",
            elements(removed),
            elements(added)
        );
        match nft_file(ns, &file, &text, change_limit).context("nft -f (1% change)")? {
            Some(t) => change.push(t.as_secs_f64()),
            None => {
                cp.nft_change_over = Some(change_limit.as_secs_f64());
                break;
            }
        }
    }
    // Undo what went in (not timed), so the set is `plan.initial` again,
    // like the gate's.
    for (removed, added) in plan.changes[..change.len()].iter().rev() {
        let text = format!(
            "delete element netdev {NFT_TABLE} partners {{ {} }}\nadd element netdev {NFT_TABLE} partners {{ {} }}\n",
            elements(added),
            elements(removed)
        );
        nft_file(ns, &file, &text, Duration::from_secs(600))
            .context("nft -f (undoing a change)")?
            .context("undoing a change did not finish within 600 s")?;
    }
    cp.nft_load = Stat::of(&load);
    cp.nft_change = Stat::of(&change);
    Ok(())
}
