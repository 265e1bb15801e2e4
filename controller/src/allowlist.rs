//! The allowlist in the kernel: prefix → partner id, laid out in the
//! levels the programs probe (see `mx6gate_common::allow`) plus the
//! fallback trie. `plan` turns a prefix set into that layout; `apply`
//! moves the maps to it by diff, in an order that never hides a prefix
//! that stays; `entries` and `lookup` read it back.
use std::collections::{BTreeMap, BTreeSet};
use std::{net::Ipv6Addr, path::Path};

use anyhow::{bail, Context, Result};
use aya::maps::{lpm_trie::Key, IterableMap};
use ipnet::Ipv6Net;
use mx6gate_common::{
    allow::{
        cell_of, mask, mid_lo, pop_longest, LongKey, Slash32, CELL_LEN, MAX_PROBES, MIN_EXPAND_LEN,
        NO_PARTNER, OCCUPIED_TOP3, SUMMARY_SHIFT, USE_TRIE,
    },
    GateConfig, PartnerId,
};

use crate::{batch, maps::GateMaps};

/// What the maps must hold for one prefix set.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// OCCUPIED's non-zero cell words (a word missing here is zero) …
    pub occupied: BTreeMap<u32, u64>,
    /// … and its summary's set cells.
    pub summary: BTreeMap<u32, ()>,
    pub slash32: BTreeMap<[u8; 4], Slash32>,
    pub long: BTreeMap<LongKey, PartnerId>,
    pub trie: BTreeMap<Ipv6Net, PartnerId>,
    pub trie_on_miss: bool,
}

fn top32(net: &Ipv6Net) -> [u8; 4] {
    let o = net.network().octets();
    [o[0], o[1], o[2], o[3]]
}

/// The top 32 bits (as a number) a prefix spans, first and last.
fn top_span(net: &Ipv6Net) -> (u32, u32) {
    let first = u32::from_be_bytes(top32(net));
    let last = first
        | u32::MAX
            .checked_shr(net.prefix_len().min(32).into())
            .unwrap_or(0);
    (first, last)
}

/// The OCCUPIED cells a prefix overlaps, first and last; None when it lies
/// outside 2000::/3.
fn cell_span(net: &Ipv6Net) -> Option<(u32, u32)> {
    let (first, last) = top_span(net);
    let lo = OCCUPIED_TOP3 << 29;
    let hi = lo | (u32::MAX >> 3);
    if last < lo || first > hi {
        return None;
    }
    Some((cell_of(first.max(lo))?, cell_of(last.min(hi))?))
}

/// Set the bits of cells `first..=last` in `words`.
fn set_cells(words: &mut BTreeMap<u32, u64>, first: u32, last: u32) {
    for w in first / 64..=last / 64 {
        let lo = if w == first / 64 { first % 64 } else { 0 };
        let hi = if w == last / 64 { last % 64 } else { 63 };
        let bits = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        *words.entry(w).or_insert(0) |= bits;
    }
}

