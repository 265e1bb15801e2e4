use mx6gate_common::allow::OCCUPIED_WORDS;

use super::{snapshot::*, *};

fn set(v: &[(&str, u32)]) -> BTreeMap<Ipv6Net, PartnerId> {
    v.iter().map(|(n, id)| (n.parse().unwrap(), *id)).collect()
}

/// A plan as the walk reads the maps that hold it.
impl Levels for Plan {
    type Slash32 = Slash32;

    fn occupied(&self, i: u32) -> Option<u64> {
        if i < OCCUPIED_WORDS {
            return Some(self.occupied.get(&i).copied().unwrap_or(0));
        }
        let first = (i - OCCUPIED_WORDS) * 64;
        Some(
            self.summary
                .range(first..first + 64)
                .fold(0, |w, (c, ())| w | 1 << (c - first)),
        )
    }

    fn slash32(&self, top: &[u8; 4]) -> mx6gate_common::allow::Probe<Slash32> {
        use mx6gate_common::allow::Probe;
        match self.slash32.get(top) {
            Some(e) => Probe::Found(*e),
            None => Probe::Absent,
        }
    }

    fn long(&self, key: &LongKey) -> Option<PartnerId> {
        self.long.get(key).copied()
    }

    fn trie(&self, src: &[u8; 16]) -> Option<PartnerId> {
        let a = Ipv6Addr::from(*src);
        self.trie
            .iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, id)| *id)
    }

    fn trie_on_miss(&self) -> bool {
        self.trie_on_miss
    }
}

/// The kernel's lookup over a plan: the programs' own walk.
fn plan_lookup(p: &Plan, a: Ipv6Addr) -> Option<PartnerId> {
    walk(p, &a.octets())
}

/// What write_diff does to the maps, done to a Plan.
fn patch(full: &mut Plan, want: &Plan, have: &Plan) {
    for (k, v) in upserts(&want.long, &have.long) {
        full.long.insert(k, v);
    }
    for (k, v) in upserts(&want.trie, &have.trie) {
        full.trie.insert(k, v);
    }
    for (k, v) in upserts(&want.slash32, &have.slash32) {
        full.slash32.insert(k, v);
    }
    for (k, v) in upserts(&want.occupied, &have.occupied) {
        full.occupied.insert(k, v);
    }
    for k in stale(&want.occupied, &have.occupied) {
        full.occupied.remove(&k);
    }
    for (k, v) in upserts(&want.summary, &have.summary) {
        full.summary.insert(k, v);
    }
    for k in stale(&want.summary, &have.summary) {
        full.summary.remove(&k);
    }
    full.trie_on_miss = want.trie_on_miss;
    for k in stale(&want.slash32, &have.slash32) {
        full.slash32.remove(&k);
    }
    for k in stale(&want.long, &have.long) {
        full.long.remove(&k);
    }
    for k in stale(&want.trie, &have.trie) {
        full.trie.remove(&k);
    }
}

fn arb_set() -> impl proptest::strategy::Strategy<Value = BTreeMap<Ipv6Net, PartnerId>> {
    use proptest::prelude::*;
    // Few /32s and lengths so sets collide, crowd a /32 and overlap.
    let net = (
        0u32..6,
        prop::sample::select(vec![12u8, 29, 30, 32, 33, 40, 48, 56, 64, 100, 128]),
        any::<u128>(),
        0u32..4,
    )
        .prop_map(|(top, len, rnd, id)| {
            let a = (u128::from(0x2001_0db8u32 + top) << 96) | (rnd >> 32);
            (Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc(), id)
        });
    prop::collection::btree_map(net.prop_map(|(n, _)| n), 0u32..4, 0..40)
}

use mx6gate_common::allow::EDGE_TOPS;

/// Sets mixing every length class the layout treats apart: /0–/31
/// (expanded or not, inside, around and outside 2000::/3), /32, the
/// inline and second-level ones (several per /32, equal lengths), /128.
fn arb_edge_set() -> impl proptest::strategy::Strategy<Value = BTreeMap<Ipv6Net, PartnerId>> {
    use proptest::prelude::*;
    let net = (
        prop::sample::select(EDGE_TOPS.to_vec()),
        prop_oneof![
            1 => prop::sample::select(vec![0u8, 1, 2, 3, 4]),
            60 => prop::sample::select(vec![
                19u8, 20, 22, 27, 28, 29, 31, 32, 33, 47, 48, 48, 63, 64, 64, 65, 127, 128, 128,
            ]),
        ],
        any::<u128>(),
    )
        .prop_map(|(top, len, rnd)| {
            // Few distinct low parts, so prefixes overlap and nest.
            let a = (u128::from(top) << 96) | ((rnd >> 32) & 0xffff_0000_0000_0000_0000_00ff);
            Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc()
        });
    // Short prefixes are rare in real lists and each one covers a lot:
    // keep the sets small.
    prop::collection::btree_map(net, 0u32..4, 0..24)
}

