//! The tables of RESULTS.md, one function per part.
use std::fmt::Write as _;

use super::{mib, rate, size_name, Pp};
use crate::bench::{
    frames::{classes, Class},
    per_packet::{Prog, Temp},
    run::Results,
    stats::{num, ratio, Stat},
    variants::VariantPoint,
    wire::{Dropper, WirePoint},
};

fn cell(s: Option<Stat>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "–".into())
}

fn rat(a: Option<Stat>, b: Option<Stat>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a.median, b.median),
        _ => "–".into(),
    }
}

pub(super) fn per_packet_tables(out: &mut String, r: &Results, pp: &Pp<'_>) {
    let cls = classes();
    for &n in &r.sizes {
        let _ = writeln!(
            out,
            "\n#### {} prefixes — hot (same source every run)\n",
            size_name(n)
        );
        let _ = writeln!(
            out,
            "| Class | mx6gate ns | XDP_DROP ns | ×floor | −floor ns | xdp-filter ns | ×xdp-filter | plain trie ns | ×trie |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &cls {
            let Some((g, temp)) = pp.hot(n, c.key, Prog::Gate) else {
                continue;
            };
            let get = |p| pp.get(n, c.key, p, temp);
            let (f, x, t) = (get(Prog::Floor), get(Prog::XdpFilter), get(Prog::Trie));
            let label = format!(
                "{}{}",
                c.label,
                if temp == Temp::HotPerCall { " †" } else { "" }
            );
            let xcell = match (x, c.xdpfilter_same) {
                (Some(x), false) => format!("{x} ‡"),
                (x, _) => cell(x),
            };
            let _ = writeln!(
                out,
                "| {label} | {g} | {} | {} | {} | {xcell} | {} | {} | {} |",
                cell(f),
                rat(Some(g), f),
                f.map(|f| format!("{:+.1}", g.median - f.median))
                    .unwrap_or_else(|| "–".into()),
                if c.xdpfilter_same {
                    rat(Some(g), x)
                } else {
                    "–".into()
                },
                cell(t),
                rat(Some(g), t),
            );
        }
        let cold: Vec<&Class> = cls
            .iter()
            .filter(|c| pp.get(n, c.key, Prog::Gate, Temp::Cold).is_some())
            .collect();
        if cold.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n#### {} prefixes — cold ({} different sources cycled, spread over the table)\n",
            size_name(n),
            r.settings.cold_sources
        );
        let _ = writeln!(
            out,
            "| Class | mx6gate ns | XDP_DROP ns (through the driver) | ×floor | −floor ns | xdp-filter ns | ×xdp-filter | plain trie ns | ×trie |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in cold {
            let get = |p| pp.get(n, c.key, p, Temp::Cold);
            let (g, f, x, t) = (
                get(Prog::Gate),
                get(Prog::Floor),
                get(Prog::XdpFilter),
                get(Prog::Trie),
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.label,
                cell(g),
                cell(f),
                rat(g, f),
                match (g, f) {
                    (Some(g), Some(f)) => format!("{:+.1}", g.median - f.median),
                    _ => "–".into(),
                },
                cell(x),
                rat(g, x),
                cell(t),
                rat(g, t),
            );
        }
    }
}

pub(super) fn wire_table(out: &mut String, r: &Results) {
    let sizes: Vec<usize> = r
        .sizes
        .iter()
        .copied()
        .filter(|n| r.wire.iter().any(|w| w.n == *n))
        .collect();
    for n in sizes {
        let pts: Vec<&WirePoint> = r.wire.iter().filter(|w| w.n == n).collect();
        let nft = pts.iter().find(|w| w.dropper == Dropper::Nft);
        let _ = writeln!(out, "\n#### {} prefixes\n", size_name(n));
        let _ = writeln!(
            out,
            "| Dropper | receiving core ns/packet | nftables ÷ this | ⇒ one-core capacity Mpps | dropped Mpps (observed) | ×nftables | core busy % | offered Mpps | lost at the ring % |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for w in &pts {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
                w.dropper.name(),
                w.ns_per_pkt,
                nft.map(|f| ratio(f.ns_per_pkt.median, w.ns_per_pkt.median))
                    .unwrap_or_else(|| "–".into()),
                1e3 / w.ns_per_pkt.median,
                w.mpps,
                nft.map(|f| ratio(w.mpps.median, f.mpps.median))
                    .unwrap_or_else(|| "–".into()),
                w.busy,
                w.offered,
                w.lost,
            );
        }
    }
}

