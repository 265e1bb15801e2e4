//! Layout of the allowlist the programs look sources up in.
//!
//! The kernel's LPM trie costs over a microsecond per cold lookup at a
//! million prefixes (DESIGN.md, "Performance facts"), and every BPF hash probe costs about as much as a whole
//! bare XDP_DROP run (bench/RESULTS.md). Partner lists hold few prefixes
//! per /32 and almost every source is outside them, so the lookup is
//! built to answer the common cases with as few hash probes as possible:
//!
//! 0. OCCUPIED, a bitmap in an ARRAY map (the verifier inlines its lookup:
//!    no helper call, no hashing): one bit per /28 of 2000::/3, set when
//!    any allowlist prefix overlaps that /28. A clear bit ends the lookup
//!    (a stranger — the flood case — costs one load from a 4 MiB table).
//!    Before it, a summary with one bit per /20 (16 KiB, so it stays in
//!    cache when sources are spread: a small list answers from it alone).
//!    Sources outside 2000::/3 skip this level.
//! 1. SLASH32_TABLE, an open-addressed table of the source's top 32 bits in
//!    an ARRAY map (see [`Slot`], [`TableHeader`]): one 64-byte slot (one
//!    cache line) per /32, found at a multiplicative hash of the /32 and
//!    the next slots up to PROBE_LIMIT (adjacent lines); an empty slot ends
//!    the lookup. A hit gives the partner of the longest prefix ≤ /32
//!    covering it, the longest prefix under the /32 *inline* (compared in
//!    registers, no further probe: with one prefix per /32, the usual case,
//!    a partner costs one line), and a bitmap of the lengths (33..=128) of
//!    the other prefixes under that /32. The table is double-buffered: the
//!    header's generation says which image the programs read (see
//!    [`TableHeader`] for why that makes updates tear-free).
//! 2. LONG_PREFIXES, a hash keyed by (length, masked address): probed once
//!    per length in that bitmap, longest first, only when the inline
//!    prefix does not match; the first hit is the longest match.
//!
//! The ALLOW LPM trie stays as the fallback: for a /32 with more than
//! MAX_PROBES lengths below it (USE_TRIE); when the list has prefixes
//! shorter than MIN_EXPAND_LEN (too many /32s to expand), for sources whose
//! /32 is not in the table at all (GateConfig::TRIE_ON_MISS); and for a /32
//! that found no slot within PROBE_LIMIT of its home (an *unplaced* /32:
//! the controller then puts every prefix under it in the trie, and a
//! lookup that finds the probe window full consults the trie).

use crate::PartnerId;

/// Partner id meaning "none".
pub const NO_PARTNER: u32 = u32::MAX;
/// Slash32::flags: look this /32 up in the ALLOW trie instead of probing.
pub const USE_TRIE: u32 = 1;
/// Most hash probes per lookup.
pub const MAX_PROBES: usize = 8;
/// Prefixes at least this long are expanded into their /32s in the table
/// (at most 4096 entries each); shorter ones live in the trie only.
pub const MIN_EXPAND_LEN: u8 = 20;

/// OCCUPIED covers 2000::/3 (the top three bits 001) …
pub const OCCUPIED_TOP3: u32 = 0b001;
/// … in cells of this length: 2^25 cells, one bit each, in u64 words.
pub const CELL_LEN: u8 = 28;
/// Words (u64) of OCCUPIED's cells: 2^(28 - 3) bits / 64 = 4 MiB.
pub const OCCUPIED_WORDS: u32 = 1 << (CELL_LEN as u32 - 3 - 6);
/// The summary's cells are /20s: bit `cell >> SUMMARY_SHIFT` is set when
/// any of its 256 cells is. Its words follow the cells' in OCCUPIED.
pub const SUMMARY_SHIFT: u32 = 8;
/// Words of the summary: 2^(20 - 3) bits / 64 = 16 KiB.
pub const SUMMARY_WORDS: u32 = OCCUPIED_WORDS >> SUMMARY_SHIFT;
/// Entries of the OCCUPIED array: cells, then summary.
pub const OCCUPIED_ENTRIES: u32 = OCCUPIED_WORDS + SUMMARY_WORDS;