/// One /32's prefixes longer than /32 (all of them, sorted): the longest
/// goes inline in its SLASH32 entry, the others to LONG_PREFIXES.
fn place_group(p: &mut Plan, top: [u8; 4], group: &[(Ipv6Net, PartnerId)]) {
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
const WORDS_PER_SUMMARY: u32 = (1 << SUMMARY_SHIFT) / 64;

fn summary_of(occupied: &BTreeMap<u32, u64>) -> BTreeMap<u32, ()> {
    occupied
        .iter()
        .filter(|(_, bits)| **bits != 0)
        .map(|(w, _)| (w / WORDS_PER_SUMMARY, ()))
        .collect()
}

/// OCCUPIED words `first..=last` as `plan(prefixes)` has them (the
/// non-zero ones), from the prefixes that overlap their span alone: those
/// covering its start and those inside it (for partial plans).
fn occupied_words(
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

fn trie_key(net: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

/// What the maps hold now.
pub fn read(maps: &GateMaps) -> Result<Plan> {
    let mut p = Plan {
        occupied: maps.occupied.read(),
        summary: maps.occupied.read_summary(),
        ..Plan::default()
    };
    for kv in maps.slash32.iter() {
        let (k, v) = kv?;
        p.slash32.insert(k, v);
    }
    for kv in maps.long.iter() {
        let (k, v) = kv?;
        p.long.insert(k, v);
    }
    for kv in maps.allow.iter() {
        let (k, v) = kv?;
        p.trie.insert(
            Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8)?,
            v,
        );
    }
    p.trie_on_miss = maps.read_config()?.flags & GateConfig::TRIE_ON_MISS != 0;
    Ok(p)
}

/// Whether the maps hold no prefix at all (two map reads, whatever their
/// size: every prefix has a SLASH32 entry or a trie entry).
pub fn is_empty(maps: &GateMaps) -> Result<bool> {
    Ok(maps.slash32.keys().next().transpose()?.is_none()
        && maps.allow.keys().next().transpose()?.is_none())
}

/// The prefix → partner set the maps hold (for status, check, tests).
pub fn entries(maps: &GateMaps) -> Result<BTreeMap<Ipv6Net, PartnerId>> {
    Ok(entries_of(&read(maps)?))
}

/// The programs' lookup, replayed from userspace against the maps.
pub fn lookup(maps: &GateMaps, addr: Ipv6Addr) -> Result<Option<PartnerId>> {
    let src = addr.octets();
    let trie = || maps.allow.get(&Key::new(128, src), 0).ok();
    if let Some(cell) = cell_of(u32::from_be_bytes([src[0], src[1], src[2], src[3]])) {
        if !maps.occupied.summary(cell >> SUMMARY_SHIFT)
            || maps.occupied.get(cell / 64) & (1 << (cell % 64)) == 0
        {
            return Ok(None);
        }
    }
    let Ok(e) = maps.slash32.get(&[src[0], src[1], src[2], src[3]], 0) else {
        let cfg = maps.read_config()?;
        return Ok(if cfg.flags & GateConfig::TRIE_ON_MISS != 0 {
            trie()
        } else {
            None
        });
    };
    if e.flags & USE_TRIE != 0 {
        return Ok(trie());
    }
    let (mid, lo) = mid_lo(&src);
    if e.inline_covers(mid, lo) {
        return Ok(Some(e.inline_id));
    }
    let mut lens = e.lens;
    while let Some(len) = pop_longest(&mut lens) {
        let k = LongKey {
            prefix_len: len,
            addr: mask(&src, len),
        };
        if let Ok(id) = maps.long.get(&k, 0) {
            return Ok(Some(id));
        }
    }
    Ok((e.short_id != NO_PARTNER).then_some(e.short_id))
}

/// Prefix-level summary of an apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub total: usize,
}

fn upserts<'a, K: Ord + Copy, V: PartialEq + Copy>(
    want: &'a BTreeMap<K, V>,
    have: &'a BTreeMap<K, V>,
) -> Vec<(K, V)> {
    want.iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect()
}

fn stale<K: Ord + Copy, V>(want: &BTreeMap<K, V>, have: &BTreeMap<K, V>) -> Vec<K> {
    have.keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect()
}

/// Fail, changing nothing, if `plan` does not fit the maps.
pub fn check_capacity(maps: &GateMaps, plan: &Plan) -> Result<()> {
    for (name, n) in [
        ("SLASH32 (distinct /32s)", plan.slash32.len()),
        ("LONG_PREFIXES (prefixes longer than /32)", plan.long.len()),
        ("ALLOW (trie)", plan.trie.len()),
    ] {
        if n > maps.allow_capacity as usize {
            bail!(
                "the allowlist needs {n} entries in {name} but the maps hold {} (raise maps.allow_entries, then `mx6gate detach` and restart to resize)",
                maps.allow_capacity
            );
        }
    }
    Ok(())
}

