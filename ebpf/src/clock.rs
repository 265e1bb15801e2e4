//! The programs' one clock: every timestamp the kernel side writes or
//! compares (report buckets, event times) comes from `now_ns`, so the choice
//! of clock — and any per-kernel variant of it — is made in one place.
//!
//! CLOCK_MONOTONIC, as `clock_gettime(CLOCK_MONOTONIC)` reads it in the
//! controller. The coarse read (jiffy resolution) is plenty for rate limits
//! and second-scale windows and spares ~20 ns of a precise read per SYN.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

/// Nanoseconds of CLOCK_MONOTONIC, at jiffy resolution.
#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}