pub(super) fn control_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "| Prefixes | Gate::load ms | sync (cold) ms | cold start ms | prefixes/s | nft -f (cold) ms | prefixes/s | nft time ÷ gate time | 1% change: sync ms | 1% change: full read-back ms | 1% change: nft -f ms | plain trie fill ms |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &r.control {
        let trie = r
            .memory
            .iter()
            .find(|m| m.n == c.n)
            .map(|m| num(m.trie_fill * 1e3))
            .unwrap_or_else(|| "–".into());
        let nft_change = match c.nft_change_over {
            Some(l) if c.nft_change.n == 0 => format!("> {:.0} (stopped)", l * 1e3),
            Some(l) => format!(
                "{} then > {:.0} (stopped)",
                c.nft_change.scaled(1e3),
                l * 1e3
            ),
            None => c.nft_change.scaled(1e3).to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_name(c.n),
            c.gate_load.scaled(1e3),
            c.gate_apply.scaled(1e3),
            c.gate_total.scaled(1e3),
            rate(c.n as f64 / c.gate_total.median),
            c.nft_load.scaled(1e3),
            rate(c.n as f64 / c.nft_load.median),
            ratio(c.nft_load.median, c.gate_total.median),
            c.gate_change.scaled(1e3),
            c.gate_change_full.scaled(1e3),
            nft_change,
            trie,
        );
    }
}

pub(super) fn memory_table(out: &mut String, r: &Results) {
    let names: Vec<String> = {
        let mut v: Vec<String> = r
            .memory
            .iter()
            .flat_map(|m| m.gate_maps.iter().map(|(n, _)| n.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = write!(out, "| Prefixes | gate maps total |");
    for n in &names {
        let _ = write!(out, " {n} |");
    }
    let _ = writeln!(
        out,
        " plain trie | xdp-filter | nftables set (≈) | process RSS: prefixes held | + gate loaded and synced | peak |"
    );
    let _ = write!(out, "|---:|---:|");
    for _ in &names {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out, "---:|---:|---:|---:|---:|---:|");
    for m in &r.memory {
        let total: u64 = m.gate_maps.iter().map(|(_, b)| b).sum();
        let _ = write!(out, "| {} | {} |", size_name(m.n), mib(total as f64));
        for n in &names {
            let b = m
                .gate_maps
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, b)| *b)
                .unwrap_or(0);
            let _ = write!(out, " {} |", mib(b as f64));
        }
        let c = r.control.iter().find(|c| c.n == m.n);
        let kib = |k: u64| mib(k as f64 * 1024.0);
        let (held, after, peak) = match m.probe {
            Some((h, a, p)) => (kib(h), format!("+{}", kib(a.saturating_sub(h))), kib(p)),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            out,
            " {} | {} | {} | {held} | {after} | {peak} |",
            mib(m.trie as f64),
            m.xdpfilter
                .map(|b| mib(b as f64))
                .unwrap_or_else(|| "–".into()),
            c.and_then(|c| c.nft_kmem_kib)
                .map(|k| mib(k as f64 * 1024.0))
                .unwrap_or_else(|| "–".into()),
        );
    }
}

pub(super) fn store_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "| Prefixes | load: one partner ms | load: spread ms | one ÷ spread | µs per prefix (one) | per prefix ÷ smallest size's | first sync: one ms | spread ms | resync (unchanged): one ms | spread ms |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = r
        .store
        .iter()
        .filter(|s| s.n >= 1000)
        .min_by_key(|s| s.n)
        .map(|s| s.load_one.median / s.n as f64);
    for s in &r.store {
        let per = s.load_one.median / s.n.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_name(s.n),
            s.load_one.scaled(1e3),
            s.load_spread.scaled(1e3),
            ratio(s.load_one.median, s.load_spread.median),
            num(per * 1e6),
            match base {
                Some(b) if s.n >= 1000 => ratio(per, b),
                _ => "–".into(),
            },
            s.first_sync_one.scaled(1e3),
            s.first_sync_spread.scaled(1e3),
            s.resync_one.scaled(1e3),
            s.resync_spread.scaled(1e3),
        );
    }
}

pub(super) fn variants_table(out: &mut String, v: &Result<Vec<VariantPoint>, String>) {
    let pts = match v {
        Ok(p) => p,
        Err(why) => {
            let _ = writeln!(out, "Not measured: {why}.");
            return;
        }
    };
    let _ = writeln!(
        out,
        "| Case | This kernel's way | ns | 5.10's way | ns | ratio (5.10's / this) |\n|---|---|---|---|---|---|"
    );
    for p in pts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            p.case,
            p.new_way,
            p.new,
            p.old_way,
            p.old,
            rat(Some(p.old), Some(p.new))
        );
    }
}
