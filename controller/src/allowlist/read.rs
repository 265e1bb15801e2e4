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
    p.slash32 = table::read_image(&maps.table, maps.table.active());
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

/// Whether the maps hold no prefix at all (the table's count and one trie
/// read, whatever their size: every prefix has a /32 entry or a trie entry).
pub fn is_empty(maps: &GateMaps) -> Result<bool> {
    let h = maps.table.header();
    Ok(h.count[maps.table.active() as usize] == 0
        && maps.allow.keys().next().transpose()?.is_none())
}

/// The /32 level's fill: /32s in the active image, and how many of them
/// hold a prefix inline (a memory scan of the mapping, no syscalls).
pub fn table_fill(maps: &GateMaps) -> (u64, u64) {
    let entries = table::read_image(&maps.table, maps.table.active());
    let inline = entries
        .values()
        .filter(|e| e.inline_id != NO_PARTNER)
        .count();
    (entries.len() as u64, inline as u64)
}

/// The prefix → partner set the maps hold (for status, check, tests).
pub fn entries(maps: &GateMaps) -> Result<BTreeMap<Ipv6Net, PartnerId>> {
    Ok(entries_of(&read(maps)?))
}

/// The pinned maps as the walk reads them, one syscall per read (the
/// config only if the walk asks for TRIE_ON_MISS).
struct Pinned<'a> {
    maps: &'a GateMaps,
    /// The config's first read failure, reported by `lookup`.
    error: std::cell::RefCell<Option<anyhow::Error>>,
}

impl Levels for Pinned<'_> {
    type Slash32 = Slash32;

    fn occupied(&self, i: u32) -> Option<u64> {
        Some(self.maps.occupied.get(i))
    }

    fn slash32(&self, top: &[u8; 4]) -> mx6gate_common::allow::Probe<Slash32> {
        table::lookup(&self.maps.table, top)
    }

    fn long(&self, key: &LongKey) -> Option<PartnerId> {
        self.maps.long.get(key, 0).ok()
    }

    fn trie(&self, src: &[u8; 16]) -> Option<PartnerId> {
        self.maps.allow.get(&Key::new(128, *src), 0).ok()
    }

    fn trie_on_miss(&self) -> bool {
        match self.maps.read_config() {
            Ok(cfg) => cfg.flags & GateConfig::TRIE_ON_MISS != 0,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                false
            }
        }
    }
}

/// The programs' lookup (`mx6gate_common::allow::walk`, the very code
/// they run), replayed from userspace against the maps.
pub fn lookup(maps: &GateMaps, addr: Ipv6Addr) -> Result<Option<PartnerId>> {
    let pinned = Pinned {
        maps,
        error: Default::default(),
    };
    let found = walk(&pinned, &addr.octets());
    match pinned.error.into_inner() {
        Some(e) => Err(e),
        None => Ok(found),
    }
}
