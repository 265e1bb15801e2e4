//! mx6gate's kernel side. One object, built by `cargo xtask build`:
//! - `mx6gate_xdp`: the fast path on each protected interface (xdp.rs);
//! - `mx6gate_sk_lookup`: steering and backstop in the gateway's network
//!   namespace (sk_lookup.rs).
//!
//! In xdp-filter's shape: the header walk in packet.rs, the allowlist
//! walk over the maps in allow.rs, the reset writer in rst.rs, the maps
//! themselves (statics only) in maps.rs, and the policy — a few lines that
//! read them — in xdp.rs and sk_lookup.rs. Counters in counters.rs, the
//! controller's settings in config.rs, defer mode's records in explain.rs,
//! reports of non-partner SYNs to the controller in report.rs, the one
//! clock in clock.rs.
#![no_std]
#![no_main]

mod allow;
mod clock;
mod config;
mod counters;
mod explain;
mod maps;
mod packet;
mod report;
mod rst;
mod sk_lookup;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Unreachable: the verifier rejects programs that could get here.
    loop {}
}
