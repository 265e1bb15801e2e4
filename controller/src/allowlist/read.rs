//! Reading the layout back from the maps: the whole plan, the prefix
//! set it holds, and one address's lookup as the programs do it.
use super::*;
pub(super) fn trie_key(net: &Ipv6Net) -> Key<[u8; 16]> {
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
