//! Deterministic partner tables and the sources the bench sends from.
//!
//! Prefixes are drawn (SplitMix64, fixed seed) uniformly inside 2000::/3,
//! outside 2001:db8::/32 (kept for the wire test's own partners and
//! sources), with the length mix below, and never overlap one another (so
//! the same list is a valid nftables interval set without auto-merge and
//! maps one-to-one onto xdp-filter's exact addresses). The table of size N
//! is the first N prefixes of one stream: smaller tables are subsets of
//! larger ones.
use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv6Addr,
};

use ipnet::Ipv6Net;

pub const SEED: u64 = 0x6d78_3667_6174_6521; // "mx6gate!"

/// (prefix length, weight in percent).
pub const LENGTH_MIX: [(u8, u32); 10] = [
    (32, 5),
    (36, 3),
    (40, 7),
    (44, 10),
    (48, 30),
    (52, 5),
    (56, 15),
    (60, 5),
    (64, 15),
    (128, 5),
];

const DOC32: u128 = 0x2001_0db8 << 96;

/// SplitMix64: small, fast, deterministic.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn mask(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

fn in_2000_3(r: u128) -> u128 {
    (r & (u128::MAX >> 3)) | (1u128 << 125)
}

/// `n` non-overlapping prefixes, deterministic for a given `n` and seed
/// (and each a prefix of the longer ones).
pub fn generate(n: usize, seed: u64) -> Vec<Ipv6Net> {
    let mut rng = Rng::new(seed);
    let total: u32 = LENGTH_MIX.iter().map(|(_, w)| w).sum();
    // All lengths are ≥ 32, so two prefixes can only overlap inside one /32.
    let mut by32: std::collections::HashMap<u32, Vec<(u128, u8)>> = Default::default();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut pick = (rng.next_u64() % u64::from(total)) as u32;
        let len = LENGTH_MIX
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(l, _)| *l)
            .unwrap();
        let net = mask(in_2000_3(rng.next_u128()), len);
        if mask(net, 32) == DOC32 {
            continue;
        }
        let top = (net >> 96) as u32;
        let here = by32.entry(top).or_default();
        let overlaps = here.iter().any(|(m, l)| {
            let l = (*l).min(len);
            mask(*m, l) == mask(net, l)
        });
        if overlaps {
            continue;
        }
        here.push((net, len));
        out.push(Ipv6Net::new(Ipv6Addr::from(net), len).unwrap());
    }
    out
}

/// A table the sources are checked against (longest match is not needed:
/// the prefixes do not overlap, membership is enough).
pub struct Table {
    pub prefixes: Vec<Ipv6Net>,
    set: HashSet<(u128, u8)>,
    lens: Vec<u8>,
}

impl Table {
    pub fn new(prefixes: Vec<Ipv6Net>) -> Table {
        let set: HashSet<(u128, u8)> = prefixes
            .iter()
            .map(|p| (u128::from(p.network()), p.prefix_len()))
            .collect();
        let mut lens: Vec<u8> = set.iter().map(|(_, l)| *l).collect();
        lens.sort();
        lens.dedup();
        Table {
            prefixes,
            set,
            lens,
        }
    }

    pub fn contains(&self, a: u128) -> bool {
        self.lens
            .iter()
            .any(|l| self.set.contains(&(mask(a, *l), *l)))
    }
}

/// prefix → partner id, the form the product's sync takes.
pub fn desired(prefixes: &[Ipv6Net]) -> BTreeMap<Ipv6Net, u32> {
    prefixes.iter().map(|p| (*p, partner_id(p))).collect()
}

/// A partner id that depends on the prefix only (so a prefix keeps its id
/// across changes), among 4000 partners (the default PARTNER_HITS has room
/// for 4096).
pub fn partner_id(p: &Ipv6Net) -> u32 {
    let n = u128::from(p.network());
    let h = ((n >> 64) as u64 ^ (n as u64) ^ u64::from(p.prefix_len()))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 40) as u32 % 4000 + 1
}

