//! The tracked update: a snapshot of the last layout written, kept in
//! the state dir, so an update diffs against it and rewrites only the
//! /32s it touches instead of reading the maps back whole.
use super::*;
/// The prefix set last applied, saved beside the state so the next update
/// is a diff against it instead of a read of every map (seconds at a
/// million prefixes). Trusted only for the very maps it was written for
/// (the boot and the maps' kernel ids: another gate at the same pin path,
/// or the same state dir used with another gate, never matches) and while
/// CONFIG.allow_generation matches.
pub(super) struct Snapshot {
    generation: u32,
    identity: Vec<u8>,
    prefixes: BTreeMap<Ipv6Net, PartnerId>,
}

pub(super) const SNAP_MAGIC: &[u8; 8] = b"MX6SNAP2";

/// Which maps a snapshot describes: this boot's id and the allowlist maps'
/// ids (kernel ids are unique within a boot).
pub(super) fn identity(maps: &GateMaps) -> Vec<u8> {
    let mut v = std::fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    v.truncate(36);
    v.resize(36, 0);
    for id in maps.ids() {
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

impl Snapshot {
    pub(super) fn load(path: &Path) -> Option<Snapshot> {
        let b = std::fs::read(path).ok()?;
        let head = 16 + 36 + 4 * GateMaps::ID_COUNT;
        if b.len() < head || &b[..8] != SNAP_MAGIC || !(b.len() - head).is_multiple_of(21) {
            return None;
        }
        let generation = u32::from_le_bytes(b[8..12].try_into().ok()?);
        let identity = b[16..head].to_vec();
        // Saved in order, so collect() bulk-builds the map.
        let prefixes = b[head..]
            .chunks_exact(21)
            .map(|e| {
                let addr: [u8; 16] = e[..16].try_into().ok()?;
                let net = Ipv6Net::new(Ipv6Addr::from(addr), e[16]).ok()?;
                Some((net, u32::from_le_bytes(e[17..21].try_into().ok()?)))
            })
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Snapshot {
            generation,
            identity,
            prefixes,
        })
    }

    pub(super) fn save(
        path: &Path,
        generation: u32,
        identity: &[u8],
        prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    ) -> Result<()> {
        let mut b = Vec::with_capacity(16 + identity.len() + prefixes.len() * 21);
        b.extend_from_slice(SNAP_MAGIC);
        b.extend_from_slice(&generation.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(identity);
        for (n, id) in prefixes {
            b.extend_from_slice(&n.network().octets());
            b.push(n.prefix_len());
            b.extend_from_slice(&id.to_le_bytes());
        }
        crate::fsutil::write_atomic(path, &b)
    }
}

pub(super) fn set_generation(maps: &mut GateMaps, g: u32) -> Result<()> {
    let mut cfg = maps.read_config()?;
    cfg.allow_generation = g;
    maps.write_config(&cfg)
}

/// `apply`, but as a diff against the snapshot at `snapshot` when it
/// still describes the maps: only the /32s and prefixes that changed are
/// planned and written. The generation goes odd while the maps change, so
/// a crash midway makes the next run read the maps back in full.
pub fn apply_tracked(
    maps: &mut GateMaps,
    prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    snapshot: &Path,
) -> Result<Changes> {
    let g = maps.read_config()?.allow_generation;
    let ident = identity(maps);
    // Anything doubtful takes the full path, which reads the maps back and
    // checks the exact capacity before writing.
    let snap = Snapshot::load(snapshot).filter(|s| {
        g % 2 == 0 && s.generation == g && s.identity == ident && fits_surely(maps, prefixes)
    });
    if let Some(s) = &snap {
        if s.prefixes == *prefixes {
            // Nothing to do: leave maps, generation and snapshot alone.
            return Ok(changes_in(std::iter::empty(), prefixes, prefixes));
        }
    }
    let next = (g | 1).wrapping_add(1);
    set_generation(maps, g | 1)?;
    let changes = match snap {
        None => apply(maps, prefixes)?,
        Some(s) => {
            let (tops, nets) = affected(&s.prefixes, prefixes);
            let want = partial_plan(prefixes, &tops, &nets);
            let have = partial_plan(&s.prefixes, &tops, &nets);
            write_diff(maps, &want, &have)?;
            changes_in(nets.iter(), &s.prefixes, prefixes)
        }
    };
    Snapshot::save(snapshot, next, &ident, prefixes)?;
    set_generation(maps, next)?;
    Ok(changes)
}

pub(super) fn top_range(top: [u8; 4]) -> (Ipv6Net, Ipv6Net) {
    let base = u128::from(u32::from_be_bytes(top)) << 96;
    (
        Ipv6Net::new(Ipv6Addr::from(base), 0).unwrap(),
        Ipv6Net::new(Ipv6Addr::from(base | (u128::MAX >> 32)), 128).unwrap(),
    )
}

/// /32s whose SLASH32 entry may differ between `old` and `new`, and the
/// prefixes that differ.
pub(super) fn affected(
    old: &BTreeMap<Ipv6Net, PartnerId>,
    new: &BTreeMap<Ipv6Net, PartnerId>,
) -> (BTreeSet<[u8; 4]>, BTreeSet<Ipv6Net>) {
    // One merge walk over the two sorted sets.
    let mut nets = BTreeSet::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((n, _)), None) => {
                nets.insert(**n);
                a.next();
            }
            (None, Some((n, _))) => {
                nets.insert(**n);
                b.next();
            }
            (Some((na, ia)), Some((nb, ib))) => match na.cmp(nb) {
                std::cmp::Ordering::Less => {
                    nets.insert(**na);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    nets.insert(**nb);
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ia != ib {
                        nets.insert(**na);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    let mut tops = BTreeSet::new();
    for n in &nets {
        if n.prefix_len() > 32 {
            tops.insert(top32(n));
            continue;
        }
        // A short prefix touches every /32 with an entry in its span.
        let first = u32::from_be_bytes(top32(n));
        let last = first | u32::MAX.checked_shr(n.prefix_len().into()).unwrap_or(0);
        let (lo, _) = top_range(first.to_be_bytes());
        let (_, hi) = top_range(last.to_be_bytes());
        for set in [old, new] {
            for (m, _) in set.range(lo..=hi) {
                if m.prefix_len() > 32 {
                    tops.insert(top32(m));
                } else if m.prefix_len() >= MIN_EXPAND_LEN {
                    let f = u32::from_be_bytes(top32(m));
                    for i in 0..(1u32 << (32 - m.prefix_len())) {
                        tops.insert((f + i).to_be_bytes());
                    }
                }
            }
        }
    }
    (tops, nets)
}

/// The part of `plan(prefixes)` about `tops` and `nets` (the trie-on-miss
/// flag included): plan just the prefixes that can influence them — those
/// under the /32s, the short ones covering them, the changed ones — and
/// keep what concerns them.
pub(super) fn partial_plan(
    prefixes: &BTreeMap<Ipv6Net, PartnerId>,
    tops: &BTreeSet<[u8; 4]>,
    nets: &BTreeSet<Ipv6Net>,
) -> Plan {
    let mut sub: BTreeMap<Ipv6Net, PartnerId> = BTreeMap::new();
    for top in tops {
        let (lo, hi) = top_range(*top);
        sub.extend(prefixes.range(lo..=hi).map(|(n, id)| (*n, *id)));
        let t = u128::from(u32::from_be_bytes(*top)) << 96;
        for len in 0..32u8 {
            let n = Ipv6Net::new(Ipv6Addr::from(t), len).unwrap().trunc();
            if let Some(id) = prefixes.get(&n) {
                sub.insert(n, *id);
            }
        }
    }
    for n in nets {
        if let Some(id) = prefixes.get(n) {
            sub.insert(*n, *id);
        }
    }
    let mut p = plan(&sub);
    p.trie_on_miss = prefixes.keys().any(|n| n.prefix_len() < MIN_EXPAND_LEN);
    let keep = |n: &Ipv6Net| nets.contains(n) || (n.prefix_len() > 32 && tops.contains(&top32(n)));
    p.slash32.retain(|t, _| tops.contains(t));
    p.long
        .retain(|k, _| keep(&Ipv6Net::new(Ipv6Addr::from(k.addr), k.prefix_len as u8).unwrap()));
    p.trie.retain(|n, _| keep(n));
    // OCCUPIED words depend on every prefix in their span, not only on
    // `sub`: recompute the ones the change can touch from the whole set.
    // Whole summary cells' worth of words, so their summary bits come out
    // exact too.
    let mut groups = BTreeSet::new();
    for top in tops {
        if let Some(c) = cell_of(u32::from_be_bytes(*top)) {
            groups.insert(c / 64 / WORDS_PER_SUMMARY);
        }
    }
    for n in nets {
        if let Some((first, last)) = cell_span(n) {
            groups.extend(first / 64 / WORDS_PER_SUMMARY..=last / 64 / WORDS_PER_SUMMARY);
        }
    }
    let words = groups
        .iter()
        .flat_map(|g| g * WORDS_PER_SUMMARY..(g + 1) * WORDS_PER_SUMMARY);
    // In runs of consecutive words: one range walk each.
    let mut run: Option<(u32, u32)> = None;
    for w in words.into_iter().map(Some).chain([None]) {
        match (run, w) {
            (Some((a, b)), Some(w)) if w == b + 1 => run = Some((a, w)),
            (prev, next) => {
                if let Some((a, b)) = prev {
                    p.occupied.extend(occupied_words(prefixes, a, b));
                }
                run = next.map(|w| (w, w));
            }
        }
    }
    p.summary = summary_of(&p.occupied);
    p
}
