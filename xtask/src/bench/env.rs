//! The machine the figures come from, and the knobs the run sets.
use std::process::Command;

use anyhow::{Context, Result};

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets `kernel.bpf_stats_enabled` to 0 (it adds ~90 ns to every program
/// run) and restores the old value when dropped.
pub struct BpfStatsOff {
    pub before: String,
}

impl BpfStatsOff {
    pub fn new() -> Result<BpfStatsOff> {
        let before = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_string();
        if before != "0" {
            std::fs::write(BPF_STATS, "0").with_context(|| format!("writing 0 to {BPF_STATS}"))?;
        }
        Ok(BpfStatsOff { before })
    }

    /// The value now (checked before every measurement part).
    pub fn now() -> String {
        std::fs::read_to_string(BPF_STATS)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    }
}

impl Drop for BpfStatsOff {
    fn drop(&mut self) {
        if self.before != "0" {
            if let Err(e) = std::fs::write(BPF_STATS, &self.before) {
                eprintln!("bench: restoring {BPF_STATS}={}: {e}", self.before);
            }
        }
    }
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// cpu0's caches as sysfs lists them, e.g. "L1d 32K, L1i 32K, L2 512K,
/// L3 32768K": the cold figures depend on what fits where, so a run on
/// another machine is read beside its own sizes.
fn caches() -> String {
    let mut out = Vec::new();
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| {
            std::fs::read_to_string(format!("{dir}/{f}"))
                .map(|s| s.trim().to_string())
                .ok()
        };
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            break;
        };
        let suffix = match kind.as_str() {
            "Data" => "d",
            "Instruction" => "i",
            _ => "",
        };
        out.push(format!("L{level}{suffix} {size}"));
    }
    if out.is_empty() {
        "?".into()
    } else {
        out.join(", ")
    }
}

/// Machine, kernel, tools: lines for the results' header.
pub fn describe() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
    let load = loadavg();
    vec![
        (
            "Machine".into(),
            format!("{model}, {cpus} vCPU, {} MiB RAM", mem / 1024),
        ),
        ("CPU caches (cpu0)".into(), caches()),
        ("Kernel".into(), first_line("uname", &["-srvm"])),
        ("Clock source".into(), clocksource),
        ("Load average at start".into(), load),
        ("nftables".into(), first_line("nft", &["--version"])),
        (
            "xdp-tools".into(),
            first_line("dpkg-query", &["-W", "-f", "${Version}", "xdp-tools"]),
        ),
        ("rustc".into(), first_line("rustc", &["--version"])),
    ]
}

pub use crate::measure::loadavg;

pub fn date() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// VmRSS and VmHWM of this process, KiB.
pub fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// Reset VmHWM to the current RSS (clear_refs 5), so a later VmHWM is the
/// peak of what ran in between.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

/// Slab + per-CPU kernel memory (for the nftables set, which has no
/// per-object accounting): host-wide, so approximate.
pub fn kernel_mem_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    ["Slab:", "Percpu:", "VmallocUsed:"]
        .iter()
        .filter_map(|k| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}
