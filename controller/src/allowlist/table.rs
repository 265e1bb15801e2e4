//! The /32 level's images (see `mx6gate_common::allow::TableHeader`): how
//! one image changes by a /32 at a time, and the update protocol around
//! them — write the inactive image, publish it, wait for a grace period,
//! replay into the other.
//!
//! Within one image, linear probing without wrap-around: a /32 lives in
//! the first free slot of its window (its home slot and the
//! PROBE_LIMIT - 1 after it), and every slot between its home and it is
//! used — so a lookup may stop at the first empty slot. Removal shifts
//! later /32s back into the hole (they stay in their windows), which
//! keeps that true without tombstones. A /32 whose window is full is
//! *unplaced*: its entry goes to the image's stash (never read by the
//! programs), its window stays full (a removal that frees a slot in it
//! moves it in), and its prefixes go to the trie, which a lookup that
//! finds a full window consults while the image has unplaced /32s.
//!
//! Both images get the same changes in the same order from the same
//! start, so they hold the same slots; `dirty` marks the time between the
//! first and the second, and an update that finds it set (a crash, or a
//! refused update) first copies the active image over the other.
use mx6gate_common::allow::{home_slot, Slot, PROBE_LIMIT};

use super::*;
use crate::maps::Table;

/// A /32 as the table keys it.
pub(super) fn top_word(top: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*top)
}

/// Where `top` is in `image`: its slot, or its stash index.
enum Place {
    Slot(u32),
    Stash(u32),
    Nowhere,
}

fn find(t: &Table, image: u32, top: u32) -> Place {
    let h = t.header();
    let base = h.image_base(image) + home_slot(top, h.slots);
    for d in 0..PROBE_LIMIT {
        let s = t.slot(base + d);
        if s.used == 0 {
            return Place::Nowhere;
        }
        if s.top == top {
            return Place::Slot(base + d);
        }
    }
    let stash = h.image_base(image) + h.slots + PROBE_LIMIT;
    for i in 0..h.unplaced[image as usize] {
        if t.slot(stash + i).top == top {
            return Place::Stash(i);
        }
    }
    Place::Nowhere
}

/// The first empty slot of `top`'s window in `image`.
fn free_slot(t: &Table, image: u32, top: u32) -> Option<u32> {
    let h = t.header();
    let base = h.image_base(image) + home_slot(top, h.slots);
    (base..base + PROBE_LIMIT).find(|i| t.slot(*i).used == 0)
}

fn stash_base(t: &Table, image: u32) -> u32 {
    let h = t.header();
    h.image_base(image) + h.slots + PROBE_LIMIT
}

fn take_from_stash(t: &Table, image: u32, i: u32) {
    let mut h = t.header();
    let n = h.unplaced[image as usize];
    let base = stash_base(t, image);
    let last = *t.slot(base + n - 1);
    t.set_slot(base + i, &last);
    t.set_slot(base + n - 1, &Slot::EMPTY);
    h.unplaced[image as usize] = n - 1;
    t.set_header(&h);
}

/// Put `value` at `top` in `image` (no program reads it).
fn upsert(t: &Table, image: u32, top: u32, value: &Slash32) -> Result<()> {
    let slot = Slot {
        top,
        used: 1,
        value: *value,
    };
    match find(t, image, top) {
        Place::Slot(i) => t.set_slot(i, &slot),
        Place::Stash(i) => t.set_slot(stash_base(t, image) + i, &slot),
        Place::Nowhere => {
            let mut h = t.header();
            h.count[image as usize] += 1;
            if let Some(i) = free_slot(t, image, top) {
                t.set_slot(i, &slot);
            } else {
                let n = h.unplaced[image as usize];
                if n == h.stash {
                    bail!(
                        "the /32 table is too crowded: {} more /32s found no slot within {PROBE_LIMIT} of their own (raise maps.allow_entries, then `mx6gate detach` and restart to resize)",
                        n + 1
                    );
                }
                t.set_slot(stash_base(t, image) + n, &slot);
                h.unplaced[image as usize] = n + 1;
            }
            t.set_header(&h);
        }
    }
    Ok(())
}

/// Take `top` out of `image` (no program reads it).
fn remove(t: &Table, image: u32, top: u32) {
    let mut hole = match find(t, image, top) {
        Place::Nowhere => return,
        Place::Stash(i) => {
            take_from_stash(t, image, i);
            let mut h = t.header();
            h.count[image as usize] -= 1;
            t.set_header(&h);
            return;
        }
        Place::Slot(i) => i,
    };
    let h = t.header();
    let base = h.image_base(image);
    let end = base + h.slots + PROBE_LIMIT;
    // Back-shift: a later /32 whose home is at or before the hole moves
    // into it (it stays in its window); none past hole + PROBE_LIMIT can.
    let mut j = hole + 1;
    while j < end && j < hole + PROBE_LIMIT {
        let s = *t.slot(j);
        if s.used == 0 {
            break;
        }
        if base + home_slot(s.top, h.slots) <= hole {
            t.set_slot(hole, &s);
            hole = j;
        }
        j += 1;
    }
    t.set_slot(hole, &Slot::EMPTY);
    let mut h = t.header();
    h.count[image as usize] -= 1;
    t.set_header(&h);
    // An unplaced /32 whose window holds the hole moves in: its window
    // was full, so the hole is its first free slot.
    let stash = stash_base(t, image);
    for i in 0..h.unplaced[image as usize] {
        let s = *t.slot(stash + i);
        let home = base + home_slot(s.top, h.slots);
        if home <= hole && hole < home + PROBE_LIMIT {
            t.set_slot(hole, &s);
            take_from_stash(t, image, i);
            return;
        }
    }
}

