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
pub(super) fn write_diff(maps: &mut GateMaps, want: &Plan, have: &Plan) -> Result<()> {
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
