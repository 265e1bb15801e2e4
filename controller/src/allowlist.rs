//! The allowlist in the kernel: prefix → partner id, laid out in the
//! two levels the programs probe (see `mx6gate_common::allow`) plus the
//! fallback trie. `plan` turns a prefix set into that layout; `apply`
//! moves the maps to it by diff, in an order that never hides a prefix
//! that stays; `entries` and `lookup` read it back.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use anyhow::{bail, Context, Result};
use aya::maps::lpm_trie::Key;
use ipnet::Ipv6Net;
use mx6gate_common::{
    allow::{
        mask, pop_longest, LongKey, Slash32, MAX_PROBES, MIN_EXPAND_LEN, NO_PARTNER, USE_TRIE,
    },
    GateConfig, PartnerId,
};

use crate::maps::GateMaps;

/// What the maps must hold for one prefix set.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub slash32: BTreeMap<[u8; 4], Slash32>,
    pub long: BTreeMap<LongKey, PartnerId>,
    pub trie: BTreeMap<Ipv6Net, PartnerId>,
    pub trie_on_miss: bool,
}

fn top32(net: &Ipv6Net) -> [u8; 4] {
    let o = net.network().octets();
    [o[0], o[1], o[2], o[3]]
}

pub fn plan(prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> Plan {
    let mut p = Plan::default();
    let (short, long): (Vec<_>, Vec<_>) = prefixes.iter().partition(|(n, _)| n.prefix_len() <= 32);
    for (net, id) in &long {
        p.long.insert(
            LongKey {
                prefix_len: net.prefix_len() as u32,
                addr: net.network().octets(),
            },
            **id,
        );
        p.slash32
            .entry(top32(net))
            .or_insert(Slash32::EMPTY)
            .add_len(net.prefix_len());
    }
    // Short prefixes: in the trie always; expanded into their /32s when
    // that stays cheap, else the programs consult the trie on a miss.
    let short_by_len: BTreeMap<(u8, [u8; 4]), PartnerId> = short
        .iter()
        .map(|(n, id)| ((n.prefix_len(), top32(n)), **id))
        .collect();
    for (net, id) in &short {
        p.trie.insert(**net, **id);
        if net.prefix_len() < MIN_EXPAND_LEN {
            p.trie_on_miss = true;
            continue;
        }
        let base = u32::from_be_bytes(top32(net));
        for i in 0..(1u64 << (32 - net.prefix_len())) {
            p.slash32
                .entry((base + i as u32).to_be_bytes())
                .or_insert(Slash32::EMPTY);
        }
    }
    for (top, e) in p.slash32.iter_mut() {
        // Longest short prefix covering this /32.
        let t = u32::from_be_bytes(*top);
        e.short_id = (0..=32u8)
            .rev()
            .find_map(|len| {
                let m = if len == 0 {
                    0
                } else {
                    t & (!0u32 << (32 - len))
                };
                short_by_len.get(&(len, m.to_be_bytes())).copied()
            })
            .unwrap_or(NO_PARTNER);
        if e.len_count() as usize > MAX_PROBES {
            e.flags |= USE_TRIE;
        }
    }
    for (net, id) in &long {
        if p.slash32[&top32(net)].flags & USE_TRIE != 0 {
            p.trie.insert(**net, **id);
        }
    }
    p
}

fn trie_key(net: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

/// What the maps hold now.
pub fn read(maps: &GateMaps) -> Result<Plan> {
    let mut p = Plan::default();
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

/// The prefix → partner set the maps hold (for status, check, tests).
pub fn entries(maps: &GateMaps) -> Result<BTreeMap<Ipv6Net, PartnerId>> {
    let p = read(maps)?;
    let mut out: BTreeMap<Ipv6Net, PartnerId> = p
        .trie
        .into_iter()
        .filter(|(n, _)| n.prefix_len() <= 32)
        .collect();
    for (k, id) in p.long {
        out.insert(
            Ipv6Net::new(Ipv6Addr::from(k.addr), k.prefix_len as u8)?,
            id,
        );
    }
    Ok(out)
}

/// The programs' lookup, replayed from userspace against the maps.
pub fn lookup(maps: &GateMaps, addr: Ipv6Addr) -> Result<Option<PartnerId>> {
    let src = addr.octets();
    let trie = || maps.allow.get(&Key::new(128, src), 0).ok();
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

/// Move the maps to `prefixes`. Additions land bottom-up (second level and
/// trie before the /32 bitmaps that point at them), removals top-down, so
/// a lookup meanwhile sees the old or the new answer for a prefix that
/// stays, never none.
pub fn apply(maps: &mut GateMaps, prefixes: &BTreeMap<Ipv6Net, PartnerId>) -> Result<Changes> {
    let want = plan(prefixes);
    check_capacity(maps, &want)?;
    let have = read(maps)?;
    let before = entries_of(&have);
    for (k, v) in upserts(&want.long, &have.long) {
        maps.long
            .insert(k, v, 0)
            .context("updating LONG_PREFIXES")?;
    }
    for (n, v) in upserts(&want.trie, &have.trie) {
        maps.allow
            .insert(&trie_key(&n), v, 0)
            .with_context(|| format!("adding {n} to the ALLOW trie"))?;
    }
    for (k, v) in upserts(&want.slash32, &have.slash32) {
        maps.slash32.insert(k, v, 0).context("updating SLASH32")?;
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
    for k in stale(&want.slash32, &have.slash32) {
        maps.slash32.remove(&k).context("removing from SLASH32")?;
    }
    for k in stale(&want.long, &have.long) {
        maps.long
            .remove(&k)
            .context("removing from LONG_PREFIXES")?;
    }
    for n in stale(&want.trie, &have.trie) {
        maps.allow
            .remove(&trie_key(&n))
            .with_context(|| format!("removing {n} from the ALLOW trie"))?;
    }
    let after: BTreeSet<_> = prefixes.keys().collect();
    let added = after.iter().filter(|n| !before.contains_key(n)).count();
    let changed = prefixes
        .iter()
        .filter(|(n, id)| before.get(n).is_some_and(|b| b != *id))
        .count();
    Ok(Changes {
        added,
        changed,
        removed: before.keys().filter(|n| !prefixes.contains_key(n)).count(),
        total: prefixes.len(),
    })
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
        let Some(e) = p.slash32.get(&[src[0], src[1], src[2], src[3]]) else {
            return if p.trie_on_miss { trie() } else { None };
        };
        if e.flags & USE_TRIE != 0 {
            return trie();
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
        // A /32 with more lengths than the probe budget falls back to the trie.
        for len in 33..=(33 + MAX_PROBES as u8) {
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
