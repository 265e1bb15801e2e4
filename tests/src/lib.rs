//! Test utilities for mx6gate's integration tests and `cargo xtask lab`
//! (modelled on tubular's `internal/testutil`).
//!
//! * [`require_root`] — the privilege gate every privileged test starts with
//!   (`MX6GATE_REQUIRE_PRIV=1` turns a skip into a failure).
//! * [`Netns`] — a named network namespace, removed (with everything in it)
//!   on drop, at exit, or by the next run if this one crashed; commands run in
//!   it through `nsenter --net` (bpffs stays visible), closures through
//!   `setns` on a fresh thread ([`Netns::enter`]).
//! * [`veth_pair`], [`set_gro`], [`add_addr`], [`add_route`].
//! * [`Topology`] — the standard lab: sender and gateway joined by a veth,
//!   documentation addresses only (constants in [`topology`]).
//! * [`connect_from`], [`read_banner`], [`Listener`] — TCP in namespaces;
//!   [`ping`] — ICMP echo in Rust.
//! * [`sendmail::Sendmail`] — Debian's sendmail, unpacked into a cache, as a
//!   sending MTA in a namespace.
//! * [`authdns::AuthDns`] — a real authoritative DNS server (Knot) with
//!   test zones, reloadable and pausable; [`dns::Dnsmasq`] — a small one.
//! * [`Postfix`] / [`PostfixInstance`] — real Postfix instances inside a
//!   namespace; [`swaks()`] — the SMTP test client inside a namespace.
//! * [`packets`] — frame builders for the XDP differential tests.
//! * [`systemd::SystemdInstance`] — a real systemd as PID 1 of its own
//!   PID namespace, for tests of the packaged unit.
//! * [`signals::blocked`] — a closure with the thread's signals blocked
//!   (BPF_PROG_TEST_RUN repeats stop with EINTR on a pending signal).
//! * [`prometheus::Prometheus`] — a real Prometheus server in a namespace
//!   (1 s scrape and rule intervals), queried over its HTTP API.
//! * [`expect`] — what a connection must meet (connects, dropped, refused
//!   fast, enforced), asserted with generous bounds; [`wait::wait_until`]
//!   — a bounded poll; [`pinned`] — the pinned maps read with aya;
//!   [`files`] — a directory's contents, dates; [`cmd::out_str`];
//!   [`scrape`] — the metrics endpoint over HTTP, parsed.
//! * [`gate`] — the real `mx6gate` binary driven in a test namespace;
//!   [`xdp_pass`] — a minimal XDP_PASS program for a veth peer.
//!
//! Every loop in here is bounded in count and time.

pub mod authdns;
pub mod cleanup;
pub mod cmd;
pub mod dns;
pub mod expect;
pub mod files;
pub mod gate;
pub mod icmp;
pub mod netns;
pub mod packets;
pub mod pinned;
pub mod postfix;
pub mod privilege;
pub mod prometheus;
pub mod scrape;
pub mod sendmail;
pub mod signals;
pub mod swaks;
pub mod systemd;
pub mod tcp;
pub mod topology;
pub mod wait;
pub mod xdp_pass;

pub use cleanup::{cleanup_all, cleanup_stale, own_namespaces, own_prefix, run_dir};
pub use icmp::ping;
pub use netns::{add_addr, add_route, set_gro, veth_pair, Netns};
pub use postfix::{Postfix, PostfixInstance, Role};
pub use privilege::{ensure_bpffs, require_programs, require_root};
pub use swaks::{swaks, swaks_with, SwaksOptions, SwaksResult};
pub use tcp::{connect_from, read_banner, read_reply, Accepted, ConnectOutcome, Listener};
pub use topology::*;