/// /32s at the edges of the levels above: both sides of 2000::/3, of a /28
/// cell, of an OCCUPIED word (64 cells) and summary cell (a /20), of a
/// summary word, one mid-range, and some outside 2000::/3. The tests of
/// every layer draw their prefixes around these.
pub const EDGE_TOPS: [u32; 12] = [
    0x1fff_ffff,
    0x2000_0000,
    0x2001_0dbf,
    0x2001_0dc0,
    0x2001_0fff,
    0x2001_1000,
    0x2003_ffff,
    0x2004_0000,
    0x2a00_0001,
    0x3fff_ffff,
    0x4000_0000,
    0xfe80_0000,
];

/// The OCCUPIED cell of a source whose top 32 bits are `top`, or None
/// outside 2000::/3.
#[inline(always)]
pub const fn cell_of(top: u32) -> Option<u32> {
    if top >> 29 != OCCUPIED_TOP3 {
        return None;
    }
    Some((top >> (32 - CELL_LEN as u32)) & ((1 << (CELL_LEN as u32 - 3)) - 1))
}

/// What the /32 level holds for one /32 (a [`Slot`]'s value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slash32 {
    /// Partner of the longest prefix of length ≤ 32 covering this /32.
    pub short_id: u32,
    pub flags: u32,
    /// Bit `len - 33` is set when a prefix of length `len` (33..=128) lies
    /// under this /32 in LONG_PREFIXES (the inline one is not counted).
    pub lens: [u64; 2],
    /// Partner of the inline prefix: a longest prefix (> /32) under this
    /// /32 (of equal lengths, the lowest address), held here rather than in
    /// LONG_PREFIXES. NO_PARTNER when there is none.
    pub inline_id: u32,
    /// Its length (33..=128; 0 when none).
    pub inline_len: u32,
    /// Bits 32..63 of its network (bytes 4..8 of the address, big-endian)
    /// and the mask of the prefix over them.
    pub inline_mid: u32,
    pub inline_mid_mask: u32,
    /// Bits 64..127 (bytes 8..16, big-endian) and their mask.
    pub inline_lo: u64,
    pub inline_lo_mask: u64,
}

impl Slash32 {
    pub const EMPTY: Slash32 = Slash32 {
        short_id: NO_PARTNER,
        flags: 0,
        lens: [0, 0],
        inline_id: NO_PARTNER,
        inline_len: 0,
        inline_mid: 0,
        inline_mid_mask: 0,
        inline_lo: 0,
        inline_lo_mask: 0,
    };

    pub fn add_len(&mut self, len: u8) {
        debug_assert!((33..=128).contains(&len));
        let b = (len - 33) as usize;
        self.lens[b / 64] |= 1 << (b % 64);
    }

    pub fn len_count(&self) -> u32 {
        self.lens[0].count_ones() + self.lens[1].count_ones()
    }

    /// Hold the prefix `addr`/`len` (33..=128, host bits clear) inline.
    pub fn set_inline(&mut self, addr: &[u8; 16], len: u8, id: u32) {
        debug_assert!((33..=128).contains(&len));
        let m = mask(&[0xff; 16], len as u32);
        let (mid, lo) = mid_lo(addr);
        let (mid_mask, lo_mask) = mid_lo(&m);
        self.inline_id = id;
        self.inline_len = len as u32;
        self.inline_mid = mid & mid_mask;
        self.inline_mid_mask = mid_mask;
        self.inline_lo = lo & lo_mask;
        self.inline_lo_mask = lo_mask;
    }

    /// The inline prefix's network address (its top 32 bits from `top`).
    pub fn inline_addr(&self, top: [u8; 4]) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&top);
        a[4..8].copy_from_slice(&self.inline_mid.to_be_bytes());
        a[8..].copy_from_slice(&self.inline_lo.to_be_bytes());
        a
    }

    /// Whether the inline prefix covers `src` (whose /32 is this entry's).
    #[inline(always)]
    pub fn inline_covers(&self, mid: u32, lo: u64) -> bool {
        self.inline_id != NO_PARTNER
            && mid & self.inline_mid_mask == self.inline_mid
            && lo & self.inline_lo_mask == self.inline_lo
    }
}

