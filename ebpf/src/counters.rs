//! The per-CPU counters both programs add to.
use mx6gate_common::{counter_slot, Counter, PartnerId};

use crate::maps::{COUNTERS, COUNTERS_EXT, PARTNER_HITS};

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
