//! The gate's pinned maps read directly with aya, not through the
//! controller, so a test sees what the kernel holds (the allowlist in its
//! levels, the CONFIG word the programs read).
use std::{collections::BTreeMap, net::Ipv6Addr, path::Path};

use aya::maps::{lpm_trie::LpmTrie, Array, Map, MapData};
use ipnet::Ipv6Net;

/// The allowlist in the pinned maps, read with aya (not through the
/// controller): prefixes longer than /32 from LONG_PREFIXES and inline in
/// SLASH32, the rest from the ALLOW trie (see mx6gate_common::allow).
pub fn allow_map(pin: &Path) -> BTreeMap<Ipv6Net, u32> {
    let data = MapData::from_pin(pin.join("maps/ALLOW")).expect("open pinned ALLOW");
    let map = Map::from_map_data(data).expect("ALLOW map");
    let trie: LpmTrie<MapData, [u8; 16], u32> = map.try_into().expect("ALLOW is an LPM trie");
    let mut out = BTreeMap::new();
    for kv in trie.iter() {
        let (k, v) = kv.expect("iterating ALLOW");
        if k.prefix_len() <= 32 {
            let net = Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8).unwrap();
            out.insert(net, v);
        }
    }
    let data =
        MapData::from_pin(pin.join("maps/LONG_PREFIXES")).expect("open pinned LONG_PREFIXES");
    let map = Map::from_map_data(data).expect("LONG_PREFIXES map");
    let long: aya::maps::HashMap<MapData, mx6gate_common::allow::LongKey, u32> =
        map.try_into().expect("LONG_PREFIXES is a hash");
    for kv in long.iter() {
        let (k, v) = kv.expect("iterating LONG_PREFIXES");
        out.insert(
            Ipv6Net::new(Ipv6Addr::from(k.addr), k.prefix_len as u8).unwrap(),
            v,
        );
    }
    // The longest prefix under each /32 is held inline in its SLASH32 entry.
    let data = MapData::from_pin(pin.join("maps/SLASH32")).expect("open pinned SLASH32");
    let map = Map::from_map_data(data).expect("SLASH32 map");
    let slash32: aya::maps::HashMap<MapData, [u8; 4], mx6gate_common::allow::Slash32> =
        map.try_into().expect("SLASH32 is a hash");
    for kv in slash32.iter() {
        let (top, e) = kv.expect("iterating SLASH32");
        if e.inline_id != mx6gate_common::allow::NO_PARTNER {
            let net = Ipv6Net::new(Ipv6Addr::from(e.inline_addr(top)), e.inline_len as u8);
            out.insert(net.unwrap(), e.inline_id);
        }
    }
    out
}

pub const CFG_SIZE: usize = std::mem::size_of::<mx6gate_common::GateConfig>();

/// The pinned CONFIG map's only value, as bytes.
pub fn config_map(pin: &Path) -> Vec<u8> {
    let data = MapData::from_pin(pin.join("maps/CONFIG")).expect("open pinned CONFIG");
    let map = Map::from_map_data(data).expect("CONFIG map");
    let arr: Array<MapData, [u8; CFG_SIZE]> = map.try_into().expect("CONFIG is an array");
    arr.get(&0, 0).expect("CONFIG[0]").to_vec()
}

/// The mode word the XDP program reads (CONFIG.mode, first u32).
pub fn config_mode(pin: &Path) -> u32 {
    let b = config_map(pin);
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}
