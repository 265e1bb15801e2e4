//! Moving the maps to a plan by diff, in an order that never hides a
//! prefix that stays; the capacity checks made before any write.
use super::*;
/// Prefix-level summary of an apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub total: usize,
}

pub(super) fn upserts<'a, K: Ord + Copy, V: PartialEq + Copy>(
    want: &'a BTreeMap<K, V>,
    have: &'a BTreeMap<K, V>,
) -> Vec<(K, V)> {
    want.iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect()
}

pub(super) fn stale<K: Ord + Copy, V>(want: &BTreeMap<K, V>, have: &BTreeMap<K, V>) -> Vec<K> {
    have.keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect()
}

/// Fail, changing nothing, if `plan` does not fit the maps.
pub fn check_capacity(maps: &GateMaps, plan: &Plan) -> Result<()> {
    for (name, n) in [
        ("SLASH32_TABLE (distinct /32s)", plan.slash32.len()),
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

/// Every prefix longer than /32 under the /32s `tops`, as `p` lays them
/// out (inline, and in LONG_PREFIXES by the entry's lengths): what the
/// trie must hold for an unplaced /32.
pub(super) fn prefixes_under(p: &Plan, tops: &BTreeSet<[u8; 4]>) -> BTreeMap<Ipv6Net, PartnerId> {
    let mut out = BTreeMap::new();
    for top in tops {
        let Some(e) = p.slash32.get(top) else {
            continue;
        };
        if e.inline_id != NO_PARTNER {
            if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(e.inline_addr(*top)), e.inline_len as u8) {
                out.insert(n, e.inline_id);
            }
        }
        let base = u128::from(u32::from_be_bytes(*top)) << 96;
        let mut lens = e.lens;
        while let Some(len) = mx6gate_common::allow::pop_longest(&mut lens) {
            let lo = LongKey {
                prefix_len: len,
                addr: base.to_be_bytes(),
            };
            let hi = LongKey {
                prefix_len: len,
                addr: (base | (u128::MAX >> 32)).to_be_bytes(),
            };
            for (k, id) in p.long.range(lo..=hi) {
                if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(k.addr), k.prefix_len as u8) {
                    out.insert(n, *id);
                }
            }
        }
    }
    out
}

/// Write the difference between `have` and `want` (plans of the same
/// scope), so that a lookup meanwhile gives the old answer or the new one
/// for every source — never refuses a partner of both, never lets in a
/// stranger to both:
///
/// 1. the /32 table's inactive image (no program reads it: a refusal
///    here, a too-crowded table, changes nothing the programs see);
/// 2. additions to LONG_PREFIXES and the trie (the new image's entries
///    point at them; the old image's never asked for them);
/// 3. publish the new image, and wait until no program reads the old one;
/// 4. OCCUPIED (a new prefix shows once all below it is there, see
///    below) and TRIE_ON_MISS;
/// 5. the same edits into the image left (both equal again);
/// 6. removals from LONG_PREFIXES and the trie, which only the old image
///    pointed at — and no program reads it any more (3).
pub(super) fn write_diff(maps: &mut GateMaps, want: &Plan, have: &Plan) -> Result<()> {
    let edits = table::Edits {
        upserts: upserts(&want.slash32, &have.slash32),
        removals: stale(&want.slash32, &have.slash32),
    };
    let t = &maps.table;
    let unplaced_before = table::unplaced(t, t.active());
    let next = table::begin(t);
    table::write_inactive(t, next, &edits)?;
    // Unplaced /32s are answered by the trie: it holds what lies under
    // them, in this plan's scope (the rest stays as it is).
    let mut want_trie = want.trie.clone();
    want_trie.extend(prefixes_under(want, &table::unplaced(t, next)));
    let mut have_trie = have.trie.clone();
    have_trie.extend(prefixes_under(have, &unplaced_before));
    // A /32 that was unplaced and found a slot when another left may have
    // left its prefixes in the trie (harmless while they are in the set:
    // the trie is asked about a /32 only when it holds all of it). Those
    // leaving the set go from the trie too, wherever they were.
    let touched: BTreeSet<[u8; 4]> = edits
        .upserts
        .iter()
        .map(|(t, _)| *t)
        .chain(edits.removals.iter().copied())
        .collect();
    let staying = prefixes_under(want, &touched);
    let leaving: Vec<Ipv6Net> = prefixes_under(have, &touched)
        .into_keys()
        .filter(|n| !staying.contains_key(n) && !have_trie.contains_key(n))
        .collect();
    batch::update(
        maps.long.map(),
        &upserts(&want.long, &have.long),
        "updating LONG_PREFIXES",
    )?;
    for (n, v) in upserts(&want_trie, &have_trie) {
        maps.allow
            .insert(&trie_key(&n), v, 0)
            .with_context(|| format!("adding {n} to the ALLOW trie"))?;
    }
    table::publish(&maps.table, next)?;
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
    table::finish(&maps.table, 1 - next, &edits)?;
    batch::delete(
        maps.long.map(),
        &stale(&want.long, &have.long),
        "removing from LONG_PREFIXES",
    )?;
    for n in stale(&want_trie, &have_trie) {
        maps.allow
            .remove(&trie_key(&n))
            .with_context(|| format!("removing {n} from the ALLOW trie"))?;
    }
    for n in leaving {
        match maps.allow.remove(&trie_key(&n)) {
            Ok(()) => {}
            // Most were never there (aya reports the kernel's ENOENT as a
            // failed syscall, not KeyNotFound).
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("removing {n} from the ALLOW trie")),
        }
    }
    Ok(())
}

/// What changed between `before` and `after`, looking only at `nets` (the
/// prefixes that differ, when the caller knows them).
pub(super) fn changes_in<'a>(
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

pub(super) fn changes(
    before: &BTreeMap<Ipv6Net, PartnerId>,
    after: &BTreeMap<Ipv6Net, PartnerId>,
) -> Changes {
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

/// Cheap upper bounds of `plan(prefixes)`'s map sizes: when they fit, the
/// plan fits, without planning a million prefixes to find out.
pub(super) fn fits_surely(maps: &GateMaps, prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> bool {
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
