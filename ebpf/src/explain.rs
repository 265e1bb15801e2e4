//! Defer mode's record of explained sources (`mx6gate_common::explain`),
//! read by both programs, written by sk_lookup.
use mx6gate_common::explain::Explained;

use crate::maps::EXPLAINED;

/// The explanation record under `key`, copied out at once (an LRU
/// element can be reused under a reader).
#[inline(always)]
pub fn explained(key: &[u8; 16]) -> Option<Explained> {
    unsafe { EXPLAINED.get(key) }.copied()
}