/// The one address of a prefix that xdp-filter's exact-address list holds
/// for it, and the source the bench sends "partner" SYNs from: the prefix's
/// network address with ::25 in its host bits (the address itself for a /128).
pub fn representative(p: &Ipv6Net) -> u128 {
    let n = u128::from(p.network());
    if p.prefix_len() >= 120 {
        n
    } else {
        n | 0x25
    }
}

/// The length the hot sources' prefixes have: the most common one, so the
/// hot figures at different sizes describe the same kind of lookup.
pub const HOT_LEN: u8 = 48;

/// The table's random prefixes (not the wire test's few inside
/// 2001:db8::/32), the ones the per-packet sources are drawn from; only
/// those of length `len` if given (and present).
fn random_part(t: &Table, len: Option<u8>) -> Vec<&Ipv6Net> {
    let all: Vec<&Ipv6Net> = t
        .prefixes
        .iter()
        .filter(|p| mask(u128::from(p.network()), 32) != DOC32)
        .collect();
    match len {
        Some(l) if all.iter().any(|p| p.prefix_len() == l) => {
            all.into_iter().filter(|p| p.prefix_len() == l).collect()
        }
        _ => all,
    }
}

/// Partner sources: representatives of `k` prefixes picked at random
/// (of length `len` only, if given).
pub fn partner_sources(t: &Table, k: usize, len: Option<u8>, rng: &mut Rng) -> Vec<u128> {
    let pool = random_part(t, len);
    (0..k)
        .map(|_| representative(pool[rng.below(pool.len())]))
        .collect()
}

/// Strangers anywhere in 2000::/3 (outside the table and 2001:db8::/32):
/// for tables this sparse, most share no /32 with any partner.
pub fn far_strangers(t: &Table, k: usize, rng: &mut Rng) -> Vec<u128> {
    let mut v = Vec::with_capacity(k);
    while v.len() < k {
        let a = in_2000_3(rng.next_u128());
        if mask(a, 32) != DOC32 && !t.contains(a) {
            v.push(a);
        }
    }
    v
}

/// Strangers next to a partner: the sibling of a random partner prefix
/// longer than /32 (same /32, so the lookup must go past its first level);
/// of length `len` only, if given.
pub fn near_strangers(t: &Table, k: usize, len: Option<u8>, rng: &mut Rng) -> Vec<u128> {
    let long: Vec<&Ipv6Net> = random_part(t, len)
        .into_iter()
        .filter(|p| p.prefix_len() > 32)
        .collect();
    let mut v = Vec::with_capacity(k);
    let mut tries = 0;
    while v.len() < k && tries < 100 * k + 1000 {
        tries += 1;
        let p = long[rng.below(long.len())];
        let bit = 1u128 << (128 - u32::from(p.prefix_len()));
        let sib = u128::from(p.network()) ^ bit;
        let a = if p.prefix_len() >= 120 {
            sib
        } else {
            sib | 0x99
        };
        if !t.contains(a) {
            v.push(a);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_nested_disjoint() {
        let a = generate(2000, SEED);
        let b = generate(500, SEED);
        assert_eq!(&a[..500], &b[..]);
        for (i, p) in a.iter().enumerate() {
            for q in &a[i + 1..] {
                assert!(!p.contains(q) && !q.contains(p), "{p} {q}");
            }
            assert!(!"2001:db8::/32".parse::<Ipv6Net>().unwrap().contains(p));
            assert_eq!(u128::from(p.network()) >> 125, 1);
        }
    }

    #[test]
    fn sources_classified() {
        let t = Table::new(generate(3000, SEED));
        let mut r = Rng::new(1);
        for a in partner_sources(&t, 100, None, &mut r) {
            assert!(t.contains(a));
        }
        for a in far_strangers(&t, 100, &mut r) {
            assert!(!t.contains(a));
        }
        for a in near_strangers(&t, 100, Some(HOT_LEN), &mut r) {
            assert!(!t.contains(a));
            assert!(t
                .prefixes
                .iter()
                .any(|p| mask(u128::from(p.network()), 32) == mask(a, 32)));
        }
    }
}