/// The changes to one image, in order: upserts, then removals.
pub(super) struct Edits {
    pub upserts: Vec<([u8; 4], Slash32)>,
    pub removals: Vec<[u8; 4]>,
}

fn edit(t: &Table, image: u32, e: &Edits) -> Result<()> {
    for (top, v) in &e.upserts {
        upsert(t, image, top_word(top), v)?;
    }
    for top in &e.removals {
        remove(t, image, top_word(top));
    }
    Ok(())
}

/// Start an update: the inactive image made equal to the active one if a
/// previous update did not finish, then marked dirty. Returns it.
pub(super) fn begin(t: &Table) -> u32 {
    let active = t.active();
    if t.header().dirty != 0 {
        t.copy_image(active);
        let mut h = t.header();
        let (a, i) = (active as usize, 1 - active as usize);
        h.unplaced[i] = h.unplaced[a];
        h.count[i] = h.count[a];
        t.set_header(&h);
    }
    let mut h = t.header();
    h.dirty = 1;
    t.set_header(&h);
    1 - active
}

/// Write `edits` into the inactive image (no program sees it yet); on an
/// error it stays dirty, and the next update starts from the active one.
pub(super) fn write_inactive(t: &Table, image: u32, edits: &Edits) -> Result<()> {
    edit(t, image, edits)
}

/// The /32s unplaced in `image`.
pub(super) fn unplaced(t: &Table, image: u32) -> BTreeSet<[u8; 4]> {
    let n = t.header().unplaced[image as usize];
    let base = stash_base(t, image);
    (0..n).map(|i| t.slot(base + i).top.to_be_bytes()).collect()
}

/// Make `image` the one the programs read, and return once no program
/// can still be reading the other: after this, it may be written.
pub(super) fn publish(t: &Table, image: u32) -> Result<()> {
    debug_assert_eq!(t.active(), 1 - image);
    t.publish();
    grace_period()
}

/// Replay `edits` into the image just left (after `publish`): both
/// images equal again.
pub(super) fn finish(t: &Table, left: u32, edits: &Edits) -> Result<()> {
    edit(t, left, edits)?;
    let mut h = t.header();
    h.dirty = 0;
    t.set_header(&h);
    Ok(())
}

/// Wait for an RCU grace period: every BPF program running now has
/// returned. XDP programs run inside an RCU read-side section (the
/// driver's NAPI poll under rcu_read_lock, see the kernel's
/// Documentation/RCU and bpf_prog_run_xdp's callers), sk_lookup programs
/// from inet6_lookup_run_sk_lookup under rcu_read_lock, and test runs
/// inside bpf_test_run's rcu_read_lock. membarrier(MEMBARRIER_CMD_GLOBAL)
/// calls synchronize_rcu() (kernel/sched/membarrier.c) whenever more
/// than one CPU is online; with one, this syscall itself runs on the only
/// CPU, outside every read-side section of a non-preemptible kernel.
pub fn grace_period() -> Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .context("membarrier(MEMBARRIER_CMD_GLOBAL), the wait for BPF programs to finish");
    }
    Ok(())
}

/// Every /32 of `image`, placed and unplaced.
pub(super) fn read_image(t: &Table, image: u32) -> BTreeMap<[u8; 4], Slash32> {
    let h = t.header();
    let base = h.image_base(image);
    let mut out = BTreeMap::new();
    for i in base..base + h.slots + PROBE_LIMIT + h.unplaced[image as usize] {
        let s = t.slot(i);
        if s.used != 0 {
            out.insert(s.top.to_be_bytes(), s.value);
        }
    }
    out
}

/// The entry of `top` in the image the programs read, as they find it.
pub(super) fn lookup(t: &Table, top: &[u8; 4]) -> mx6gate_common::allow::Probe<Slash32> {
    use mx6gate_common::allow::{probe, Probe};
    let h = t.header();
    match probe(&h, t.active(), top_word(top), |i| Some(t.slot(i))) {
        Probe::Found(e) => Probe::Found(*e),
        Probe::Absent => Probe::Absent,
        Probe::Unplaced => Probe::Unplaced,
    }
}

/// Write `edits` into both images of a table no program reads yet.
pub(super) fn write_both(t: &Table, edits: &Edits) -> Result<()> {
    let next = begin(t);
    write_inactive(t, next, edits)?;
    t.publish();
    finish(t, 1 - next, edits)
}

