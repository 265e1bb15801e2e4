//! mx6gate's controller: loads and pins the eBPF programs, keeps the
//! allowlist in sync with the partner store, and serves the CLI.
//!
//! - `gate`   — the pinned state (load, adopt, attach, detach)
//! - `maps`   — typed access to the pinned maps
//! - `allowlist` — the allowlist's layout in those maps (plan, diff, read)
//! - `config` — the TOML config, validated whole
//! - `store`  — the partner store (partners_dir/*.toml)
//! - `state`  — runtime state: mode override, partner ids, the lock
//! - `reconcile` — store and config → maps (what `mx6gate sync` runs)
//! - `report` — non-partner SYN reports from the kernel, aggregated
//! - `control` — the daemon's control socket (`mx6gate top` asks it)
//! - `daemon` — `mx6gate run` (its sync worker in `daemon::worker`)
//! - `health` — what the daemon found (store refused, repairs), shared
//! - `pinlock` — one owner per pinned gate (flock on the pin directory)
//! - `metrics` — the Prometheus endpoint
//! - `notify` — systemd readiness (sd_notify) for `run`
//! - `doctor` — the checks behind `mx6gate doctor`
//! - `explain` — defer mode's explain-then-reset: `[defer]`, its records
//! - `iface`  — the host's interface addresses
//! - `kernel` — what the running kernel offers (probed): the floor, and
//!   the load-time choices for newer kernels
//! - `spf`    — partners by domain: SPF expansion and refresh safety
// The library reports through `tracing` and its return values; only the
// binary (src/bin/mx6gate) prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod allowlist;
pub(crate) mod batch;
pub mod config;
pub mod context;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod explain;
pub mod fsutil;
pub mod gate;
pub(crate) mod health;
pub mod iface;
pub mod kernel;
pub mod maps;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod observe;
pub mod partners;
pub mod pinlock;
pub mod policy;
pub mod reconcile;
pub mod report;
pub mod responder;
pub mod spf;
pub mod state;
pub mod store;