/// Write the difference between `have` and `want` (plans of the same
/// scope). Additions land bottom-up (second level and trie before the /32
/// bitmaps that point at them), removals top-down, so a lookup meanwhile
/// sees the old or the new answer for a prefix that stays, never none.
fn write_diff(maps: &mut GateMaps, want: &Plan, have: &Plan) -> Result<()> {
    batch::update(
        maps.long.map(),
        &upserts(&want.long, &have.long),
        "updating LONG_PREFIXES",
    )?;
    for (n, v) in upserts(&want.trie, &have.trie) {
        maps.allow
            .insert(&trie_key(&n), v, 0)
            .with_context(|| format!("adding {n} to the ALLOW trie"))?;
    }
    batch::update(
        maps.slash32.map(),
        &upserts(&want.slash32, &have.slash32),
        "updating SLASH32",
    )?;
    // Level 0 after the levels below are in place (a new prefix shows once
    // all below it is there). A word that changes keeps every bit a staying
    // prefix needs, so its one store is safe. The summary only filters: its
    // new bits go first and its stale ones last, so "a non-zero cell word
    // has its summary bit set" holds at every step, even after a crash
    // midway, and `Occupied::read` may read only the words under set bits.
    for (c, ()) in upserts(&want.summary, &have.summary) {
        maps.occupied.set_summary(c, true);
    }
    for (w, bits) in upserts(&want.occupied, &have.occupied) {
        maps.occupied.set(w, bits);
    }
    for w in stale(&want.occupied, &have.occupied) {
        maps.occupied.set(w, 0);
    }
    for c in stale(&want.summary, &have.summary) {
        maps.occupied.set_summary(c, false);
    }
    if want.trie_on_miss != have.trie_on_miss {
        let mut cfg = maps.read_config()?;
        cfg.flags = (cfg.flags & !GateConfig::TRIE_ON_MISS)
            | if want.trie_on_miss {
                GateConfig::TRIE_ON_MISS
            } else {
                0
            };
        maps.write_config(&cfg)?;
    }
    batch::delete(
        maps.slash32.map(),
        &stale(&want.slash32, &have.slash32),
        "removing from SLASH32",
    )?;
    batch::delete(
        maps.long.map(),
        &stale(&want.long, &have.long),
        "removing from LONG_PREFIXES",
    )?;
    for n in stale(&want.trie, &have.trie) {
        maps.allow
            .remove(&trie_key(&n))
            .with_context(|| format!("removing {n} from the ALLOW trie"))?;
    }
    Ok(())
}

/// What changed between `before` and `after`, looking only at `nets` (the
/// prefixes that differ, when the caller knows them).
fn changes_in<'a>(
    nets: impl Iterator<Item = &'a Ipv6Net>,
    before: &BTreeMap<Ipv6Net, PartnerId>,
    after: &BTreeMap<Ipv6Net, PartnerId>,
) -> Changes {
    let mut c = Changes {
        total: after.len(),
        ..Changes::default()
    };
    for n in nets {
        match (before.get(n), after.get(n)) {
            (None, Some(_)) => c.added += 1,
            (Some(_), None) => c.removed += 1,
            (Some(a), Some(b)) if a != b => c.changed += 1,
            _ => {}
        }
    }
    c
}

fn changes(before: &BTreeMap<Ipv6Net, PartnerId>, after: &BTreeMap<Ipv6Net, PartnerId>) -> Changes {
    Changes {
        added: after.keys().filter(|n| !before.contains_key(n)).count(),
        changed: after
            .iter()
            .filter(|(n, id)| before.get(n).is_some_and(|b| b != *id))
            .count(),
        removed: before.keys().filter(|n| !after.contains_key(n)).count(),
        total: after.len(),
    }
}

