//! Side measurements from /proc: CPU time of the servers, the clients and
//! the machine, RSS, the smtpd processes, the namespaces' TCP counters, the
//! gate's sk_lookup counters and the listen backlogs.
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Result};
use mx6gate_tests::{gate::GateUnderTest, Netns, Postfix};

use super::Lab;

/// How often the sampler looks at RSS and the smtpd processes.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Cumulative CPU time (user + system), ms.
pub(super) struct CpuSnapshot {
    pub(super) daemon_ms: f64,
    pub(super) postfix_ms: f64,
    pub(super) self_ms: f64,
    pub(super) machine_ms: f64,
    pub(super) softirq_ms: f64,
}

impl CpuSnapshot {
    /// `peer`: the Postfix instance whose processes are counted.
    pub(super) fn take(lab: &Lab, peer: &Postfix) -> CpuSnapshot {
        let postfix_ms = peer
            .master_pid()
            .map(|m| {
                // The master's own time and that of the children it reaped,
                // plus the children alive now (smtpd, anvil, postlogd, …).
                let live: f64 = proc_pids()
                    .into_iter()
                    .filter(|&p| matches!(comm_ppid(p), Some((_, pp)) if pp == m))
                    .map(|p| cpu_ms(p, true))
                    .sum();
                cpu_ms(m, true) + live
            })
            .unwrap_or(0.0);
        // SAFETY: getrusage fills the valid struct given.
        let self_ms = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
            tv(ru.ru_utime) + tv(ru.ru_stime)
        };
        let (machine_ms, softirq_ms) = machine_busy_ms();
        CpuSnapshot {
            daemon_ms: cpu_ms(lab.daemon_pid, false),
            postfix_ms,
            self_ms,
            machine_ms,
            softirq_ms,
        }
    }
}

/// Busy time of all CPUs since boot (/proc/stat `cpu`: user nice system
/// irq softirq steal) and the irq + softirq part of it, ms.
pub(super) fn machine_busy_ms() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let f: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    let soft: u64 = [5, 6].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (busy as f64 * 1000.0 / hz, soft as f64 * 1000.0 / hz)
}

/// utime + stime (and with `children`, cutime + cstime) of a process, ms.
pub(super) fn cpu_ms(pid: i32, children: bool) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = s.rfind(')') else {
        return 0.0;
    };
    // Fields after the comm: state is field 3; utime is 14 … cstime 17.
    let f: Vec<u64> = s[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let take = if children { 4 } else { 2 };
    let ticks: u64 = f.iter().skip(11).take(take).sum();
    // SAFETY: plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / hz
}

/// Peak daemon RSS (kB) and peak number of smtpd processes, sampled until
/// `stop`.
pub(super) fn sample(stop: &AtomicBool, daemon: i32, master: Option<i32>) -> (u64, usize) {
    let mut peak = (0, 0);
    // Bounded: a run lasts seconds; this gives up after 10 minutes anyway.
    for _ in 0..3000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        peak.0 = peak.0.max(rss_kb(daemon).unwrap_or(0));
        if let Some(m) = master {
            peak.1 = peak.1.max(smtpd_count(m));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    peak
}

/// VmRSS of a process, kB.
pub(super) fn rss_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// (comm, ppid) of a process.
pub(super) fn comm_ppid(pid: i32) -> Option<(String, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let ppid = s[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

pub(super) fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn smtpd_count(master: i32) -> usize {
    proc_pids()
        .into_iter()
        .filter(|&p| matches!(comm_ppid(p), Some((c, pp)) if c == "smtpd" && pp == master))
        .count()
}

/// The `mx6gate run` process: the pid we spawned is `nsenter`, which execs
/// mx6gate (no --fork); if it did fork, its mx6gate child.
pub(super) fn find_daemon(spawned: u32) -> Result<i32> {
    let spawned = spawned as i32;
    for _ in 0..100 {
        if let Some((comm, _)) = comm_ppid(spawned) {
            if comm == "mx6gate" {
                return Ok(spawned);
            }
            if let Some(p) = proc_pids()
                .into_iter()
                .find(|&p| matches!(comm_ppid(p), Some((c, pp)) if c == "mx6gate" && pp == spawned))
            {
                return Ok(p);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("cannot find the mx6gate process of pid {spawned}")
}

/// /proc/net/netstat and /proc/net/snmp of a namespace, as
/// `Section:Field -> value`.
pub(super) fn netstat(ns: &Netns) -> Result<BTreeMap<String, u64>> {
    let text = ns.run_stdout(&["cat", "/proc/net/netstat", "/proc/net/snmp"])?;
    let mut m = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [head, vals] = pair else { continue };
        let (Some((sec, names)), Some((sec2, values))) =
            (head.split_once(':'), vals.split_once(':'))
        else {
            continue;
        };
        if sec != sec2 {
            continue;
        }
        for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                m.insert(format!("{sec}:{k}"), v);
            }
        }
    }
    Ok(m)
}

/// The sk_lookup counters from `mx6gate status`.
pub(super) fn sk_counters(gate: &GateUnderTest) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let Ok(out) = gate.ok(&["status"]) else {
        return m;
    };
    let mut in_sk = false;
    for l in out.lines() {
        if l.starts_with("sk_lookup (") {
            in_sk = true;
            continue;
        }
        if in_sk {
            if !l.starts_with(' ') {
                break;
            }
            let mut it = l.split_whitespace();
            if let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse().ok())) {
                m.insert(k.to_string(), v);
            }
        }
    }
    m
}

/// Listening sockets of the gateway namespace: local address and backlog
/// (`ss -ltn`: Send-Q of a listener is its backlog).
pub(super) fn listen_backlogs(ns: &Netns) -> Result<Vec<(String, String)>> {
    let out = ns.run_stdout(&["ss", "-Hltn"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[3].to_string(), f[2].to_string()))
        })
        .collect())
}
