//! mx6gate's controller library: loads and pins the eBPF programs, keeps
//! the allowlist in step with the partner store, runs the daemon and
//! answers for every verb. The `mx6gate` binary (`src/bin/mx6gate`: the
//! command line, one file per verb, and the log setup) is its only user;
//! nothing here imports it.
//!
//! The pinned gate:
//! - `gate`      — the pinned state (load, adopt, attach, detach; the bpffs
//!   layout, its pin checks)
//! - `maps`      — typed access to the pinned maps
//! - `batch`     — map batch updates (BPF_MAP_UPDATE/DELETE_BATCH), which
//!   aya 0.14 lacks
//! - `allowlist` — the allowlist's layout in those maps (`plan`, `write`,
//!   `snapshot`, read back in `read`)
//! - `kernel`    — what the running kernel offers (probed): the floor, and
//!   the load-time choices for newer kernels
//! - `pinlock`   — one owner per pinned gate (flock on the pin directory)
//!
//! The policy:
//! - `config`    — the TOML config, validated whole; it assembles the
//!   sections each component owns (`responder::config`,
//!   `metrics::config`, `spf::config`, `explain`'s `[defer]`)
//! - `context`   — `Ctx`: the validated config and its state dir, what every
//!   verb starts from
//! - `store`     — the partner store (partners_dir/*.toml): `parse`, `files`,
//!   `edit`
//! - `state`     — runtime state: mode override, partner ids, the lock
//! - `policy`    — the allowlist the gate enforces: manual prefixes ∪ each
//!   partner's SPF domains' last good sets (never a held one)
//! - `partners`  — the partner edits (`add`, `remove`, `refresh`,
//!   `accept`) as one transaction each: store, SPF state and maps together
//! - `reconcile` — store and config → maps (what every changing command,
//!   `mx6gate sync` and the daemon end with)
//! - `explain`   — defer mode's explain-then-reset: `[defer]`, its records
//! - `fsutil`    — crash-safe file updates (temp file, fsync, rename)
//! - `spf`       — partners by domain: SPF expansion and refresh safety
//!
//! The daemon and what it serves:
//! - `daemon`    — `mx6gate run`: the async side (signals, responder,
//!   metrics, control) and the sync worker thread that owns the gate
//!   (`daemon::worker`)
//! - `health`    — what the daemon found (store refused, repairs), shared
//! - `responder` — defer mode's reject-banner SMTP responder
//! - `metrics`   — the Prometheus endpoint (it renders `observe`'s
//!   `PinnedView`)
//! - `report`    — non-partner SYN reports from the kernel, aggregated;
//!   `report::suggest`, `top --suggest`'s `partner add` lines
//! - `control`   — the daemon's control socket (`mx6gate top` asks it)
//! - `notify`    — systemd readiness (sd_notify) for `run`
//!
//! Looking, never changing:
//! - `observe`   — one view of the gate (`GateView`: `status` text and
//!   `mx6gate.status/1`, built on `PinnedView`, the kernel half the
//!   metrics render; `PartnersView`: `mx6gate.partners/1`)
//! - `check`     — what the gate would do with one address now (`check
//!   ADDR`'s answer, which the binary renders)
//! - `doctor`    — the checks behind `mx6gate doctor`
//! - `iface`     — the host's interface addresses
// The library reports through `tracing` and its return values; only the
// binary (src/bin/mx6gate) prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod allowlist;
pub(crate) mod batch;
pub mod check;
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