fn edge_probe() -> impl proptest::strategy::Strategy<Value = Ipv6Addr> {
    use proptest::prelude::*;
    (
        prop::sample::select(EDGE_TOPS.to_vec()),
        any::<u128>(),
        any::<bool>(),
    )
        .prop_map(|(top, rnd, near)| {
            let low = if near {
                (rnd >> 32) & 0xffff_0000_0000_0000_0000_00ff
            } else {
                rnd >> 32
            };
            Ipv6Addr::from((u128::from(top) << 96) | low)
        })
}

proptest::proptest! {
    // A /0–/4 makes every plan hold the whole 4 MiB bitmap: few cases.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    #[test]
    fn edge_partial_diff_reaches_full_plan(old in arb_edge_set(), new in arb_edge_set()) {
        let mut maps = plan(&old);
        let (tops, nets) = affected(&old, &new);
        patch(&mut maps, &partial_plan(&new, &tops, &nets), &partial_plan(&old, &tops, &nets));
        proptest::prop_assert_eq!(maps, plan(&new));
    }

    #[test]
    fn edge_plan_is_longest_prefix_match(set in arb_edge_set(), probes in proptest::collection::vec(edge_probe(), 60)) {
        let p = plan(&set);
        for a in probes {
            proptest::prop_assert_eq!(plan_lookup(&p, a), lpm(&set, a), "{}", a);
        }
        for n in set.keys() {
            proptest::prop_assert_eq!(plan_lookup(&p, n.network()), lpm(&set, n.network()), "{}", n);
            proptest::prop_assert_eq!(plan_lookup(&p, n.broadcast()), lpm(&set, n.broadcast()), "{}", n);
        }
        proptest::prop_assert_eq!(entries_of(&p), set);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
    /// The incremental path reaches exactly the full plan.
    #[test]
    fn partial_diff_reaches_full_plan(old in arb_set(), new in arb_set()) {
        let mut maps = plan(&old);
        let (tops, nets) = affected(&old, &new);
        patch(&mut maps, &partial_plan(&new, &tops, &nets), &partial_plan(&old, &tops, &nets));
        proptest::prop_assert_eq!(maps, plan(&new));
    }

    /// And the plan answers every address as longest-prefix match does.
    #[test]
    fn plan_is_longest_prefix_match(set in arb_set(), probes in proptest::collection::vec((0u32..6, proptest::prelude::any::<u128>()), 50)) {
        let p = plan(&set);
        for (top, rnd) in probes {
            let a = Ipv6Addr::from((u128::from(0x2001_0db8u32 + top) << 96) | (rnd >> 32));
            proptest::prop_assert_eq!(plan_lookup(&p, a), lpm(&set, a), "{}", a);
        }
        for n in set.keys() {
            proptest::prop_assert_eq!(plan_lookup(&p, n.network()), lpm(&set, n.network()));
        }
    }
}

fn lpm(s: &BTreeMap<Ipv6Net, PartnerId>, a: Ipv6Addr) -> Option<PartnerId> {
    s.iter()
        .filter(|(n, _)| n.contains(&a))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, id)| *id)
}

#[test]
fn plan_matches_longest_prefix_match() {
    let mut v: Vec<(String, u32)> = vec![
        ("2001:db8::/32".into(), 1),
        ("2001:db8:1::/48".into(), 2),
        ("2001:db8:1:5::/64".into(), 3),
        ("2001:db8:1:5::25/128".into(), 4),
        ("2001:db0::/29".into(), 5),
        ("2400::/12".into(), 6),
        ("2400:cafe::/48".into(), 7),
    ];
    // A /32 with more lengths than the probe budget (besides the inline
    // one) falls back to the trie.
    for len in 33..=(34 + MAX_PROBES as u8) {
        v.push((format!("2a00:1::/{len}"), 100 + len as u32));
    }
    let s: BTreeMap<Ipv6Net, PartnerId> =
        v.iter().map(|(n, id)| (n.parse().unwrap(), *id)).collect();
    let p = plan(&s);
    assert!(p.trie_on_miss, "a /12 is not expanded");
    assert_ne!(p.slash32[&[0x2a, 0, 0, 1]].flags & USE_TRIE, 0);
    for a in [
        "2001:db8::1",
        "2001:db8:1::1",
        "2001:db8:1:5::1",
        "2001:db8:1:5::25",
        "2001:db8:2::1",
        "2001:db1::1",
        "2001:db9::1",
        "2401::1",
        "2400:cafe::1",
        "2400:caff::1",
        "2500::1",
        "2a00:1::1",
        "2a00:1:8000::1",
        "2a00:2::1",
        "::1",
    ] {
        let a: Ipv6Addr = a.parse().unwrap();
        assert_eq!(plan_lookup(&p, a), lpm(&s, a), "{a}");
    }
    let _ = set(&[]);
}
