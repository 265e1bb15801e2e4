//! A prefix set → the layout the programs probe (`mx6gate_common::allow`):
//! /32 slots, OCCUPIED cells and their summary, long prefixes, and what
//! falls back to the trie.
use super::*;
pub(super) fn top32(net: &Ipv6Net) -> [u8; 4] {
    let o = net.network().octets();
    [o[0], o[1], o[2], o[3]]
}

/// The top 32 bits (as a number) a prefix spans, first and last.
pub(super) fn top_span(net: &Ipv6Net) -> (u32, u32) {
    let first = u32::from_be_bytes(top32(net));
    let last = first
        | u32::MAX
            .checked_shr(net.prefix_len().min(32).into())
            .unwrap_or(0);
    (first, last)
}

/// The OCCUPIED cells a prefix overlaps, first and last; None when it lies
/// outside 2000::/3.
pub(super) fn cell_span(net: &Ipv6Net) -> Option<(u32, u32)> {
    let (first, last) = top_span(net);
    let lo = OCCUPIED_TOP3 << 29;
    let hi = lo | (u32::MAX >> 3);
    if last < lo || first > hi {
        return None;
    }
    Some((cell_of(first.max(lo))?, cell_of(last.min(hi))?))
}

/// Set the bits of cells `first..=last` in `words`.
pub(super) fn set_cells(words: &mut BTreeMap<u32, u64>, first: u32, last: u32) {
    for w in first / 64..=last / 64 {
        let lo = if w == first / 64 { first % 64 } else { 0 };
        let hi = if w == last / 64 { last % 64 } else { 63 };
        let bits = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        *words.entry(w).or_insert(0) |= bits;
    }
}