/// Slots probed from a /32's home slot, at most: 16 lines, next to one
/// another (the hardware prefetcher follows them). At half load a /32 sits
/// in its home line 76% of the time and past 16 in about 3 of 10^4 cases
/// (those are *unplaced*, see the module doc).
pub const PROBE_LIMIT: u32 = 16;

const _: () = assert!(core::mem::size_of::<Slot>() == 64);
const _: () = assert!(core::mem::size_of::<TableHeader>() == 64);

/// One slot of SLASH32_TABLE: a /32 and its [`Slash32`] in one cache line
/// (64 bytes; the array of an mmapable map is page-aligned, so every slot
/// is line-aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The /32 (its top 32 bits as a big-endian number).
    pub top: u32,
    /// 1 when the slot holds a /32, 0 when empty.
    pub used: u32,
    pub value: Slash32,
}

impl Slot {
    pub const EMPTY: Slot = Slot {
        top: 0,
        used: 0,
        value: Slash32::EMPTY,
    };
}

/// Slot 0 of SLASH32_TABLE. The map holds this header, then two images of
/// the table, each `slots + PROBE_LIMIT` slots (the probe window of the
/// last home runs past the end instead of wrapping) followed by `stash`
/// slots the programs never read (where the controller keeps the unplaced
/// /32s' entries, for its read-back).
///
/// Why two images and one generation word (and not a sequence word per
/// slot, nor copy-on-write slots): a program reads `generation` once, at
/// the start of its lookup, and computes every slot address from it, so
/// its whole lookup reads one image. The controller writes only the other
/// image, publishes it by storing the new generation, and then waits an
/// RCU grace period (membarrier(MEMBARRIER_CMD_GLOBAL) runs
/// synchronize_rcu(); XDP and sk_lookup programs run inside RCU read-side
/// sections) before it touches the image it left: by then no program that
/// read the old generation is still running. So no program ever reads a
/// slot while it is written — not torn, whatever the slot's size — and a
/// lookup sees the old set or the new one, never a mix. The slot loads
/// depend on the generation load through their address, which orders them
/// on every architecture without a read barrier. A per-slot sequence word
/// would need the reader to order independent loads (smp_rmb, which BPF
/// programs cannot issue on arm64) and a fallback when its retries run
/// out; copy-on-write slots need free-slot management and still a grace
/// period before reuse.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableHeader {
    /// Its low bit is the image the programs read.
    pub generation: u32,
    /// Home slots per image (0 before the controller set the table up:
    /// every lookup then finds an empty slot).
    pub slots: u32,
    /// Slots from one image's start to the next's.
    pub stride: u32,
    /// Per image: how many /32s are unplaced (in its stash); when non-zero,
    /// a lookup that finds its window full asks the trie.
    pub unplaced: [u32; 2],
    /// Stash slots per image.
    pub stash: u32,
    /// Controller only: 1 while the two images may differ (an update not
    /// yet replayed into the inactive one).
    pub dirty: u32,
    /// Controller only: /32s per image, placed and unplaced.
    pub count: [u32; 2],
    pub _reserved: [u32; 7],
}

impl TableHeader {
    /// Slot index of image `image`'s first slot.
    #[inline(always)]
    pub const fn image_base(&self, image: u32) -> u32 {
        1 + image * self.stride
    }
}

/// Layout for `capacity` /32s: home slots at half load at most, a stash
/// of 1/64 of them (at least 64).
pub const fn table_shape(capacity: u32) -> (u32, u32, u32) {
    let slots = capacity.saturating_mul(2);
    let stash = if slots / 64 > 64 { slots / 64 } else { 64 };
    (slots, stash, slots + PROBE_LIMIT + stash)
}

/// Entries of SLASH32_TABLE for `capacity` /32s: the header and two images.
pub const fn table_entries(capacity: u32) -> u32 {
    1 + 2 * table_shape(capacity).2
}

/// The home slot of /32 `top` in a table of `slots` home slots:
/// multiplicative hash (Fibonacci) of the 32 bits, mapped onto
/// 0..slots by multiply-shift (any table size, no division).
#[inline(always)]
pub const fn home_slot(top: u32, slots: u32) -> u32 {
    let h = top.wrapping_mul(0x9e37_79b1);
    ((h as u64 * slots as u64) >> 32) as u32
}

