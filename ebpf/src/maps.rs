//! The maps both programs and the controller share. Sizes here are the
//! defaults; the controller overrides them from its config before loading.
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, SockMap},
};
use mx6gate_common::{Counter, GateConfig, PartnerId, COUNTER_SLOTS};

/// Partner prefixes → partner id.
#[map]
pub static ALLOW: LpmTrie<[u8; 16], PartnerId> = LpmTrie::with_max_entries(65536, 0);

/// One GateConfig at index 0: mode and protected ports.
#[map]
pub static CONFIG: Array<GateConfig> = Array::with_max_entries(1, 0);

/// Per-outcome packet counters, indexed by `Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// SYNs let in per partner, indexed by partner id.
#[map]
pub static PARTNER_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4096, 0);

/// The responder's listening socket at index 0 (sk_lookup assigns it).
#[map]
pub static RESPONDER: SockMap = SockMap::with_max_entries(1, 0);

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn count_partner(id: PartnerId) {
    if let Some(p) = PARTNER_HITS.get_ptr_mut(id) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn allowed(src: &[u8; 16]) -> Option<PartnerId> {
    ALLOW.get(Key::new(128, *src)).copied()
}

#[inline(always)]
pub fn config() -> Option<&'static GateConfig> {
    CONFIG.get(0)
}