/// One /32's prefixes longer than /32 (all of them, sorted): the longest
/// goes inline in its SLASH32 entry, the others to LONG_PREFIXES.
pub(super) fn place_group(p: &mut Plan, top: [u8; 4], group: &[(Ipv6Net, PartnerId)]) {
    let Some(best) = group
        .iter()
        .enumerate()
        .max_by_key(|(i, (n, _))| (n.prefix_len(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
    else {
        return;
    };
    let e = p.slash32.entry(top).or_insert(Slash32::EMPTY);
    for (i, (net, id)) in group.iter().enumerate() {
        if i == best {
            e.set_inline(&net.network().octets(), net.prefix_len(), *id);
            continue;
        }
        e.add_len(net.prefix_len());
        p.long.insert(
            LongKey {
                prefix_len: net.prefix_len() as u32,
                addr: net.network().octets(),
            },
            *id,
        );
    }
}

pub fn plan(prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> Plan {
    let mut p = Plan::default();
    let mut short: Vec<(Ipv6Net, PartnerId)> = Vec::new();
    // Prefixes in address order: those under one /32 come together.
    let mut group: Vec<(Ipv6Net, PartnerId)> = Vec::new();
    let mut group_top = [0u8; 4];
    for (net, id) in prefixes {
        if net.prefix_len() <= 32 {
            short.push((*net, *id));
            continue;
        }
        let top = top32(net);
        if top != group_top && !group.is_empty() {
            place_group(&mut p, group_top, &group);
            group.clear();
        }
        group_top = top;
        group.push((*net, *id));
    }
    place_group(&mut p, group_top, &group);
    // Short prefixes: in the trie always; expanded into their /32s when
    // that stays cheap, else the programs consult the trie on a miss.
    for (net, id) in &short {
        p.trie.insert(*net, *id);
        if net.prefix_len() < MIN_EXPAND_LEN {
            p.trie_on_miss = true;
            continue;
        }
        let base = u32::from_be_bytes(top32(net));
        for i in 0..(1u32 << (32 - net.prefix_len())) {
            p.slash32
                .entry((base + i).to_be_bytes())
                .or_insert(Slash32::EMPTY);
        }
    }
    // Each /32 gets the longest short prefix covering it: visit shorts from
    // short to long, each overwriting the /32s in its span.
    short.sort_by_key(|(n, _)| n.prefix_len());
    for (net, id) in &short {
        let first = u32::from_be_bytes(top32(net));
        let last = first | u32::MAX.checked_shr(net.prefix_len().into()).unwrap_or(0);
        for (_, e) in p
            .slash32
            .range_mut(first.to_be_bytes()..=last.to_be_bytes())
        {
            e.short_id = *id;
        }
    }
    let mut crowded = Vec::new();
    for (top, e) in p.slash32.iter_mut() {
        if e.len_count() as usize > MAX_PROBES {
            e.flags |= USE_TRIE;
            crowded.push(*top);
        }
    }
    for top in crowded {
        let lo = Ipv6Net::new(
            Ipv6Addr::from(u128::from(u32::from_be_bytes(top)) << 96),
            32,
        )
        .unwrap();
        let hi = Ipv6Net::new(
            Ipv6Addr::from((u128::from(u32::from_be_bytes(top)) << 96) | (u128::MAX >> 32)),
            128,
        )
        .unwrap();
        for (net, id) in prefixes.range(lo..=hi) {
            if net.prefix_len() > 32 {
                p.trie.insert(*net, *id);
            }
        }
    }
    // A cell is occupied when a prefix overlaps it: every /32 with an entry
    // (prefixes under it, or expanded short ones over it), and every cell
    // under a short prefix too short to expand.
    for top in p.slash32.keys() {
        if let Some(c) = cell_of(u32::from_be_bytes(*top)) {
            set_cells(&mut p.occupied, c, c);
        }
    }
    for (net, _) in &short {
        if net.prefix_len() < MIN_EXPAND_LEN {
            if let Some((first, last)) = cell_span(net) {
                set_cells(&mut p.occupied, first, last);
            }
        }
    }
    p.summary = summary_of(&p.occupied);
    p
}

/// A cell word's summary cell (words are 64 cells, summary cells 256).
pub(super) const WORDS_PER_SUMMARY: u32 = (1 << SUMMARY_SHIFT) / 64;

pub(super) fn summary_of(occupied: &BTreeMap<u32, u64>) -> BTreeMap<u32, ()> {
    occupied
        .iter()
        .filter(|(_, bits)| **bits != 0)
        .map(|(w, _)| (w / WORDS_PER_SUMMARY, ()))
        .collect()
}

/// OCCUPIED words `first..=last` as `plan(prefixes)` has them (the
/// non-zero ones), from the prefixes that overlap their span alone: those
/// covering its start and those inside it (for partial plans).
pub(super) fn occupied_words(
    prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    first: u32,
    last: u32,
) -> BTreeMap<u32, u64> {
    // A word covers 64 cells: a /(CELL_LEN - 6) of 2000::/3.
    let span_len = u32::from(CELL_LEN) - 6;
    let addr = |w: u32| (u128::from(OCCUPIED_TOP3) << 125) | (u128::from(w) << (128 - span_len));
    let start = Ipv6Addr::from(addr(first));
    let end = Ipv6Addr::from(addr(last) | (u128::MAX >> span_len));
    let mut words = BTreeMap::new();
    let mut add = |n: &Ipv6Net| {
        if let Some((a, b)) = cell_span(n) {
            let (a, b) = (a.max(first * 64), b.min(last * 64 + 63));
            if a <= b {
                set_cells(&mut words, a, b);
            }
        }
    };
    for len in 0..=span_len as u8 {
        let n = Ipv6Net::new(start, len).unwrap().trunc();
        if prefixes.contains_key(&n) {
            add(&n);
        }
    }
    let lo = Ipv6Net::new(start, 0).unwrap();
    let hi = Ipv6Net::new(end, 128).unwrap();
    for (n, _) in prefixes.range(lo..=hi) {
        add(n);
    }
    words
}

pub(super) fn entries_of(p: &Plan) -> BTreeMap<Ipv6Net, PartnerId> {
    let mut out: BTreeMap<Ipv6Net, PartnerId> = p
        .trie
        .iter()
        .filter(|(n, _)| n.prefix_len() <= 32)
        .map(|(n, v)| (*n, *v))
        .collect();
    for (k, id) in &p.long {
        if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(k.addr), k.prefix_len as u8) {
            out.insert(n, *id);
        }
    }
    for (top, e) in &p.slash32 {
        if e.inline_id == NO_PARTNER {
            continue;
        }
        if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(e.inline_addr(*top)), e.inline_len as u8) {
            out.insert(n, e.inline_id);
        }
    }
    out
}
