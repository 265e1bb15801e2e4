//! Adopting a gate pinned before the /32 table: its SLASH32 hash (the /32
//! level of those releases, same `Slash32` values) copied into the table.
use std::path::Path;

use aya::maps::{HashMap, Map, MapData};

use super::*;

/// Copy the old SLASH32 hash at `legacy` into the table of the gate at
/// `pin_path` (created empty by this load, read by no program yet), with
/// the trie entries its unplaced /32s need. Returns the /32s copied.
pub fn adopt_legacy_slash32(pin_path: &Path, legacy: &Path) -> Result<usize> {
    let mut maps = GateMaps::open(pin_path)?;
    let data = MapData::from_pin(legacy)
        .with_context(|| format!("opening pinned map {}", legacy.display()))?;
    let old: HashMap<MapData, [u8; 4], Slash32> = Map::from_map_data(data)?.try_into()?;
    let mut p = Plan::default();
    for kv in old.iter() {
        let (k, v) = kv.with_context(|| format!("reading {}", legacy.display()))?;
        p.slash32.insert(k, v);
    }
    let edits = table::Edits {
        upserts: p.slash32.iter().map(|(k, v)| (*k, *v)).collect(),
        removals: Vec::new(),
    };
    table::write_both(&maps.table, &edits)?;
    let unplaced = table::unplaced(&maps.table, maps.table.active());
    if !unplaced.is_empty() {
        for kv in maps.long.iter() {
            let (k, v) = kv?;
            let top = [k.addr[0], k.addr[1], k.addr[2], k.addr[3]];
            if unplaced.contains(&top) {
                p.long.insert(k, v);
            }
        }
        for (n, v) in prefixes_under(&p, &unplaced) {
            maps.allow
                .insert(&trie_key(&n), v, 0)
                .with_context(|| format!("adding {n} to the ALLOW trie"))?;
        }
    }
    Ok(p.slash32.len())
}
