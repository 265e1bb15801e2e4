//! The maps both programs and the controller share, and nothing else (the
//! code that reads them: allow.rs, counters.rs, explain.rs). Sizes here are
//! the defaults; the controller overrides them from its config before
//! loading.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockMap},
};
use mx6gate_common::{
    allow::{table_entries, LongKey, Slot, OCCUPIED_ENTRIES},
    explain::{DeferConfig, Explained},
    GateConfig, PartnerId, COUNTER_EXT_SLOTS, COUNTER_SLOTS,
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

/// Top 32 bits → what lies below them: the double-buffered open-addressed
/// table of `mx6gate_common::allow::TableHeader` (slot 0 the header). An
/// ARRAY, so each slot lookup is an inlined index and load; mmapable, so
/// the controller writes images at memory speed. Sized by the controller
/// (`table_entries` of maps.allow_entries) …
#[map]
pub static SLASH32_TABLE: Array<Slot> =
    Array::with_max_entries(table_entries(65536), BPF_F_MMAPABLE);

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
