//! The maps both programs and the controller share. Sizes here are the
//! defaults; the controller overrides them from its config before loading.
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockMap},
};
use mx6gate_common::{
    allow::{
        cell_of, mask, mid_lo, pop_longest, LongKey, Slash32, MAX_PROBES, NO_PARTNER,
        OCCUPIED_ENTRIES, OCCUPIED_WORDS, SUMMARY_SHIFT, USE_TRIE,
    },
    counter_slot,
    explain::{DeferConfig, Explained},
    Counter, GateConfig, PartnerId, COUNTER_EXT_SLOTS, COUNTER_SLOTS,
};

/// The allowlist (see `mx6gate_common::allow`): one bit per /28 of
/// 2000::/3, set where any prefix lies. An ARRAY, so the verifier inlines
/// the lookup (an index and a load); its size never changes.
#[map]
pub static OCCUPIED: Array<u64> = Array::with_max_entries(OCCUPIED_ENTRIES, BPF_F_MMAPABLE);

/// The allowlist's hashes take memory as entries come, not all of
/// `maps.allow_entries` up front: a gate sized for a million prefixes but
/// holding a thousand costs a thousand entries, and creating it is not
/// paid in proportion to its size on every cold start. (LONG_PREFIXES
/// mostly stays near-empty: each /32's longest prefix is inline.)
const BPF_F_NO_PREALLOC: u32 = 1;

/// The controller maps OCCUPIED into its memory: reading it back and
/// flipping bits are plain loads and 8-byte stores, not 2^19 syscalls.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Top 32 bits → what lies below them …
#[map]
pub static SLASH32: HashMap<[u8; 4], Slash32> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// … and (length, masked address) → partner id for prefixes longer than /32.
#[map]
pub static LONG_PREFIXES: HashMap<LongKey, PartnerId> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Fallback LPM trie: every prefix ≤ /32, and all prefixes under a /32
/// with more lengths than the probe budget.
#[map]
pub static ALLOW: LpmTrie<[u8; 16], PartnerId> = LpmTrie::with_max_entries(65536, 0);

/// One GateConfig at index 0: mode and protected ports.
#[map]
pub static CONFIG: Array<GateConfig> = Array::with_max_entries(1, 0);

/// Per-outcome packet counters, indexed by `Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Counters from COUNTER_SLOTS on (`counter_slot` says which map).
#[map]
pub static COUNTERS_EXT: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_EXT_SLOTS, 0);

/// Defer mode's explained sources (`mx6gate_common::explain`): sk_lookup
/// writes, XDP reads. LRU, so a full map forgets the least recently
/// explained source, which then gets the banner once more: bounded memory
/// whatever the traffic, and never a reset without a banner before it.
#[map]
pub static EXPLAINED: LruHashMap<[u8; 16], Explained> = LruHashMap::with_max_entries(65536, 0);

/// The `[defer]` settings at index 0 (all zero until the controller writes
/// them: no records, no resets).
#[map]
pub static DEFER: Array<DeferConfig> = Array::with_max_entries(1, 0);

/// SYNs let in per partner, indexed by partner id.
#[map]
pub static PARTNER_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4096, 0);

/// The responder's listening socket at index 0 (sk_lookup assigns it).
#[map]
pub static RESPONDER: SockMap = SockMap::with_max_entries(1, 0);

#[inline(always)]
pub fn count(c: Counter) {
    let p = match counter_slot(c) {
        (false, i) => COUNTERS.get_ptr_mut(i),
        (true, i) => COUNTERS_EXT.get_ptr_mut(i),
    };
    if let Some(p) = p {
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
fn trie(src: &[u8; 16]) -> Option<PartnerId> {
    ALLOW.get(Key::new(128, *src)).copied()
}

/// The partner whose prefix is the longest match for `src`, if any.
#[inline(always)]
pub fn allowed(cfg: &GateConfig, src: &[u8; 16]) -> Option<PartnerId> {
    let top = [src[0], src[1], src[2], src[3]];
    if let Some(cell) = cell_of(u32::from_be_bytes(top)) {
        // No prefix overlaps this /20, or this /28: a stranger, whatever
        // the flags say.
        let sum = cell >> SUMMARY_SHIFT;
        match OCCUPIED.get(OCCUPIED_WORDS + sum / 64) {
            Some(w) if *w & (1u64 << (sum % 64)) != 0 => {}
            _ => return None,
        }
        match OCCUPIED.get(cell / 64) {
            Some(w) if *w & (1u64 << (cell % 64)) != 0 => {}
            _ => return None,
        }
    }
    // By reference on purpose (clippy would pass the key by value): the
    // key then lives where the caller has it, and the object, its verifier
    // instruction count and the bench figures stay as measured.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let Some(e) = (unsafe { SLASH32.get(&top) }) else {
        // A stranger's /32: one probe, unless very short prefixes exist.
        if cfg.flags & GateConfig::TRIE_ON_MISS != 0 {
            return trie(src);
        }
        return None;
    };
    if e.flags & USE_TRIE != 0 {
        return trie(src);
    }
    // The longest prefix under this /32, compared in registers.
    let (mid, lo) = mid_lo(src);
    if e.inline_covers(mid, lo) {
        return Some(e.inline_id);
    }
    let mut lens = e.lens;
    for _ in 0..MAX_PROBES {
        let Some(len) = pop_longest(&mut lens) else {
            break;
        };
        let key = LongKey {
            prefix_len: len,
            addr: mask(src, len),
        };
        // By reference on purpose, as for SLASH32 above.
        #[allow(clippy::needless_borrows_for_generic_args)]
        if let Some(id) = unsafe { LONG_PREFIXES.get(&key) } {
            return Some(*id);
        }
    }
    (e.short_id != NO_PARTNER).then_some(e.short_id)
}

#[inline(always)]
pub fn config() -> Option<&'static GateConfig> {
    CONFIG.get(0)
}

/// The `[defer]` settings; zeroed (plain defer) if unreadable.
#[inline(always)]
pub fn defer_config() -> DeferConfig {
    DEFER.get(0).copied().unwrap_or_default()
}

/// The explanation record under `key`, copied out at once (an LRU
/// element can be reused under a reader).
#[inline(always)]
pub fn explained(key: &[u8; 16]) -> Option<Explained> {
    unsafe { EXPLAINED.get(key) }.copied()
}
