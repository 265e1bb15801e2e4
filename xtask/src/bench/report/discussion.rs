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
             more (one SLASH32 hash probe, 4-byte key; the /32's longest prefix sits inline in the entry and is \
             compared in registers, so with one prefix per /32 there is no second probe), a partner another {c} ns \
             (its per-partner hit counter): {qn} and {qp} the floor. One BPF hash-map lookup (hash the key, walk \
             the bucket, compare) costs about as much as the whole floor on this machine{xs}{ts}. So a partner \
             cannot come under the ratio while it needs one kernel hash probe; what would: a /32 level that \
             answers without the kernel's hash — e.g. an open-addressed table in an ARRAY map (the verifier \
             inlines the index, a multiplicative hash, one cache line per probe), which then needs tear-free \
             updates from the controller. Not built yet; the design argued for (issue 14): one table, not two \
             (two double the level's memory, past the 1M target), and no sequence word per slot (a writer \
             preempted mid-slot leaves a bounded reader with no answer: a partner refused or a stranger allowed) \
             but copy-on-write slots — an entry is written into a free slot and published by one 8-byte store of \
             its key word, the copy it replaces retired after, and a retired slot reused only after an RCU grace \
             period (membarrier(MEMBARRIER_CMD_GLOBAL) waits for every program run in progress).\n",
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
             stranger next to a partner {} vs {} ns, partner {} vs {} ns (the bitmap, then one SLASH32 probe: the \
             kernel hash's bucket array and then its element, two dependent misses after the bitmap's); the plain trie {} ns, \
             xdp-filter {} ns. What would close it: one line per lookup at the /32 level — the ARRAY-backed \
             open-addressed table described above — instead of the kernel hash's two.\n",
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
             lies in the source's /28 — the class where it is far below xdp-filter — and one SLASH32 hash probe more \
             for a partner or a stranger next to one (the /32's longest prefix inline: no second-level probe). \
             Where those are still above, it is that probe plus the bitmap in front of it: cold, the 4 MiB cell \
             table costs a miss of its own (the far-stranger row) before the hash's two dependent ones, where \
             xdp-filter (whose destination lookup stays hot) pays the hash's alone. The ARRAY-backed /32 table \
             described above is what would put them below.\n"
        );
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
                    "Where the target is missed at the small end, the fixed cost of Gate::load dominates: aya \
                     parsing the kernel's BTF (every EbpfLoader does, though the object carries none), both programs \
                     through the verifier, the maps created and pinned — about as long as `nft -f` needs for a \
                     whole 10k set (a process start and one transaction).{} It is paid once per controller start, \
                     never per change (later syncs reload nothing); closing the gap at 10k would mean a cheaper \
                     load still — a smaller XDP program for the verifier, a loader that skips the kernel BTF — \
                     rather than a faster sync. ",
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
