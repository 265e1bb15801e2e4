//! Layout of the allowlist the programs look sources up in.
//!
//! The kernel's LPM trie costs ~2 µs per cold lookup at a million prefixes
//! (DESIGN.md). Partner lists hold few distinct prefix lengths, and almost
//! every source is outside them, so the lookup is two-level:
//!
//! 1. SLASH32, a hash keyed by the source's top 32 bits: a miss ends the
//!    lookup (a stranger — the flood case costs one probe). A hit gives a
//!    bitmap of the lengths (33..=128) present under that /32, and the
//!    partner of the longest prefix ≤ /32 covering it.
//! 2. LONG_PREFIXES, a hash keyed by (length, masked address): probed once
//!    per length in the bitmap, longest first; the first hit is the longest
//!    match.
//!
//! The ALLOW LPM trie stays as the fallback: for a /32 with more than
//! MAX_PROBES lengths below it (USE_TRIE), and, when the list has prefixes
//! shorter than MIN_EXPAND_LEN (too many /32s to expand), for sources whose
//! /32 is not in SLASH32 at all (GateConfig::TRIE_ON_MISS).

/// Partner id meaning "none".
pub const NO_PARTNER: u32 = u32::MAX;
/// Slash32::flags: look this /32 up in the ALLOW trie instead of probing.
pub const USE_TRIE: u32 = 1;
/// Most hash probes per lookup.
pub const MAX_PROBES: usize = 8;
/// Prefixes at least this long are expanded into their /32s in SLASH32
/// (at most 4096 entries each); shorter ones live in the trie only.
pub const MIN_EXPAND_LEN: u8 = 20;

/// Value of SLASH32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slash32 {
    /// Partner of the longest prefix of length ≤ 32 covering this /32.
    pub short_id: u32,
    pub flags: u32,
    /// Bit `len - 33` is set when a prefix of length `len` (33..=128) lies
    /// under this /32.
    pub lens: [u64; 2],
}

impl Slash32 {
    pub const EMPTY: Slash32 = Slash32 {
        short_id: NO_PARTNER,
        flags: 0,
        lens: [0, 0],
    };

    pub fn add_len(&mut self, len: u8) {
        debug_assert!((33..=128).contains(&len));
        let b = (len - 33) as usize;
        self.lens[b / 64] |= 1 << (b % 64);
    }

    pub fn len_count(&self) -> u32 {
        self.lens[0].count_ones() + self.lens[1].count_ones()
    }
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
}
