//! The allowlist lookup over the kernel maps: `mx6gate_common::allow::walk`
//! (the one walk the controller and the tests replay too) on the statics
//! of maps.rs.
use aya_ebpf::maps::lpm_trie::Key;
use mx6gate_common::{
    allow::{probe, walk, Levels, LongKey, Probe, Slash32, TableHeader},
    GateConfig, PartnerId,
};

use crate::maps::{ALLOW, LONG_PREFIXES, OCCUPIED, SLASH32_TABLE};

/// The maps as the walk reads them; the config only for its TRIE_ON_MISS.
struct Kernel<'a> {
    cfg: &'a GateConfig,
}

impl Levels for Kernel<'_> {
    type Slash32 = &'static Slash32;

    #[inline(always)]
    fn occupied(&self, i: u32) -> Option<u64> {
        OCCUPIED.get(i).copied()
    }

    #[inline(always)]
    fn slash32(&self, top: &[u8; 4]) -> Probe<&'static Slash32> {
        let Some(h) = SLASH32_TABLE.get(0) else {
            return Probe::Absent;
        };
        // SAFETY: slot 0 is the header, of the slots' size (asserted in
        // common); the map's memory lives as long as the program.
        let h: &TableHeader = unsafe { &*(h as *const _ as *const TableHeader) };
        // One read of the generation: every slot address below derives
        // from it, so the whole lookup reads one image.
        let generation = unsafe { core::ptr::read_volatile(&h.generation) };
        probe(h, generation & 1, u32::from_be_bytes(*top), |i| {
            SLASH32_TABLE.get(i)
        })
    }

    #[inline(always)]
    fn long(&self, key: &LongKey) -> Option<PartnerId> {
        unsafe { LONG_PREFIXES.get(key) }.copied()
    }

    #[inline(always)]
    fn trie(&self, src: &[u8; 16]) -> Option<PartnerId> {
        ALLOW.get(Key::new(128, *src)).copied()
    }

    #[inline(always)]
    fn trie_on_miss(&self) -> bool {
        self.cfg.flags & GateConfig::TRIE_ON_MISS != 0
    }
}

/// The partner whose prefix is the longest match for `src`, if any.
#[inline(always)]
pub fn allowed(cfg: &GateConfig, src: &[u8; 16]) -> Option<PartnerId> {
    walk(&Kernel { cfg }, src)
}