#[cfg(test)]
mod tests {
    use mx6gate_common::allow::{probe, Probe};
    use proptest::prelude::*;

    use super::*;

    fn value(id: u32) -> Slash32 {
        Slash32 {
            short_id: id,
            ..Slash32::EMPTY
        }
    }

    /// What a program finds for `top` in the active image.
    fn found(t: &Table, top: u32) -> Option<Option<u32>> {
        match probe(&t.header(), t.active(), top, |i| Some(t.slot(i))) {
            Probe::Found(e) => Some(Some(e.short_id)),
            Probe::Absent => Some(None),
            // The trie's business: stands for "any answer".
            Probe::Unplaced => None,
        }
    }

    /// Twenty /32s with one home: sixteen fill the window, four go to the
    /// stash (and the trie); removing a placed one moves a stashed one in;
    /// a full stash is refused with the image left dirty, the active one
    /// untouched.
    #[test]
    fn a_full_window_spills_into_the_stash_and_back() {
        let t = Table::anonymous(16);
        let slots = t.header().slots;
        let same_home: Vec<u32> = (0x2001_0000u32..)
            .filter(|k| home_slot(*k, slots) == 3)
            .take(20 + 64)
            .collect();
        let all = |n: usize| Edits {
            upserts: same_home[..n]
                .iter()
                .map(|k| (k.to_be_bytes(), value(*k)))
                .collect(),
            removals: vec![],
        };
        write_both(&t, &all(20)).unwrap();
        assert_eq!(unplaced(&t, t.active()).len(), 4);
        for k in &same_home[..20] {
            let f = found(&t, *k);
            assert!(f == Some(Some(*k)) || f.is_none(), "{k:x}: {f:?}");
        }
        assert_eq!(
            found(&t, same_home[30]),
            None,
            "a full window with /32s unplaced: the trie"
        );
        let gone = Edits {
            upserts: vec![],
            removals: vec![same_home[0].to_be_bytes()],
        };
        write_both(&t, &gone).unwrap();
        assert_eq!(unplaced(&t, t.active()).len(), 3);
        assert_eq!(read_image(&t, t.active()).len(), 19);
        assert_eq!(found(&t, same_home[0]), None);
        let before = read_image(&t, t.active());
        let e = write_both(&t, &all(20 + 64)).unwrap_err();
        assert!(format!("{e}").contains("too crowded"), "{e}");
        assert_eq!(
            read_image(&t, t.active()),
            before,
            "the active image is untouched"
        );
        assert_eq!(t.header().dirty, 1);
        // The next update starts from the active image.
        write_both(&t, &gone).unwrap();
        assert_eq!(read_image(&t, 0), before);
        assert_eq!(read_image(&t, 1), before);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A tiny table (16 /32s: 32 home slots, 64 in the stash) under
        /// updates through the whole protocol, with /32s drawn so they
        /// crowd a few homes: every /32 in the set is found or unplaced,
        /// every other one is absent or sent to the trie, the images agree
        /// after each update, and unplaced /32s are exactly the stashed ones.
        #[test]
        fn bounded_probes_answer_every_slash32(
            steps in proptest::collection::vec(
                proptest::collection::vec((0u32..48, proptest::option::of(0u32..4)), 1..12),
                1..24,
            ),
        ) {
            let t = Table::anonymous(16);
            let mut model: BTreeMap<[u8; 4], Slash32> = BTreeMap::new();
            // Keys spread over a few homes: multiples of a stride that the
            // hash maps close together, plus neighbours.
            let key = |k: u32| (0x2001_0000u32 + k * 0x1_0000 + (k % 3)).to_be_bytes();
            for step in steps {
                let mut want = model.clone();
                for (k, v) in step {
                    match v {
                        Some(id) => { want.insert(key(k), value(id)); }
                        None => { want.remove(&key(k)); }
                    }
                }
                if want.len() > 16 + 64 { continue; }
                let edits = Edits {
                    upserts: write::upserts(&want, &model),
                    removals: write::stale(&want, &model),
                };
                let next = begin(&t);
                write_inactive(&t, next, &edits).unwrap();
                t.publish();
                finish(&t, 1 - next, &edits).unwrap();
                model = want;
                prop_assert_eq!(read_image(&t, 0), read_image(&t, 1));
                prop_assert_eq!(&read_image(&t, t.active()), &model);
                for k in 0..48 {
                    let top = u32::from_be_bytes(key(k));
                    let unplaced = unplaced(&t, t.active()).contains(&key(k));
                    match (model.get(&key(k)), found(&t, top)) {
                        (Some(e), Some(Some(id))) => prop_assert_eq!(e.short_id, id),
                        (Some(_), None) => prop_assert!(unplaced, "{top:x} sent to the trie but not stashed"),
                        (Some(_), Some(None)) => prop_assert!(false, "{top:x} in the set, absent"),
                        (None, Some(Some(_))) => prop_assert!(false, "{top:x} removed, found"),
                        (None, _) => {}
                    }
                }
            }
        }
    }
}