/// Move the maps to `prefixes`, whatever they hold now (read back whole).
pub fn apply(maps: &mut GateMaps, prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> Result<Changes> {
    let want = plan(prefixes);
    check_capacity(maps, &want)?;
    let have = read(maps)?;
    let before = entries_of(&have);
    write_diff(maps, &want, &have)?;
    Ok(changes(&before, prefixes))
}

/// The prefix set last applied, saved beside the state so the next update
/// is a diff against it instead of a read of every map (seconds at a
/// million prefixes). Trusted only for the very maps it was written for
/// (the boot and the maps' kernel ids: another gate at the same pin path,
/// or the same state dir used with another gate, never matches) and while
/// CONFIG.allow_generation matches.
struct Snapshot {
    generation: u32,
    identity: Vec<u8>,
    prefixes: BTreeMap<Ipv6Net, PartnerId>,
}

const SNAP_MAGIC: &[u8; 8] = b"MX6SNAP2";

/// Which maps a snapshot describes: this boot's id and the allowlist maps'
/// ids (kernel ids are unique within a boot).
fn identity(maps: &GateMaps) -> Vec<u8> {
    let mut v = std::fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    v.truncate(36);
    v.resize(36, 0);
    for id in maps.ids() {
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

impl Snapshot {
    fn load(path: &Path) -> Option<Snapshot> {
        let b = std::fs::read(path).ok()?;
        let head = 16 + 36 + 4 * GateMaps::ID_COUNT;
        if b.len() < head || &b[..8] != SNAP_MAGIC || !(b.len() - head).is_multiple_of(21) {
            return None;
        }
        let generation = u32::from_le_bytes(b[8..12].try_into().ok()?);
        let identity = b[16..head].to_vec();
        // Saved in order, so collect() bulk-builds the map.
        let prefixes = b[head..]
            .chunks_exact(21)
            .map(|e| {
                let addr: [u8; 16] = e[..16].try_into().ok()?;
                let net = Ipv6Net::new(Ipv6Addr::from(addr), e[16]).ok()?;
                Some((net, u32::from_le_bytes(e[17..21].try_into().ok()?)))
            })
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Snapshot {
            generation,
            identity,
            prefixes,
        })
    }

    fn save(
        path: &Path,
        generation: u32,
        identity: &[u8],
        prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    ) -> Result<()> {
        let mut b = Vec::with_capacity(16 + identity.len() + prefixes.len() * 21);
        b.extend_from_slice(SNAP_MAGIC);
        b.extend_from_slice(&generation.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(identity);
        for (n, id) in prefixes {
            b.extend_from_slice(&n.network().octets());
            b.push(n.prefix_len());
            b.extend_from_slice(&id.to_le_bytes());
        }
        crate::fsutil::write_atomic(path, &b)
    }
}

fn set_generation(maps: &mut GateMaps, g: u32) -> Result<()> {
    let mut cfg = maps.read_config()?;
    cfg.allow_generation = g;
    maps.write_config(&cfg)
}

/// `apply`, but as a diff against the snapshot at `snapshot` when it
/// still describes the maps: only the /32s and prefixes that changed are
/// planned and written. The generation goes odd while the maps change, so
/// a crash midway makes the next run read the maps back in full.
pub fn apply_tracked(
    maps: &mut GateMaps,
    prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    snapshot: &Path,
) -> Result<Changes> {
    let g = maps.read_config()?.allow_generation;
    let ident = identity(maps);
    // Anything doubtful takes the full path, which reads the maps back and
    // checks the exact capacity before writing.
    let snap = Snapshot::load(snapshot).filter(|s| {
        g % 2 == 0 && s.generation == g && s.identity == ident && fits_surely(maps, prefixes)
    });
    if let Some(s) = &snap {
        if s.prefixes == *prefixes {
            // Nothing to do: leave maps, generation and snapshot alone.
            return Ok(changes_in(std::iter::empty(), prefixes, prefixes));
        }
    }
    let next = (g | 1).wrapping_add(1);
    set_generation(maps, g | 1)?;
    let changes = match snap {
        None => apply(maps, prefixes)?,
        Some(s) => {
            let (tops, nets) = affected(&s.prefixes, prefixes);
            let want = partial_plan(prefixes, &tops, &nets);
            let have = partial_plan(&s.prefixes, &tops, &nets);
            write_diff(maps, &want, &have)?;
            changes_in(nets.iter(), &s.prefixes, prefixes)
        }
    };
    Snapshot::save(snapshot, next, &ident, prefixes)?;
    set_generation(maps, next)?;
    Ok(changes)
}

fn top_range(top: [u8; 4]) -> (Ipv6Net, Ipv6Net) {
    let base = u128::from(u32::from_be_bytes(top)) << 96;
    (
        Ipv6Net::new(Ipv6Addr::from(base), 0).unwrap(),
        Ipv6Net::new(Ipv6Addr::from(base | (u128::MAX >> 32)), 128).unwrap(),
    )
}

/// /32s whose SLASH32 entry may differ between `old` and `new`, and the
/// prefixes that differ.
fn affected(
    old: &BTreeMap<Ipv6Net, PartnerId>,
    new: &BTreeMap<Ipv6Net, PartnerId>,
) -> (BTreeSet<[u8; 4]>, BTreeSet<Ipv6Net>) {
    // One merge walk over the two sorted sets.
    let mut nets = BTreeSet::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((n, _)), None) => {
                nets.insert(**n);
                a.next();
            }
            (None, Some((n, _))) => {
                nets.insert(**n);
                b.next();
            }
            (Some((na, ia)), Some((nb, ib))) => match na.cmp(nb) {
                std::cmp::Ordering::Less => {
                    nets.insert(**na);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    nets.insert(**nb);
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ia != ib {
                        nets.insert(**na);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    let mut tops = BTreeSet::new();
    for n in &nets {
        if n.prefix_len() > 32 {
            tops.insert(top32(n));
            continue;
        }
        // A short prefix touches every /32 with an entry in its span.
        let first = u32::from_be_bytes(top32(n));
        let last = first | u32::MAX.checked_shr(n.prefix_len().into()).unwrap_or(0);
        let (lo, _) = top_range(first.to_be_bytes());
        let (_, hi) = top_range(last.to_be_bytes());
        for set in [old, new] {
            for (m, _) in set.range(lo..=hi) {
                if m.prefix_len() > 32 {
                    tops.insert(top32(m));
                } else if m.prefix_len() >= MIN_EXPAND_LEN {
                    let f = u32::from_be_bytes(top32(m));
                    for i in 0..(1u32 << (32 - m.prefix_len())) {
                        tops.insert((f + i).to_be_bytes());
                    }
                }
            }
        }
    }
    (tops, nets)
}

/// The part of `plan(prefixes)` about `tops` and `nets` (the trie-on-miss
/// flag included): plan just the prefixes that can influence them — those
/// under the /32s, the short ones covering them, the changed ones — and
/// keep what concerns them.
fn partial_plan(
    prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    tops: &BTreeSet<[u8; 4]>,
    nets: &BTreeSet<Ipv6Net>,
) -> Plan {
    let mut sub: BTreeMap<Ipv6Net, PartnerId> = BTreeMap::new();
    for top in tops {
        let (lo, hi) = top_range(*top);
        sub.extend(prefixes.range(lo..=hi).map(|(n, id)| (*n, *id)));
        let t = u128::from(u32::from_be_bytes(*top)) << 96;
        for len in 0..32u8 {
            let n = Ipv6Net::new(Ipv6Addr::from(t), len).unwrap().trunc();
            if let Some(id) = prefixes.get(&n) {
                sub.insert(n, *id);
            }
        }
    }
    for n in nets {
        if let Some(id) = prefixes.get(n) {
            sub.insert(*n, *id);
        }
    }
    let mut p = plan(&sub);
    p.trie_on_miss = prefixes.keys().any(|n| n.prefix_len() < MIN_EXPAND_LEN);
    let keep = |n: &Ipv6Net| nets.contains(n) || (n.prefix_len() > 32 && tops.contains(&top32(n)));
    p.slash32.retain(|t, _| tops.contains(t));
    p.long
        .retain(|k, _| keep(&Ipv6Net::new(Ipv6Addr::from(k.addr), k.prefix_len as u8).unwrap()));
    p.trie.retain(|n, _| keep(n));
    // OCCUPIED words depend on every prefix in their span, not only on
    // `sub`: recompute the ones the change can touch from the whole set.
    // Whole summary cells' worth of words, so their summary bits come out
    // exact too.
    let mut groups = BTreeSet::new();
    for top in tops {
        if let Some(c) = cell_of(u32::from_be_bytes(*top)) {
            groups.insert(c / 64 / WORDS_PER_SUMMARY);
        }
    }
    for n in nets {
        if let Some((first, last)) = cell_span(n) {
            groups.extend(first / 64 / WORDS_PER_SUMMARY..=last / 64 / WORDS_PER_SUMMARY);
        }
    }
    let words = groups
        .iter()
        .flat_map(|g| g * WORDS_PER_SUMMARY..(g + 1) * WORDS_PER_SUMMARY);
    // In runs of consecutive words: one range walk each.
    let mut run: Option<(u32, u32)> = None;
    for w in words.into_iter().map(Some).chain([None]) {
        match (run, w) {
            (Some((a, b)), Some(w)) if w == b + 1 => run = Some((a, w)),
            (prev, next) => {
                if let Some((a, b)) = prev {
                    p.occupied.extend(occupied_words(prefixes, a, b));
                }
                run = next.map(|w| (w, w));
            }
        }
    }
    p.summary = summary_of(&p.occupied);
    p
}

/// Cheap upper bounds of `plan(prefixes)`'s map sizes: when they fit, the
/// plan fits, without planning a million prefixes to find out.
fn fits_surely(maps: &GateMaps, prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> bool {
    let (mut long, mut short, mut expanded) = (0usize, 0usize, 0usize);
    for n in prefixes.keys() {
        if n.prefix_len() > 32 {
            long += 1;
        } else {
            short += 1;
            if n.prefix_len() >= MIN_EXPAND_LEN {
                expanded += 1 << (32 - n.prefix_len());
            }
        }
    }
    let cap = maps.allow_capacity as usize;
    long + expanded <= cap && short + long <= cap
}

/// Fail, changing nothing, if `prefixes` do not fit the maps.
pub fn check_fits(maps: &GateMaps, prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> Result<()> {
    if fits_surely(maps, prefixes) {
        return Ok(());
    }
    check_capacity(maps, &plan(prefixes))
}

fn entries_of(p: &Plan) -> BTreeMap<Ipv6Net, PartnerId> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[(&str, u32)]) -> BTreeMap<Ipv6Net, PartnerId> {
        v.iter().map(|(n, id)| (n.parse().unwrap(), *id)).collect()
    }

    /// The kernel's lookup over a plan, in plain Rust.
    fn plan_lookup(p: &Plan, a: Ipv6Addr) -> Option<PartnerId> {
        let src = a.octets();
        let trie = || {
            p.trie
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, id)| *id)
        };
        if let Some(c) = cell_of(u32::from_be_bytes([src[0], src[1], src[2], src[3]])) {
            if !p.summary.contains_key(&(c >> SUMMARY_SHIFT))
                || p.occupied.get(&(c / 64)).copied().unwrap_or(0) & (1 << (c % 64)) == 0
            {
                return None;
            }
        }
        let Some(e) = p.slash32.get(&[src[0], src[1], src[2], src[3]]) else {
            return if p.trie_on_miss { trie() } else { None };
        };
        if e.flags & USE_TRIE != 0 {
            return trie();
        }
        let (mid, lo) = mid_lo(&src);
        if e.inline_covers(mid, lo) {
            return Some(e.inline_id);
        }
        let mut lens = e.lens;
        while let Some(len) = pop_longest(&mut lens) {
            if let Some(id) = p.long.get(&LongKey {
                prefix_len: len,
                addr: mask(&src, len),
            }) {
                return Some(*id);
            }
        }
        (e.short_id != NO_PARTNER).then_some(e.short_id)
    }

    /// What write_diff does to the maps, done to a Plan.
    fn patch(full: &mut Plan, want: &Plan, have: &Plan) {
        for (k, v) in upserts(&want.long, &have.long) {
            full.long.insert(k, v);
        }
        for (k, v) in upserts(&want.trie, &have.trie) {
            full.trie.insert(k, v);
        }
        for (k, v) in upserts(&want.slash32, &have.slash32) {
            full.slash32.insert(k, v);
        }
        for (k, v) in upserts(&want.occupied, &have.occupied) {
            full.occupied.insert(k, v);
        }
        for k in stale(&want.occupied, &have.occupied) {
            full.occupied.remove(&k);
        }
        for (k, v) in upserts(&want.summary, &have.summary) {
            full.summary.insert(k, v);
        }
        for k in stale(&want.summary, &have.summary) {
            full.summary.remove(&k);
        }
        full.trie_on_miss = want.trie_on_miss;
        for k in stale(&want.slash32, &have.slash32) {
            full.slash32.remove(&k);
        }
        for k in stale(&want.long, &have.long) {
            full.long.remove(&k);
        }
        for k in stale(&want.trie, &have.trie) {
            full.trie.remove(&k);
        }
    }

    fn arb_set() -> impl proptest::strategy::Strategy<Value = BTreeMap<Ipv6Net, PartnerId>> {
        use proptest::prelude::*;
        // Few /32s and lengths so sets collide, crowd a /32 and overlap.
        let net = (
            0u32..6,
            prop::sample::select(vec![12u8, 29, 30, 32, 33, 40, 48, 56, 64, 100, 128]),
            any::<u128>(),
            0u32..4,
        )
            .prop_map(|(top, len, rnd, id)| {
                let a = (u128::from(0x2001_0db8u32 + top) << 96) | (rnd >> 32);
                (Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc(), id)
            });
        prop::collection::btree_map(net.prop_map(|(n, _)| n), 0u32..4, 0..40)
    }

    use mx6gate_common::allow::EDGE_TOPS;

    /// Sets mixing every length class the layout treats apart: /0–/31
    /// (expanded or not, inside, around and outside 2000::/3), /32, the
    /// inline and second-level ones (several per /32, equal lengths), /128.
    fn arb_edge_set() -> impl proptest::strategy::Strategy<Value = BTreeMap<Ipv6Net, PartnerId>> {
        use proptest::prelude::*;
        let net = (
            prop::sample::select(EDGE_TOPS.to_vec()),
            prop_oneof![
                1 => prop::sample::select(vec![0u8, 1, 2, 3, 4]),
                60 => prop::sample::select(vec![
                    19u8, 20, 22, 27, 28, 29, 31, 32, 33, 47, 48, 48, 63, 64, 64, 65, 127, 128, 128,
                ]),
            ],
            any::<u128>(),
        )
            .prop_map(|(top, len, rnd)| {
                // Few distinct low parts, so prefixes overlap and nest.
                let a = (u128::from(top) << 96) | ((rnd >> 32) & 0xffff_0000_0000_0000_0000_00ff);
                Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc()
            });
        // Short prefixes are rare in real lists and each one covers a lot:
        // keep the sets small.
        prop::collection::btree_map(net, 0u32..4, 0..24)
    }

    fn edge_probe() -> impl proptest::strategy::Strategy<Value = Ipv6Addr> {
        use proptest::prelude::*;
        (
            prop::sample::select(EDGE_TOPS.to_vec()),
            any::<u128>(),
            any::<bool>(),
        )
            .prop_map(|(top, rnd, near)| {
                let low = if near {
                    (rnd >> 32) & 0xffff_0000_0000_0000_0000_00ff
                } else {
                    rnd >> 32
                };
                Ipv6Addr::from((u128::from(top) << 96) | low)
            })
    }

    proptest::proptest! {
        // A /0–/4 makes every plan hold the whole 4 MiB bitmap: few cases.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn edge_partial_diff_reaches_full_plan(old in arb_edge_set(), new in arb_edge_set()) {
            let mut maps = plan(&old);
            let (tops, nets) = affected(&old, &new);
            patch(&mut maps, &partial_plan(&new, &tops, &nets), &partial_plan(&old, &tops, &nets));
            proptest::prop_assert_eq!(maps, plan(&new));
        }

        #[test]
        fn edge_plan_is_longest_prefix_match(set in arb_edge_set(), probes in proptest::collection::vec(edge_probe(), 60)) {
            let p = plan(&set);
            for a in probes {
                proptest::prop_assert_eq!(plan_lookup(&p, a), lpm(&set, a), "{}", a);
            }
            for n in set.keys() {
                proptest::prop_assert_eq!(plan_lookup(&p, n.network()), lpm(&set, n.network()), "{}", n);
                proptest::prop_assert_eq!(plan_lookup(&p, n.broadcast()), lpm(&set, n.broadcast()), "{}", n);
            }
            proptest::prop_assert_eq!(entries_of(&p), set);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// The incremental path reaches exactly the full plan.
        #[test]
        fn partial_diff_reaches_full_plan(old in arb_set(), new in arb_set()) {
            let mut maps = plan(&old);
            let (tops, nets) = affected(&old, &new);
            patch(&mut maps, &partial_plan(&new, &tops, &nets), &partial_plan(&old, &tops, &nets));
            proptest::prop_assert_eq!(maps, plan(&new));
        }

        /// And the plan answers every address as longest-prefix match does.
        #[test]
        fn plan_is_longest_prefix_match(set in arb_set(), probes in proptest::collection::vec((0u32..6, proptest::prelude::any::<u128>()), 50)) {
            let p = plan(&set);
            for (top, rnd) in probes {
                let a = Ipv6Addr::from((u128::from(0x2001_0db8u32 + top) << 96) | (rnd >> 32));
                proptest::prop_assert_eq!(plan_lookup(&p, a), lpm(&set, a), "{}", a);
            }
            for n in set.keys() {
                proptest::prop_assert_eq!(plan_lookup(&p, n.network()), lpm(&set, n.network()));
            }
        }
    }

    fn lpm(s: &BTreeMap<Ipv6Net, PartnerId>, a: Ipv6Addr) -> Option<PartnerId> {
        s.iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, id)| *id)
    }

    #[test]
    fn plan_matches_longest_prefix_match() {
        let mut v: Vec<(String, u32)> = vec![
            ("2001:db8::/32".into(), 1),
            ("2001:db8:1::/48".into(), 2),
            ("2001:db8:1:5::/64".into(), 3),
            ("2001:db8:1:5::25/128".into(), 4),
            ("2001:db0::/29".into(), 5),
            ("2400::/12".into(), 6),
            ("2400:cafe::/48".into(), 7),
        ];
        // A /32 with more lengths than the probe budget (besides the inline
        // one) falls back to the trie.
        for len in 33..=(34 + MAX_PROBES as u8) {
            v.push((format!("2a00:1::/{len}"), 100 + len as u32));
        }
        let s: BTreeMap<Ipv6Net, PartnerId> =
            v.iter().map(|(n, id)| (n.parse().unwrap(), *id)).collect();
        let p = plan(&s);
        assert!(p.trie_on_miss, "a /12 is not expanded");
        assert_ne!(p.slash32[&[0x2a, 0, 0, 1]].flags & USE_TRIE, 0);
        for a in [
            "2001:db8::1",
            "2001:db8:1::1",
            "2001:db8:1:5::1",
            "2001:db8:1:5::25",
            "2001:db8:2::1",
            "2001:db1::1",
            "2001:db9::1",
            "2401::1",
            "2400:cafe::1",
            "2400:caff::1",
            "2500::1",
            "2a00:1::1",
            "2a00:1:8000::1",
            "2a00:2::1",
            "::1",
        ] {
            let a: Ipv6Addr = a.parse().unwrap();
            assert_eq!(plan_lookup(&p, a), lpm(&s, a), "{a}");
        }
        let _ = set(&[]);
    }
}
