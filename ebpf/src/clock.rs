//! The programs' one clock: every timestamp the kernel side writes or
//! compares (report buckets, event times) comes from `now_ns`, so the choice
//! of clock — and its per-kernel variant — is made in one place.
//!
//! CLOCK_MONOTONIC, as `clock_gettime(CLOCK_MONOTONIC)` reads it in the
//! controller. The coarse read (jiffy resolution) is plenty for rate limits
//! and second-scale windows and spares ~20 ns of a precise read per SYN,
//! but its helper arrived in Linux 5.11: on older kernels (Debian 11's
//! 5.10) the precise read does the same job.
use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};

/// 1 when the kernel has bpf_ktime_get_coarse_ns, set by the controller
/// after probing (`mx6gate_common::load_consts::COARSE_CLOCK`). Frozen
/// read-only at load, so the verifier prunes the branch not taken and a
/// 5.10 kernel never sees the coarse helper's call. 0 here: the object
/// as built works everywhere.
#[no_mangle]
static MX6GATE_COARSE_CLOCK: u8 = 0;

/// Nanoseconds of CLOCK_MONOTONIC; at jiffy resolution where the kernel
/// offers the coarse read.
#[inline(always)]
pub fn now_ns() -> u64 {
    // Volatile: the value is the loader's, not the compiler's to fold.
    if unsafe { core::ptr::read_volatile(&raw const MX6GATE_COARSE_CLOCK) } != 0 {
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        unsafe { bpf_ktime_get_ns() }
    }
}
