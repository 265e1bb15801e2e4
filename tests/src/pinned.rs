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
    // The longest prefix under each /32 is held inline in its entry of the
    // table's active image (placed or stashed), read through a mapping.
    for (top, e) in table_image(pin) {
        if e.inline_id != mx6gate_common::allow::NO_PARTNER {
            let net = Ipv6Net::new(Ipv6Addr::from(e.inline_addr(top)), e.inline_len as u8);
            out.insert(net.unwrap(), e.inline_id);
        }
    }
    out
}

/// The /32 entries of SLASH32_TABLE's active image (see
/// mx6gate_common::allow::TableHeader), read through a read-only mapping.
pub fn table_image(pin: &Path) -> BTreeMap<[u8; 4], mx6gate_common::allow::Slash32> {
    use std::os::fd::{AsFd, AsRawFd};

    use mx6gate_common::allow::{Slot, TableHeader, PROBE_LIMIT};
    let data = MapData::from_pin(pin.join("maps/SLASH32_TABLE")).expect("open SLASH32_TABLE");
    let entries = data.info().expect("SLASH32_TABLE info").max_entries() as usize;
    let len = entries * std::mem::size_of::<Slot>();
    let fd = data.fd().as_fd().as_raw_fd();
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert!(
        ptr != libc::MAP_FAILED,
        "mmap SLASH32_TABLE: {}",
        std::io::Error::last_os_error()
    );
    let slots = unsafe { std::slice::from_raw_parts(ptr as *const Slot, entries) };
    let h: TableHeader = unsafe { std::ptr::read_volatile(ptr as *const TableHeader) };
    let image = h.generation & 1;
    let base = h.image_base(image) as usize;
    let n = (h.slots + PROBE_LIMIT + h.unplaced[image as usize]) as usize;
    let out = slots[base..base + n]
        .iter()
        .filter(|s| s.used != 0)
        .map(|s| (s.top.to_be_bytes(), s.value))
        .collect();
    unsafe { libc::munmap(ptr, len) };
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
