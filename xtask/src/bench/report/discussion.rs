//! "Why the misses, and what would close them": a paragraph per missed
//! target, from the run's own figures.
use std::fmt::Write as _;

use super::{rate, size_name, targets::targets, Pp};
use crate::bench::{
    per_packet::{Prog, Temp},
    run::Results,
    stats::{num, ratio, Stat},
    wire::Dropper,
};

/// Median of one figure, if measured.
fn med(pp: &Pp<'_>, n: usize, class: &str, prog: Prog, t: Temp) -> Option<f64> {
    pp.get(n, class, prog, t).map(|s| s.median)
}

/// Explanations for the targets missed, from this run's own figures.
pub(super) fn discussion(r: &Results, pp: &Pp<'_>) -> String {
    let mut o = String::new();
    let ts = targets(r, pp);
    let missed = |key: &str| {
        ts.iter()
            .any(|t| t.what.contains(key) && t.verdict.contains("MISS"))
    };
    let largest = r.sizes.iter().copied().max().unwrap_or(0);
    // Non-SMTP classes.
    if missed("Non-SMTP") {
        let deltas: Vec<f64> = r
            .sizes
            .iter()
            .flat_map(|&n| {
                ["ipv4", "ns", "ack"].into_iter().filter_map(move |c| {
                    Some(
                        med(pp, n, c, Prog::Gate, Temp::Hot)?
                            - med(pp, n, c, Prog::Floor, Temp::Hot)?,
                    )
                })
            })
            .collect();
        let s = Stat::of(&deltas);
        let _ = writeln!(
            o,
            "* **Non-SMTP classes, +5 ns.** Over all sizes these classes cost the gate {} ns over the floor \
             (median of the per-size medians; spread {}–{}). That is the parse up to the decision (Ethernet type and \
             tags; for IPv6 the header chain up to TCP and the flags) plus one per-CPU counter increment. The kernel \
             reports whole nanoseconds and the floor alone moves by several between runs on this shared 2-vCPU VM, so \
             a miss by a nanosecond or two is at the resolution of the method; to gain a clear margin the gate would \
             have to stop counting non-SMTP packets one by one (they are the bulk of the traffic and the counter is the \
             only memory write on their path).\n",
            num(s.median),
            num(s.min),
            num(s.max)
        );
    }
    // SYN classes, hot.
    for (size, limit) in [(10_000usize, 2.0f64), (1_000_000, 3.0)] {
        if !missed(&format!("the floor at {}", size_name(size))) {
            continue;
        }
        let n = size;
        let g = |c: &str| med(pp, n, c, Prog::Gate, Temp::Hot);
        let (Some(f), Some(far), Some(near), Some(partner)) = (
            med(pp, n, "drop", Prog::Floor, Temp::Hot),
            g("drop"),
            g("near"),
            g("partner"),
        ) else {
            continue;
        };
        let x = med(pp, n, "near", Prog::XdpFilter, Temp::Hot);
        let t = med(pp, n, "partner", Prog::Trie, Temp::Hot);
        let _ = writeln!(
            o,
            "* **SYN classes hot at {sz}, ≤ {limit}× the floor.** At {sz} the floor is {f} ns, so {limit}× leaves \
             {room} ns for everything the gate does to a SYN. A stranger whose /28 holds no prefix costs {a} ns over \
             the floor (parse to TCP, the CONFIG entry, two loads from the OCCUPIED bitmap — an ARRAY the verifier \
             inlines, no hashing — and a counter): {qa} the floor. A stranger inside a partner's /32 costs {b} ns \
             more (one line of the /32 table: a multiplicative hash of the top 32 bits picks a 64-byte slot of an \
             ARRAY the verifier inlines — no helper call, no kernel hash — and the /32's longest prefix sits inline \
             in the slot, compared in registers), a partner another {c} ns (its per-partner hit counter): {qn} and \
             {qp} the floor. For scale, one BPF hash-map lookup (hash the key, walk the bucket, compare) costs about \
             as much as the whole floor on this machine{xs}{ts}. The lookup itself is no longer what misses: the \
             worst row in the Targets table names the class, and where it is a verdict that writes (defer → RST \
             rewrites the frame and sends it back, drop and reset count per CPU for the reports) it is that work \
             after the lookup. The flood path already ends a suppressed report at a clock read and one compare (the \
             per-CPU \"suppressed until\" word); what is left of it is the clock helper call itself, about 20 ns, and \
             skipping it would change when reports go out. What would close the rest: a verdict path that writes \
             less — e.g. counting a drop in the report bucket's own line instead of a separate per-CPU counter.\n",
            sz = size_name(n),
            f = num(f),
            room = num(f * (limit - 1.0)),
            a = num(far - f),
            qa = ratio(far, f),
            b = num(near - far),
            c = num(partner - near),
            qn = ratio(near, f),
            qp = ratio(partner, f),
            xs = x
                .map(|x| format!(
                    ": xdp-filter, whose allow mode is two hash lookups of 16-byte addresses and little else, takes {} ns, {} the floor",
                    num(x),
                    ratio(x, f)
                ))
                .unwrap_or_default(),
            ts = t
                .map(|t| format!("; the plain trie stand-in, one LPM lookup and nothing else, {} ns, {}", num(t), ratio(t, f)))
                .unwrap_or_default(),
        );
    }
    // Cold at 1M.
    if missed("cold at 1M") {
        let n = 1_000_000;
        let g = |c: &str| med(pp, n, c, Prog::Gate, Temp::Cold);
        let h = |c: &str| med(pp, n, c, Prog::Gate, Temp::Hot);
        let t = med(pp, n, "partner", Prog::Trie, Temp::Cold);
        let x = med(pp, n, "near", Prog::XdpFilter, Temp::Cold);
        let fmt = |v: Option<f64>| v.map(num).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            o,
            "* **Cold at 1M, ≤ 300 ns.** With sources spread over a table several times the L3, every probe is a \
             cache miss to DRAM, and the gate's loads depend on one another. Cold vs hot at 1M: stranger with no \
             prefix in its /28 {} vs {} ns (the bitmap: a 16 KiB summary, then a 4 MiB table of /28 cells), \
             stranger next to a partner {} vs {} ns, partner {} vs {} ns (the bitmap, then one line of the /32 \
             table — one dependent miss after the bitmap's, where the kernel hash it replaced took two, bucket and \
             element); the plain trie {} ns, xdp-filter {} ns. What would close it: fewer lines in front of the \
             table — the summary and the 4 MiB cell table are a miss each before it — e.g. folding the cell bit into \
             the table's slot for /28s that hold prefixes.\n",
            fmt(g("drop")),
            fmt(h("drop")),
            fmt(g("near")),
            fmt(h("near")),
            fmt(g("partner")),
            fmt(h("partner")),
            fmt(t),
            fmt(x),
        );
    }
    if missed("xdp-filter") {
        let _ = writeln!(
            o,
            "* **Below xdp-filter.** xdp-filter's allow mode looks the destination and then the source up in one \
             hash of exact 16-byte addresses, after parsing only the Ethernet and IPv6 headers; it needs one entry \
             per address (it cannot hold a /48). The gate parses on to TCP (VLAN tags, extension headers), checks \
             the flags and the port, and then looks the source up by prefix: two inlined bitmap loads when no prefix \
             lies in the source's /28 — the class where it is far below xdp-filter — and one line of the /32 table \
             more for a partner or a stranger next to one (the /32's longest prefix inline: no second-level probe). \
             Where those are still above, it is the bitmap in front of the table: cold, the 4 MiB cell table costs a \
             miss of its own (the far-stranger row) before the table's line, where xdp-filter (whose destination \
             lookup stays hot) pays its hash's alone.\n"
        );
    }
    if missed("Memory") {
        if let Some(m) = r.memory.iter().find(|m| m.n == 1_000_000) {
            let total: u64 = m.gate_maps.iter().map(|(_, b)| b).sum();
            let mut big: Vec<&(String, u64)> = m
                .gate_maps
                .iter()
                .filter(|(_, b)| *b * 20 >= total)
                .collect();
            big.sort_by_key(|b| std::cmp::Reverse(b.1));
            let list: Vec<String> = big
                .iter()
                .map(|(n, b)| format!("{n} {}", super::mib(*b as f64)))
                .collect();
            let _ = writeln!(
                o,
                "* **Memory at 1M.** The maps take {} at 1M; the largest: {}. The /32 table is preallocated: two \
                 images (the tear-free switch) of 2 × `maps.allow_entries` slots of one 64-byte line each, sized \
                 for as many distinct /32s as prefixes, where the kernel hash it replaced allocated per entry \
                 present. What would close it: sizing the table by distinct /32s (a `[maps]` key of its own: a \
                 million prefixes rarely means a million /32s), a higher load factor with Robin Hood probing, or a \
                 32-byte slot (the inline prefix's masks follow from its length).\n",
                super::mib(total as f64),
                list.join(", ")
            );
        }
    }
    if missed("Wire") {
        // The size where the gate is least ahead of nftables.
        let n = r
            .wire
            .iter()
            .filter(|g| g.dropper == Dropper::Gate)
            .filter_map(|g| {
                let f = r
                    .wire
                    .iter()
                    .find(|w| w.n == g.n && w.dropper == Dropper::Nft)?;
                Some((f.ns_per_pkt.median / g.ns_per_pkt.median, g.n))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(100_000, |(_, n)| n);
        let w = |d: Dropper| {
            r.wire
                .iter()
                .find(|p| p.n == n && p.dropper == d)
                .map(|p| p.ns_per_pkt.median)
        };
        if let (Some(fl), Some(g), Some(nf)) =
            (w(Dropper::XdpDrop), w(Dropper::Gate), w(Dropper::Nft))
        {
            let _ = writeln!(
                o,
                "* **Wire, ≥ 5× nftables.** At {} (the size where the gate is least ahead) per dropped packet the \
                 receiving core spent {} ns with the gate and {} ns with nftables; but {} ns of either is the veth's own work for a frame (the bare XDP_DROP row), which a \
                 real NIC's driver would do differently. Net of it the gate costs {} ns and nftables {} ns per packet: \
                 {}. The gate's own share is what part 1 measures; the same second-level change would shrink it.\n",
                size_name(n),
                num(g),
                num(nf),
                num(fl),
                num(g - fl),
                num(nf - fl),
                ratio(nf - fl, g - fl)
            );
        }
    }
    if missed("prefixes/s") || missed("as fast as") {
        let rows: Vec<String> = r
            .control
            .iter()
            .filter(|c| c.n >= 10_000)
            .map(|c| {
                format!(
                    "{}: cold start {} ms = Gate::load {} ms + sync {} ms, i.e. {}/s overall and {}/s for \
                     the prefixes alone, against {}/s for `nft -f`",
                    size_name(c.n),
                    num(c.gate_total.median * 1e3),
                    num(c.gate_load.median * 1e3),
                    num(c.gate_apply.median * 1e3),
                    rate(c.n as f64 / c.gate_total.median),
                    rate(c.n as f64 / c.gate_apply.median),
                    rate(c.n as f64 / c.nft_load.median),
                )
            })
            .collect();
        let load_bound = r
            .control
            .iter()
            .filter(|c| c.n >= 10_000)
            .any(|c| c.gate_load.median > c.gate_apply.median);
        let apply_slow = r
            .control
            .iter()
            .filter(|c| c.n >= 10_000)
            .any(|c| (c.n as f64 / c.gate_apply.median) < 300_000.0);
        let _ = writeln!(
            o,
            "* **Control plane, cold start.** {}. {}{}\n",
            rows.join("; "),
            if load_bound {
                format!(
                    "Where the target is missed at the small end, the fixed cost of Gate::load dominates. Timed \
                     step by step on this machine (2026-12-01, about 100 ms in all): the XDP program through the \
                     verifier about 70 ms (every path of the header walk and the unrolled /32 probe is explored), \
                     the kernel-requirements probe 15–25 ms (a network namespace of its own to try the links), aya \
                     0.14 parsing the kernel's BTF in `EbpfLoader::new` 8–17 ms (the object needs none: no CO-RE \
                     relocations), the object's maps 5–8 ms, sk_lookup's verification 4 ms — about as long as `nft -f` \
                     needs for a whole 10k set (a process start and one transaction).{} It is paid once per \
                     controller start, never per change (later syncs reload nothing); closing the gap at 10k would \
                     mean a cheaper load — the allowlist walk as a global BPF function the verifier checks once \
                     instead of on every path into it, the link probe answered once per boot, aya ≥ 0.15 (which \
                     parses the kernel BTF only for objects with CO-RE relocations) — rather than a faster sync. ",
                    if apply_slow {
                        ""
                    } else {
                        " The prefixes themselves go in well above 300k/s."
                    }
                )
            } else {
                String::new()
            },
            if apply_slow {
                "Where the sync itself is below 300k prefixes/s: batch map operations throughout \
                 (BPF_MAP_UPDATE_BATCH for every map) and no read-back at all into maps that were just created \
                 empty would close it (the plain-trie fill column shows what the kernel itself needs for this many \
                 insertions)."
            } else {
                ""
            }
        );
    }
    if missed("1% change") {
        if let Some(c) = r.control.iter().find(|c| c.n == 1_000_000) {
            let _ = writeln!(
                o,
                "* **1% change at 1M.** One change ({} prefixes out and in) took {} ms through the product's sync \
                 (the snapshot diff) and {} ms through the full read-back path, against {} ms for the whole cold \
                 sync: the snapshot diff is {:.0}% of a full load for 2% of the prefixes. What would close it: a \
                 diff whose cost follows the change rather than the set — whatever in it still walks, serialises \
                 or rewrites all N prefixes (in the version measured the snapshot file is written whole on every \
                 sync) is where the time goes; an append-only change log, compacted now and then, would avoid \
                 rewriting it.\n",
                c.change_size,
                num(c.gate_change.median * 1e3),
                num(c.gate_change_full.median * 1e3),
                num(c.gate_apply.median * 1e3),
                100.0 * c.gate_change.median / c.gate_apply.median,
            );
        }
    }
    let _ = largest;
    o
}
