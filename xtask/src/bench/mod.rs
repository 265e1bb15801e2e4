//! `cargo xtask bench [--quick]`: the fast path against a bare XDP_DROP,
//! against xdp-filter and against nftables; the control plane against
//! `nft -f`; memory; the partner store (load and resync, one big partner
//! against the same prefixes spread). Writes `RESULTS.md` and
//! `per-packet.svg`.
//!
//! Runs as root. Everything it makes is private to this process and removed
//! on the way out, on error too: gate pins under `/sys/fs/bpf/mx6bench-<pid>-…`
//! (left-overs of killed runs are removed at the next start), network
//! namespaces through `mx6gate_tests::Netns`, nftables tables only inside
//! those namespaces; `kernel.bpf_stats_enabled` is set to 0 for the run and
//! restored.
//!
//! The measuring code links the controller library, which embeds the eBPF
//! object: it is behind the `bench` feature, and without it this module only
//! builds everything and re-runs xtask in release mode with the feature on.
use std::path::PathBuf;

use anyhow::Result;

#[cfg(feature = "bench")]
mod cold;
#[cfg(feature = "bench")]
mod control;
#[cfg(feature = "bench")]
mod env;
#[cfg(feature = "bench")]
mod frames;
#[cfg(feature = "bench")]
mod gate;
#[cfg(feature = "bench")]
mod insns;
#[cfg(feature = "bench")]
mod per_packet;
#[cfg(feature = "bench")]
mod prefixes;
#[cfg(feature = "bench")]
mod report;
#[cfg(feature = "bench")]
mod report_text;
#[cfg(feature = "bench")]
mod run;
#[cfg(feature = "bench")]
mod stats;
#[cfg(feature = "bench")]
mod store;
#[cfg(feature = "bench")]
mod sys;
#[cfg(feature = "bench")]
mod trie;
#[cfg(feature = "bench")]
mod variants;
#[cfg(feature = "bench")]
mod wire;
#[cfg(feature = "bench")]
mod xdpfilter;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Tiny sizes and few repeats (the CI smoke test); writes to
    /// target/bench-quick/ unless --out is given.
    #[arg(long)]
    pub quick: bool,
    /// Directory for RESULTS.md and per-packet.svg [default: bench/].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allowlist sizes to measure, comma-separated (overrides the defaults:
    /// 10,10000,100000,1000000; with --quick 10,1000).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Run only these parts: per-packet, wire, control, memory, variants, store.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Internal: load a gate with this many prefixes in a fresh process and
    /// print its memory (the bench runs itself with it for part 4).
    #[arg(long, hide = true)]
    pub rss_probe: Option<usize>,
}

#[cfg(feature = "bench")]
impl BenchArgs {
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            crate::workspace_root().join(if self.quick {
                "target/bench-quick"
            } else {
                "bench"
            })
        })
    }

    pub fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// With the `bench` feature: measure. Without: build the eBPF object and
/// the controller, then run this same command from a release build of
/// xtask with the feature on (release, so the control-plane figures time
/// optimised code).
pub fn main(args: BenchArgs) -> Result<()> {
    #[cfg(feature = "bench")]
    {
        run::run(&args)
    }
    #[cfg(not(feature = "bench"))]
    {
        let _ = &args;
        crate::build_all()?;
        let forwarded: Vec<String> = std::env::args()
            .skip_while(|a| a != "bench")
            .skip(1)
            .collect();
        crate::run(
            std::process::Command::new("cargo")
                .args([
                    "run",
                    "--release",
                    "-q",
                    "-p",
                    "xtask",
                    "--features",
                    "bench",
                    "--",
                ])
                .arg("bench")
                .args(&forwarded),
        )
    }
}