/// What the /32 level said about a source's /32.
pub enum Probe<T> {
    /// Its entry.
    Found(T),
    /// No entry: an empty slot ended the probe (or the window was full and
    /// no /32 is unplaced).
    Absent,
    /// The window was full and some /32 is unplaced: this one may be, so
    /// the trie answers (it holds every prefix under an unplaced /32).
    Unplaced,
}

/// The probe of one image, over any way of reading its slots: the kernel
/// (a pointer into the map), the controller (its mapping of it).
#[inline(always)]
pub fn probe<'a, F: Fn(u32) -> Option<&'a Slot>>(
    h: &TableHeader,
    image: u32,
    top: u32,
    slot: F,
) -> Probe<&'a Slash32> {
    let base = h.image_base(image) + home_slot(top, h.slots);
    for d in 0..PROBE_LIMIT {
        let Some(s) = slot(base + d) else {
            return Probe::Absent;
        };
        if s.used == 0 {
            return Probe::Absent;
        }
        if s.top == top {
            return Probe::Found(&s.value);
        }
    }
    if h.unplaced[(image & 1) as usize] != 0 {
        Probe::Unplaced
    } else {
        Probe::Absent
    }
}

/// Bits 32..63 and 64..127 of an address, as numbers.
#[inline(always)]
pub fn mid_lo(a: &[u8; 16]) -> (u32, u64) {
    (
        u32::from_be_bytes([a[4], a[5], a[6], a[7]]),
        u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// Take the longest length out of a Slash32 bitmap.
#[inline(always)]
pub fn pop_longest(lens: &mut [u64; 2]) -> Option<u32> {
    if lens[1] != 0 {
        let b = 63 - lens[1].leading_zeros();
        lens[1] &= !(1u64 << b);
        Some(33 + 64 + b)
    } else if lens[0] != 0 {
        let b = 63 - lens[0].leading_zeros();
        lens[0] &= !(1u64 << b);
        Some(33 + b)
    } else {
        None
    }
}

/// The allowlist's maps as one side reaches them: the kernel programs
/// (ebpf/src/allow.rs), the controller's replay against the pinned maps
/// (`allowlist::lookup`), the tests' replay over a plan. [`walk`] is the
/// one lookup all three run.
pub trait Levels {
    /// A /32 entry: borrowed where the map hands out a pointer (the
    /// kernel, the controller's mapping), owned where a lookup copies it.
    type Slash32: core::borrow::Borrow<Slash32>;
    /// OCCUPIED word `i` (cells, then the summary from OCCUPIED_WORDS on);
    /// None if unreadable, which the walk treats as a clear word.
    fn occupied(&self, i: u32) -> Option<u64>;
    /// The /32 level's answer for the /32 `top` (see [`probe`]).
    fn slash32(&self, top: &[u8; 4]) -> Probe<Self::Slash32>;
    /// The LONG_PREFIXES entry under `key`.
    fn long(&self, key: &LongKey) -> Option<PartnerId>;
    /// The ALLOW trie's longest match for `src`.
    fn trie(&self, src: &[u8; 16]) -> Option<PartnerId>;
    /// GateConfig::TRIE_ON_MISS: asked only when the /32 has no entry.
    fn trie_on_miss(&self) -> bool;
}

/// The partner whose prefix is the longest match for `src`, if any, as
/// the levels above lay the allowlist out. Every loop is bounded
/// (MAX_PROBES): the programs run this very code.
#[inline(always)]
pub fn walk<L: Levels>(maps: &L, src: &[u8; 16]) -> Option<PartnerId> {
    use core::borrow::Borrow;
    let top = [src[0], src[1], src[2], src[3]];
    if let Some(cell) = cell_of(u32::from_be_bytes(top)) {
        // No prefix overlaps this /20, or this /28: a stranger, whatever
        // the flags say.
        let sum = cell >> SUMMARY_SHIFT;
        match maps.occupied(OCCUPIED_WORDS + sum / 64) {
            Some(w) if w & (1u64 << (sum % 64)) != 0 => {}
            _ => return None,
        }
        match maps.occupied(cell / 64) {
            Some(w) if w & (1u64 << (cell % 64)) != 0 => {}
            _ => return None,
        }
    }
    let e = match maps.slash32(&top) {
        Probe::Found(e) => e,
        // A stranger's /32: one line, unless very short prefixes exist.
        Probe::Absent if maps.trie_on_miss() => return maps.trie(src),
        Probe::Absent => return None,
        Probe::Unplaced => return maps.trie(src),
    };
    let e: &Slash32 = e.borrow();
    if e.flags & USE_TRIE != 0 {
        return maps.trie(src);
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
        if let Some(id) = maps.long(&key) {
            return Some(id);
        }
    }
    (e.short_id != NO_PARTNER).then_some(e.short_id)
}

/// Key of LONG_PREFIXES.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongKey {
    pub prefix_len: u32,
    /// The address with every bit past `prefix_len` cleared.
    pub addr: [u8; 16],
}

/// `addr` with the bits past `len` cleared (0 ≤ len ≤ 128).
#[inline(always)]
pub fn mask(addr: &[u8; 16], len: u32) -> [u8; 16] {
    let mut hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let mut lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    if len <= 64 {
        lo = 0;
        hi = if len == 0 {
            0
        } else {
            hi & (!0u64 << (64 - len))
        };
    } else if len < 128 {
        lo &= !0u64 << (128 - len);
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi.to_be_bytes());
    out[8..].copy_from_slice(&lo.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let a = [0xff; 16];
        assert_eq!(mask(&a, 0), [0; 16]);
        assert_eq!(mask(&a, 128), a);
        let m = mask(&a, 33);
        assert_eq!(&m[..5], &[0xff, 0xff, 0xff, 0xff, 0x80]);
        assert!(m[5..].iter().all(|b| *b == 0));
        let m = mask(&a, 64);
        assert_eq!(&m[..8], &[0xff; 8]);
        assert_eq!(&m[8..], &[0; 8]);
        let m = mask(&a, 127);
        assert_eq!(m[15], 0xfe);
    }

    #[test]
    fn pops_longest_first() {
        let mut s = Slash32::EMPTY;
        for l in [48, 128, 33, 64, 97, 96] {
            s.add_len(l);
        }
        let mut lens = s.lens;
        for want in [128, 97, 96, 64, 48, 33] {
            assert_eq!(pop_longest(&mut lens), Some(want));
        }
        assert_eq!(pop_longest(&mut lens), None);
    }

    #[test]
    fn inline_prefix_covers_exactly_its_addresses() {
        let a = [
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        for len in [33u8, 48, 49, 63, 64, 65, 100, 127, 128] {
            let net = mask(&a, len as u32);
            let mut s = Slash32::EMPTY;
            s.set_inline(&net, len, 7);
            assert_eq!(s.inline_addr([0x20, 0x01, 0x0d, 0xb8]), net);
            let (m, l) = mid_lo(&net);
            assert!(s.inline_covers(m, l), "/{len} covers its network");
            // The last address inside, and the first bit past the prefix flipped.
            let mut last = net;
            for bit in len as usize..128 {
                last[bit / 8] |= 0x80 >> (bit % 8);
            }
            let (m, l) = mid_lo(&last);
            assert!(s.inline_covers(m, l), "/{len} covers its last address");
            let mut out = net;
            let bit = len as usize - 1;
            out[bit / 8] ^= 0x80 >> (bit % 8);
            let (m, l) = mid_lo(&out);
            assert!(!s.inline_covers(m, l), "/{len} ends at its own bit");
        }
        let (m, l) = mid_lo(&a);
        assert!(!Slash32::EMPTY.inline_covers(m, l));
    }

    #[test]
    fn cells_cover_2000_slash_3_only() {
        assert_eq!(cell_of(0x1fff_ffff), None);
        assert_eq!(cell_of(0x4000_0000), None);
        assert_eq!(cell_of(0x2000_0000), Some(0));
        assert_eq!(cell_of(0x2000_000f), Some(0));
        assert_eq!(cell_of(0x2000_0010), Some(1));
        assert_eq!(cell_of(0x3fff_ffff), Some(OCCUPIED_WORDS * 64 - 1));
    }
}
