//! mx6gate's kernel side. One object, built by `cargo xtask build`:
//! - `mx6gate_xdp`: the fast path on each protected interface (xdp.rs);
//! - `mx6gate_sk_lookup`: steering and backstop in the gateway's network
//!   namespace (sk_lookup.rs).
//!
//! Maps shared with the controller live in maps.rs, reports of
//! non-partner SYNs to the controller in report.rs, bounds-checked packet
//! access in packet.rs, the one clock in clock.rs.
#![no_std]
#![no_main]

mod clock;
mod maps;
mod packet;
mod report;
mod sk_lookup;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Unreachable: the verifier rejects programs that could get here.
    loop {}
}
